"""Exponential moving average (EMA) of an online network: the target/teacher of BYOL, MoCo, DINO.

    target <- m * target + (1 - m) * online        (Grill et al. 2020, eq. 1; He et al. 2020, eq. 2)

Buffers (BatchNorm running statistics) are copied, not averaged, as in the MoCo and BYOL reference
code: the target's statistics then describe the same activations as the online network's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def build_target(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters get no gradient (the momentum target)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """EMA step ``t = m * t + (1 - m) * o`` over all parameters (one fused foreach call), then copy buffers.

    ``online`` and ``target`` must have the same structure (``target`` made by ``build_target``).
    """
    online_params = list(online.parameters())
    target_params = list(target.parameters())
    if len(online_params) != len(target_params):
        raise ValueError(f"online has {len(online_params)} parameters, target {len(target_params)}")
    if target_params:
        torch._foreach_mul_(target_params, m)
        torch._foreach_add_(target_params, online_params, alpha=1.0 - m)
    for online_buffer, target_buffer in zip(online.buffers(), target.buffers()):
        target_buffer.copy_(online_buffer)
