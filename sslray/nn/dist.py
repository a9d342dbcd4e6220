"""The one place sslray calls ``torch.distributed``: rank / world size, all-gathers and all-reduces.

Without an initialised process group (one CPU, unit tests) the world size is 1, the rank 0, and the
gathers return their input, so losses written with these helpers run unchanged on one process.
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch import Tensor


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch_dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` [N, ...] from every rank along dim 0 -> [world_size * N, ...], without gradient.

    Every rank must pass a tensor of the same shape. Rank r's rows are at [r * N, (r + 1) * N).
    """
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    torch_dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def gather_with_grad(x: Tensor) -> Tensor:
    """Like ``gather`` but differentiable: the gradient of every rank's loss with respect to the
    gathered rows flows back to the rank that owns them (``torch.distributed.nn.functional.all_gather``
    sums the incoming gradients across ranks in its backward).
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def mean_over_ranks(x: Tensor) -> Tensor:
    """The mean of ``x`` over every rank, on every rank (a new tensor); ``x`` itself when alone."""
    if world_size() == 1:
        return x
    total = x.detach().clone()
    torch_dist.all_reduce(total)
    return total / world_size()


def broadcast_object(value, source: int = 0):
    """``value`` as rank ``source`` has it, on every rank (any picklable object); itself when alone."""
    if world_size() == 1:
        return value
    box = [value]
    torch_dist.broadcast_object_list(box, src=source)
    return box[0]
