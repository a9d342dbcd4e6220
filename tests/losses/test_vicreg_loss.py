"""VICReg's loss: Algorithm 1 of the paper as the reference, each term on embeddings whose value is
known, dtypes, and the global batch across 2 gloo processes."""

import math

import pytest
import torch
from torch.nn import functional as F

from sslray.losses.vicreg import VICRegLoss
from sslray.nn import dist
from tests.gloo import WORLD, on_two_ranks

EPS = 1e-4


def algorithm_1(z_a, z_b, lam=25.0, mu=25.0, nu=1.0):
    """VICReg's Algorithm 1 (PyTorch pseudo-code in the paper), line by line, off-diagonal by loops."""
    n, d = z_a.shape
    sim_loss = F.mse_loss(z_a, z_b)
    std_z_a = torch.sqrt(z_a.var(dim=0) + EPS)
    std_z_b = torch.sqrt(z_b.var(dim=0) + EPS)
    std_loss = torch.mean(F.relu(1 - std_z_a)) + torch.mean(F.relu(1 - std_z_b))
    z_a = z_a - z_a.mean(dim=0)
    z_b = z_b - z_b.mean(dim=0)
    cov_z_a = (z_a.T @ z_a) / (n - 1)
    cov_z_b = (z_b.T @ z_b) / (n - 1)
    off = lambda c: sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)  # noqa: E731
    cov_loss = off(cov_z_a) / d + off(cov_z_b) / d
    return lam * sim_loss + mu * std_loss + nu * cov_loss, sim_loss, std_loss, cov_loss


