"""Optimizers for pretraining: parameter groups without weight decay on biases and norm parameters,
AdamW and LARS, and the linear learning-rate scaling rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from sslray.sections import check_range

MAX_BASE_LR = 1e8
MAX_WEIGHT_DECAY = 10.0


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "lars", "sgd"] = "adamw"  # LARS for large-batch ResNet SimCLR/BYOL, AdamW for ViTs
    base_lr: float = 1.5e-4  # lr for a batch of 256; scaled linearly with the global batch (Goyal et al. 2017)
    weight_decay: float = 0.05  # AdamW 0.05 (MAE, DINO); LARS 1e-6 (SimCLR) / 1.5e-6 (BYOL)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW (MAE uses 0.95 for beta2)
    sgd_momentum: float = 0.9  # heavy-ball momentum of SGD and LARS (SimCLR / BYOL papers)
    trust_coefficient: float = 0.001  # LARS eta (You et al. 2017; SimCLR, BYOL)

    def __post_init__(self) -> None:
        # Upper bounds only against typos and overflow (1e300 overflowed inside a worker instead of
        # failing here): an lr up to 1e8 still runs and, if it diverges, ends in the "diverged" stop
        # (tests/reliability/test_stops.py drives lrs of 1e4 and 1e8 there); weight decays reach ~0.3.
        check_range("optim.base_lr", self.base_lr, 0.0, MAX_BASE_LR, low_open=True)
        check_range("optim.weight_decay", self.weight_decay, 0.0, MAX_WEIGHT_DECAY)
        check_range("optim.betas[0]", self.betas[0], 0.0, 1.0, high_open=True)
        check_range("optim.betas[1]", self.betas[1], 0.0, 1.0, high_open=True)
        check_range("optim.sgd_momentum", self.sgd_momentum, 0.0, 1.0, high_open=True)
        check_range("optim.trust_coefficient", self.trust_coefficient, 0.0, None, low_open=True)


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """Linear scaling rule: lr = base_lr * global_batch / 256 (Goyal et al. 2017; SimCLR, BYOL, MAE)."""
    return base_lr * batch_size / 256


def _no_decay_names(model: nn.Module) -> set[str]:
    """Full names of parameters a submodule lists in ``no_weight_decay()`` (timm's convention, e.g. a
    ViT's position embedding and CLS token)."""
    names = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names.update(f"{prefix}.{name}" if prefix else name for name in listed())
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups of the trainable parameters: with weight decay, and without it for biases and
    normalisation parameters (every 1-D tensor) and timm's ``no_weight_decay`` names.

    The second group is also excluded from LARS adaptation (``lars_adapt=False``), as SimCLR and BYOL do.
    """
    skip = _no_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_adapt": True},
        {"params": no_decay, "weight_decay": 0.0, "lars_adapt": False},
    ]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as used by SimCLR and BYOL:

    g      = grad + weight_decay * w
    g      = g * trust_coefficient * ||w|| / ||g||     (groups with lars_adapt=True, when both norms > 0)
    buf    = momentum * buf + g
    w      = w - lr * buf
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, lars_adapt=True
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if group["lars_adapt"]:
                    param_norm, update_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = group["trust_coefficient"] * param_norm / update_norm
                    update.mul_(torch.where((param_norm > 0) & (update_norm > 0), trust, torch.ones_like(trust)))
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                p.add_(buffer, alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, batch_size: int) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names over ``param_groups(model)``, at lr = scaled_lr(base_lr, batch_size)."""
    lr = scaled_lr(cfg.base_lr, batch_size)
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.sgd_momentum, trust_coefficient=cfg.trust_coefficient)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.sgd_momentum)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (the train loop calls it with ``warmup_cosine(step, ...)``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
