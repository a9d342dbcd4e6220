"""Gathers and means across 2 CPU processes (gloo): values, and gradients flowing back to each rank's inputs."""

import torch

from sslray.losses.infonce import NTXentLoss
from sslray.nn import dist
from tests.gloo import WORLD, on_two_ranks

N, D = 3, 5


def rank_inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(N, D, generator=generator)
    z0, z1 = torch.randn(2, N, D, generator=generator)
    return x, z0, z1


def worker(rank: int) -> dict:
    x, z0, z1 = rank_inputs(rank)
    x.requires_grad_(True)
    gathered = dist.gather_with_grad(x)
    # Rank r weighs the gathered rows by (r + 1): the gradient reaching rank r's own rows must be the
    # sum of both ranks' weights, 1 + 2 = 3.
    (gathered.sum() * (rank + 1)).backward()
    no_grad = dist.gather(x)
    # The same in bf16, as activations arrive under autocast on GPUs (NCCL) and CPUs (gloo).
    x_bf16 = x.detach().bfloat16().requires_grad_(True)
    gathered_bf16 = dist.gather_with_grad(x_bf16)
    (gathered_bf16.float().sum() * (rank + 1)).backward()

    z0.requires_grad_(True)
    z1.requires_grad_(True)
    loss, pos_top1 = NTXentLoss(temperature=0.5)(z0, z1)
    loss.backward()
    # Rank 1's loss is NaN: the mean over ranks must show it on rank 0 too (both stop at that step).
    losses = (
        dist.mean_over_ranks(torch.tensor([float(rank + 1)])),
        dist.mean_over_ranks(torch.tensor([float("nan") if rank == 1 else 1.0])),
    )
    return {
        "world": dist.world_size(),
        "rank": dist.rank(),
        "gathered": gathered.detach(),
        "mean": losses[0],
        "nan_mean": losses[1],
        "no_grad_requires_grad": no_grad.requires_grad,
        "x_grad": x.grad,
        "loss": loss.detach(),
        "z0_grad": z0.grad,
        "z1_grad": z1.grad,
        "gathered_bf16": gathered_bf16.detach(),
        "x_bf16_grad": x_bf16.grad,
    }


def test_single_process_fallback():
    x = torch.randn(4, 2, requires_grad=True)
    assert dist.world_size() == 1 and dist.rank() == 0
    assert dist.gather(x) is x and dist.gather_with_grad(x) is x and dist.mean_over_ranks(x) is x


def test_gathers_across_two_processes(tmp_path):
    results = on_two_ranks(worker, tmp_path)
    inputs = [rank_inputs(r) for r in range(WORLD)]
    x_all = torch.cat([x for x, _, _ in inputs])
    for r, result in enumerate(results):
        assert (result["world"], result["rank"]) == (WORLD, r)
        assert torch.equal(result["gathered"], x_all)
        assert not result["no_grad_requires_grad"]
        assert torch.allclose(result["x_grad"], torch.full((N, D), 3.0))
        assert result["gathered_bf16"].dtype == torch.bfloat16 and torch.equal(
            result["gathered_bf16"], x_all.bfloat16()
        )
        assert torch.equal(result["x_bf16_grad"], torch.full((N, D), 3.0, dtype=torch.bfloat16))
        assert result["mean"].item() == 1.5 and torch.isnan(result["nan_mean"]).all()

    # NT-Xent over 2 ranks = NT-Xent over the concatenated batch on one process: the mean of the rank
    # losses equals the global loss, and each rank's input gradient (summed over both ranks' losses by
    # the gather's backward) is WORLD times the global loss's gradient for those rows.
    z0 = torch.cat([z for _, z, _ in inputs]).requires_grad_(True)
    z1 = torch.cat([z for _, _, z in inputs]).requires_grad_(True)
    global_loss, _ = NTXentLoss(temperature=0.5)(z0, z1)
    global_loss.backward()
    assert torch.allclose(torch.stack([r["loss"] for r in results]).mean(), global_loss.detach(), atol=1e-6)
    for r, result in enumerate(results):
        rows = slice(r * N, (r + 1) * N)
        assert torch.allclose(result["z0_grad"], WORLD * z0.grad[rows], atol=1e-6)
        assert torch.allclose(result["z1_grad"], WORLD * z1.grad[rows], atol=1e-6)