def decorrelated(n: int, d: int, std: float) -> torch.Tensor:
    """[n, d] (n a power of 2, d < n): Hadamard columns 1..d scaled to an unbiased std of ``std``:
    zero mean, and exactly zero covariance between dimensions."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h[:, 1 : d + 1] * std * math.sqrt((n - 1) / n)


@pytest.mark.parametrize("n, d", [(12, 7), (5, 16)])  # 2N > D: the D x D covariance; 2N <= D: Gram route
@pytest.mark.parametrize(
    "weights", [(25.0, 25.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (5.0, 10.0, 2.0)]
)
def test_matches_algorithm_1(weights, n, d):
    torch.manual_seed(0)
    z0 = torch.randn(n, d, dtype=torch.float64) * torch.linspace(0.2, 2.0, d, dtype=torch.float64)
    z1 = z0 @ torch.randn(d, d, dtype=torch.float64) * 0.3 + 0.1 * torch.randn(n, d, dtype=torch.float64)
    loss, terms = VICRegLoss(*weights)(z0, z1)
    expected, sim, std, cov = algorithm_1(z0, z1, *weights)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert [terms[k].item() for k in ("invariance", "variance", "covariance")] == pytest.approx(
        [sim.item(), std.item(), cov.item()], rel=1e-10
    )
    assert loss.dtype == torch.float64


def test_invariance_term_is_the_mse():
    torch.manual_seed(0)
    z0, z1 = torch.randn(8, 5), torch.randn(8, 5)
    _, terms = VICRegLoss()(z0, z1)
    assert terms["invariance"].item() == pytest.approx(((z0 - z1) ** 2).mean().item(), rel=1e-6)
    assert VICRegLoss()(z0, z0.clone())[1]["invariance"].item() == 0.0


def test_variance_term_is_zero_once_every_std_reaches_gamma_and_positive_below():
    loss = VICRegLoss()
    wide = decorrelated(16, 8, std=1.5)
    assert loss.variance(wide).item() == 0.0
    assert loss.variance(decorrelated(16, 8, std=1.0)).item() == 0.0  # sqrt(1 + eps) > 1
    # Half the dimensions at std 0.5: each of those costs 1 - sqrt(0.25 + eps), the mean halves it.
    half = wide.clone()
    half[:, :4] = decorrelated(16, 8, std=0.5)[:, :4]
    assert loss.variance(half).item() == pytest.approx((1 - math.sqrt(0.25 + EPS)) / 2, rel=1e-10)
    assert loss.variance(half).item() > 0


def test_collapsed_embeddings_cost_only_the_variance_term():
    collapsed = torch.ones(16, 8, requires_grad=True)
    loss, terms = VICRegLoss()(collapsed, collapsed)
    assert terms["invariance"].item() == 0.0 and terms["covariance"].item() == 0.0
    assert terms["variance"].item() == pytest.approx(2 * (1 - math.sqrt(EPS)), rel=1e-6)  # 1.98
    assert loss.item() == pytest.approx(25 * 2 * (1 - math.sqrt(EPS)), rel=1e-6)
    loss.backward()  # eps keeps d sqrt(var)/d var finite at zero variance
    assert torch.isfinite(collapsed.grad).all()


def test_covariance_term_is_zero_for_decorrelated_and_known_for_redundant_dimensions():
    assert VICRegLoss.covariance(decorrelated(16, 8, std=2.0)).item() == pytest.approx(0.0, abs=1e-28)
    # Every dimension the same signal with unbiased variance v: every covariance entry is v, so
    # c(Z) = (D^2 - D) v^2 / D = (D - 1) v^2.
    torch.manual_seed(0)
    x = torch.randn(32, 1, dtype=torch.float64)
    v = x.var().item()
    assert VICRegLoss.covariance(x.repeat(1, 6)).item() == pytest.approx(5 * v**2, rel=1e-10)


def test_gradients_reach_both_views():
    z0, z1 = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
    VICRegLoss()(z0, z1)[0].backward()
    assert z0.grad.abs().sum() > 0 and z1.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_get_float32_statistics(dtype):
    torch.manual_seed(0)
    z0, z1 = torch.randn(32, 16).to(dtype), torch.randn(32, 16).to(dtype)
    loss, _ = VICRegLoss()(z0, z1)
    assert loss.dtype == torch.float32
    assert loss.item() == VICRegLoss()(z0.float(), z1.float())[0].item()  # the float32 computation
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would run the covariance in bf16
        assert VICRegLoss()(z0.float(), z1.float())[0].item() == loss.item()


def test_fp16_does_not_overflow_on_a_fully_redundant_embedding():
    # 300 copies of one signal with std ~2: the squared covariances sum to (D^2 - D) v^2 ~ 1.4e6 before
    # the division by D, far past fp16's largest value (65,504).
    torch.manual_seed(0)
    x = 2 * torch.randn(64, 1)
    z = x.repeat(1, 300).half()
    _, terms = VICRegLoss()(z, z)
    v = z[:, 0].float().var().item()
    assert torch.isfinite(terms["covariance"])
    assert terms["covariance"].item() == pytest.approx(2 * 299 * v**2, rel=1e-3)


def test_rejects_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="variance_weight must be >= 0"):
        VICRegLoss(variance_weight=-1)
    with pytest.raises(ValueError, match="eps must be > 0"):
        VICRegLoss(eps=0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        VICRegLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="one shape"):
        VICRegLoss()(torch.randn(4, 4), torch.randn(4, 3))


# ------------------------------------------------------------------ the global batch over 2 ranks

N, D = 4, 16  # 2 x 4 gathered rows for 16 dimensions: the Gram route of the covariance


def rank_inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(300 + rank)
    z0 = 0.7 * torch.randn(N, D, generator=generator, dtype=torch.float64)  # std < 1: the hinge is active
    return z0, z0 + 0.3 * torch.randn(N, D, generator=generator, dtype=torch.float64)


def worker(rank: int) -> dict:
    z0, z1 = (z.requires_grad_(True) for z in rank_inputs(rank))
    loss, terms = VICRegLoss()(z0, z1)
    loss.backward()
    return {
        "world": dist.world_size(),
        "loss": loss.detach(),
        "variance": terms["variance"],
        "z0_grad": z0.grad,
        "z1_grad": z1.grad,
    }


def test_two_ranks_compute_the_loss_of_the_concatenated_batch(tmp_path):
    results = on_two_ranks(worker, tmp_path)
    inputs = [rank_inputs(r) for r in range(WORLD)]
    z0 = torch.cat([z for z, _ in inputs]).requires_grad_(True)
    z1 = torch.cat([z for _, z in inputs]).requires_grad_(True)
    global_loss, global_terms = VICRegLoss()(z0, z1)
    global_loss.backward()
    assert global_terms["variance"].item() > 0
    for r, result in enumerate(results):
        assert result["world"] == WORLD
        # The variance and covariance are those of the global batch, not of this rank's 4 rows ...
        assert result["variance"].item() == pytest.approx(global_terms["variance"].item(), rel=1e-10)
        assert result["loss"].item() == pytest.approx(global_loss.item(), rel=1e-10)
        # ... and the gather's backward sums every rank's gradient for these rows: WORLD times the global
        # gradient, which DDP's averaging over the WORLD ranks brings back to the global gradient.
        rows = slice(r * N, (r + 1) * N)
        assert torch.allclose(result["z0_grad"], WORLD * z0.grad[rows], rtol=1e-9, atol=1e-12)
        assert torch.allclose(result["z1_grad"], WORLD * z1.grad[rows], rtol=1e-9, atol=1e-12)
