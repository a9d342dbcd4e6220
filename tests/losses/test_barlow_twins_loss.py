"""Barlow Twins' loss: the formula against a plain reference, the values it takes on embeddings whose
cross-correlation is known, dtypes, and the global batch across 2 gloo processes."""

import pytest
import torch
from torch import nn

from sslray.losses.barlow_twins import BarlowTwinsLoss, off_diagonal, off_diagonal_square_sum
from sslray.nn import dist
from tests.gloo import WORLD, on_two_ranks


def reference_loss(z0, z1, offdiag_weight):
    """Barlow Twins' Algorithm 1 as the paper's implementation runs it: each view standardised by an
    affine-free BatchNorm1d (training mode), C = z_hat0^T z_hat1 / N, on-diagonal + lambda off-diagonal."""
    n, d = z0.shape
    bn = nn.BatchNorm1d(d, affine=False).to(z0.dtype)
    c = bn(z0).T @ bn(z1) / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + offdiag_weight * off, on, off


def hadamard_columns(n: int, d: int) -> torch.Tensor:
    """[n, d] (n a power of 2, d < n): columns 1..d of a Sylvester Hadamard matrix. Each is +-1 with
    mean 0 and biased variance 1, and they are mutually orthogonal: a perfectly decorrelated,
    standardised batch."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h[:, 1 : d + 1]


def test_off_diagonal_selects_the_entries_off_the_diagonal():
    m = torch.arange(9.0).view(3, 3)
    assert off_diagonal(m).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]
    assert off_diagonal(torch.eye(5)).abs().sum() == 0 and off_diagonal(torch.eye(5)).numel() == 20
    with pytest.raises(ValueError, match="square"):
        off_diagonal(torch.ones(2, 3))


@pytest.mark.parametrize("n, d", [(10, 6), (3, 12)])  # 2N > D: the D x D product; 2N <= D: Gram matrices
def test_off_diagonal_square_sum_by_either_route_is_the_explicit_sum(n, d):
    torch.manual_seed(0)
    a = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    for x, y in ((a, b), (a, a)):
        product = x.T @ y
        explicit = sum(product[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
        ours = off_diagonal_square_sum(x, y)
        assert ours.item() == pytest.approx(explicit.item(), rel=1e-12)
        grads = torch.autograd.grad(ours, (a, b), allow_unused=True)
        expected = torch.autograd.grad(explicit, (a, b), allow_unused=True)
        for g, e in zip(grads, expected):
            assert (g is None and e is None) or torch.allclose(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n, d", [(10, 6), (4, 16)])
@pytest.mark.parametrize("offdiag_weight", [0.0, 5e-3, 1.0])
def test_matches_the_reference_formula(offdiag_weight, n, d):
    torch.manual_seed(0)
    z0 = torch.randn(n, d, dtype=torch.float64) * torch.rand(d, dtype=torch.float64) + 3
    z1 = z0 + 0.5 * torch.randn(n, d, dtype=torch.float64)
    loss, terms = BarlowTwinsLoss(offdiag_weight)(z0, z1)
    expected, on, off = reference_loss(z0, z1, offdiag_weight)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert terms["on_diagonal"].item() == pytest.approx(on.item(), rel=1e-10)
    assert terms["off_diagonal"].item() == pytest.approx(off.item(), rel=1e-10)
    assert loss.dtype == torch.float64


def test_zero_for_identical_decorrelated_standardised_embeddings():
    z = hadamard_columns(16, 8)
    loss, terms = BarlowTwinsLoss()(z, z.clone())
    # C = I / (1 + eps): only eps keeps the loss from being exactly 0.
    assert loss.item() == pytest.approx(8 * (1e-5 / (1 + 1e-5)) ** 2, abs=1e-15)
    assert terms["off_diagonal"].item() < 1e-30
    # Standardisation over the batch: a per-dimension scale and shift of either view changes nothing.
    # (Up to eps: scales >= 1 keep eps / var <= 1e-5.)
    scale, shift = torch.linspace(1, 10, 8, dtype=torch.float64), torch.linspace(-5, 5, 8, dtype=torch.float64)
    assert BarlowTwinsLoss()(z * scale + shift, z)[0].item() == pytest.approx(loss.item(), abs=1e-9)


def test_grows_with_the_off_diagonal_correlation():
    h = hadamard_columns(16, 8)
    losses = []
    for rho in (0.0, 0.3, 0.6, 0.9):
        z = h.clone()
        z[:, 1] = rho * h[:, 0] + (1 - rho**2) ** 0.5 * h[:, 1]  # still mean 0, variance 1; corr(z0, z1) = rho
        loss, terms = BarlowTwinsLoss(offdiag_weight=5e-3)(z, z.clone())
        assert terms["off_diagonal"].item() == pytest.approx(2 * rho**2, rel=1e-4, abs=1e-9)  # C_01 = C_10 = rho
        assert terms["on_diagonal"].item() < 1e-8
        losses.append(loss.item())
    assert losses == sorted(losses) and losses[-1] == pytest.approx(5e-3 * 2 * 0.81, rel=1e-4)


def test_diagonal_term_punishes_views_that_disagree():
    z = hadamard_columns(16, 8)
    _, opposite = BarlowTwinsLoss()(z, -z)
    assert opposite["on_diagonal"].item() == pytest.approx(4 * 8, rel=1e-4)  # C_ii = -1: (1 - (-1))^2 per dim
    # Collapsed embeddings (every row equal): z_hat = 0, C = 0, so each dimension costs (1 - 0)^2.
    collapsed = torch.ones(16, 8, requires_grad=True)
    loss, _ = BarlowTwinsLoss()(collapsed, collapsed)
    assert loss.item() == pytest.approx(8.0)
    loss.backward()
    assert torch.isfinite(collapsed.grad).all()


def test_gradients_reach_both_views():
    z0, z1 = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
    BarlowTwinsLoss()(z0, z1)[0].backward()
    assert z0.grad.abs().sum() > 0 and z1.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_get_float32_statistics(dtype):
    torch.manual_seed(0)
    z0, z1 = torch.randn(32, 16).to(dtype), torch.randn(32, 16).to(dtype)
    loss, _ = BarlowTwinsLoss()(z0, z1)
    assert loss.dtype == torch.float32
    # Exactly the float32 computation on the same (rounded) values.
    assert loss.item() == BarlowTwinsLoss()(z0.float(), z1.float())[0].item()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would run the matmul in bf16
        assert BarlowTwinsLoss()(z0.float(), z1.float())[0].item() == loss.item()


def test_fp16_does_not_overflow_on_a_fully_redundant_embedding():
    # Every dimension the same signal: C is all ones, and the D^2 - D squared off-diagonal entries
    # sum to 89,700 > 65,504 (fp16's largest value).
    d = 300
    z = torch.randn(32, 1).repeat(1, d).half()
    loss, terms = BarlowTwinsLoss(offdiag_weight=5e-3)(z, z)
    assert torch.isfinite(loss)
    assert terms["off_diagonal"].item() == pytest.approx(d * d - d, rel=1e-3)


def test_needs_two_samples_and_matching_shapes():
    with pytest.raises(ValueError, match="at least 2 samples"):
        BarlowTwinsLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="one shape"):
        BarlowTwinsLoss()(torch.randn(4, 4), torch.randn(4, 3))


# ------------------------------------------------------------------ the global batch over 2 ranks

N, D = 4, 6  # 2 x 4 gathered rows for 6 dimensions: the D x D cross-correlation


def rank_inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(200 + rank)
    z0 = torch.randn(N, D, generator=generator, dtype=torch.float64)
    return z0, z0 + 0.3 * torch.randn(N, D, generator=generator, dtype=torch.float64)


def worker(rank: int) -> dict:
    z0, z1 = (z.requires_grad_(True) for z in rank_inputs(rank))
    loss, _ = BarlowTwinsLoss(offdiag_weight=0.1)(z0, z1)
    loss.backward()
    return {"world": dist.world_size(), "loss": loss.detach(), "z0_grad": z0.grad, "z1_grad": z1.grad}


def test_two_ranks_compute_the_loss_of_the_concatenated_batch(tmp_path):
    results = on_two_ranks(worker, tmp_path)
    inputs = [rank_inputs(r) for r in range(WORLD)]
    z0 = torch.cat([z for z, _ in inputs]).requires_grad_(True)
    z1 = torch.cat([z for _, z in inputs]).requires_grad_(True)
    global_loss, _ = BarlowTwinsLoss(offdiag_weight=0.1)(z0, z1)
    global_loss.backward()
    for r, result in enumerate(results):
        assert result["world"] == WORLD
        # Every rank's loss is the global-batch loss (a batch statistic, not a mean of per-rank losses) ...
        assert result["loss"].item() == pytest.approx(global_loss.item(), rel=1e-10)
        # ... and the gather's backward sums every rank's gradient for these rows: WORLD times the global
        # gradient, which DDP's averaging over the WORLD ranks brings back to the global gradient.
        rows = slice(r * N, (r + 1) * N)
        assert torch.allclose(result["z0_grad"], WORLD * z0.grad[rows], rtol=1e-9, atol=1e-12)
        assert torch.allclose(result["z1_grad"], WORLD * z1.grad[rows], rtol=1e-9, atol=1e-12)
