"""Linear probing: a linear classifier trained on frozen features, the standard measure of how linearly
separable a self-supervised representation is (Zhang et al. 2016; SimCLR, MoCo, BYOL, DINO, MAE tables).

The head is MAE's (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", App. A.2):

    logits = W * BN(x) + b,   BN without affine parameters, eps = 1e-6,   W ~ trunc_normal(std=0.01)

Features of different methods differ in scale by orders of magnitude (MAE's are not normalised at all),
so one learning rate fits all only after the parameter-free BN; at inference BN is a fixed affine map
that folds into the linear layer, so the classifier is still linear in the features.

The training loop reads batches from a callable ``epoch -> iterator of (features [B, D], labels [B])``, so
the same loop trains on cached features (``feature_batches``) or on features a frozen backbone computes
every epoch from freshly augmented images (MoCo v3 and MAE probe with random-resized crops + flips).
The epochs (``train_epochs``) and the evaluation (``evaluate_batches``) live in
``sslray.eval.supervised``, shared with fine-tuning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sslray.errors import UserError
from sslray.eval.supervised import Optimization, evaluate_batches, train_epochs
from sslray.nn.optim import LARS, param_groups, scaled_lr
from sslray.nn.schedules import warmup_cosine
from sslray.sections import check_range

Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]  # epoch -> (inputs, labels) batches
OPTIMIZERS = ("sgd", "lars", "adamw")


class LinearProbe(nn.Module):
    """``BatchNorm1d(affine=False, eps=1e-6)`` then ``Linear``: [N, num_features] -> logits [N, num_classes].

    ``generator`` seeds the weight initialisation without touching torch's global RNG.
    """

    def __init__(self, num_features: int, num_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        # momentum=None keeps a cumulative average of the batch statistics instead of MAE's EMA (0.1):
        # frozen features are stationary, so it is the exact population estimate, whereas the EMA keeps
        # 0.9^n of its initial variance 1, which for features of variance 1e-3 still dominates after the
        # ~50 steps of a short probe on a small dataset (measured: val top-1 0.6 instead of 0.79).
        self.bn = nn.BatchNorm1d(num_features, affine=False, eps=1e-6, momentum=None)
        self.linear = nn.Linear(num_features, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01, generator=generator)  # MAE main_linprobe.py
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            # One sample has no batch statistics (BatchNorm1d raises); a trailing batch of one, as a
            # streamed epoch of N = k * B + 1 images ends, is normalised with the running ones instead.
            x = F.batch_norm(x, self.bn.running_mean, self.bn.running_var, training=False, eps=self.bn.eps)
            return self.linear(x)
        return self.linear(self.bn(x))


@dataclass
class ProbeConfig:
    epochs: int = 40  # MAE probes 90 epochs on ImageNet (App. A.2); small datasets converge sooner
    batch_size: int = 512
    optimizer: str = "sgd"  # "sgd" | "lars" (MAE, SimCLR: large batches) | "adamw"
    base_lr: float = 0.1  # per 256 images, lr = base_lr * batch_size / 256 (MAE, SimCLR linear eval)
    weight_decay: float = 0.0  # MAE and SimCLR probe without weight decay
    momentum: float = 0.9  # SGD / LARS heavy-ball momentum
    warmup_epochs: int = 0  # linear warm-up before the cosine decay (MAE uses 10 of 90 at batch 16384)
    seed: int = 0  # head initialisation and, via feature_batches, the batch order

    def validate(self, where: str) -> None:
        """Raise a UserError naming the first bad field, its value and what is allowed."""
        check_range(f"{where}.epochs", self.epochs, 1, None)
        check_range(f"{where}.batch_size", self.batch_size, 1, None)
        if self.optimizer not in OPTIMIZERS:
            raise UserError(
                f"{where}.optimizer: {self.optimizer!r} is not allowed; choose one of {', '.join(OPTIMIZERS)}"
            )
        check_range(f"{where}.base_lr", self.base_lr, 0.0, None, low_open=True)
        check_range(f"{where}.weight_decay", self.weight_decay, 0.0, None)
        check_range(f"{where}.momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range(f"{where}.warmup_epochs", self.warmup_epochs, 0, self.epochs)
        check_range(f"{where}.seed", self.seed, 0, None)


@dataclass(frozen=True)
class ProbeData:
    """What a probe trains on and is scored on."""

    train_batches: Batches  # epoch -> (features [B, D], labels [B]) batches, e.g. feature_batches
    num_features: int  # D
    num_classes: int
    steps_per_epoch: int  # batches per epoch: the unit of the lr schedule
    val_features: Tensor | None = None  # [N_val, D], scored after every epoch (None: no val metrics)
    val_labels: Tensor | None = None  # [N_val]

    @classmethod
    def of_features(
        cls, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None, num_classes: int, cfg: ProbeConfig
    ) -> ProbeData:
        """Cached train features [N, D] and labels [N] in ``feature_batches`` of ``cfg.batch_size``
        (order seeded by ``cfg.seed``), scored on ``val`` (features, labels) after every epoch."""
        features, labels = train
        val_features, val_labels = val if val is not None else (None, None)
        return cls(
            feature_batches(features, labels, cfg.batch_size, cfg.seed),
            features.shape[1],
            num_classes,
            math.ceil(len(labels) / cfg.batch_size),
            val_features,
            val_labels,
        )


@dataclass
class ProbeResult:
    history: list[dict]  # one dict per epoch, see train_linear_probe
    head: LinearProbe
    val_predictions: Tensor | None  # [N_val] int64 class ids after the last epoch, None without val


def evaluate_head(head: nn.Module, features: Tensor, labels: Tensor, batch_size: int = 4096) -> dict:
    """Loss, top-1, top-5 and predictions [N] of ``head`` on features [N, D] with labels [N] (no grad)."""
    device = next(head.parameters()).device
    stats = evaluate_batches(head, zip(features.split(batch_size), labels.split(batch_size)), device)
    del stats["labels"]
    return stats


def feature_batches(
    features: Tensor, labels: Tensor, batch_size: int, seed: int
) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """``epoch -> (features [b, D], labels [b])`` over every sample exactly once, in an order shuffled
    deterministically from (seed, epoch). Any [N, ...] tensor works (images [N, C, H, W] too).

    The epoch is cut into ceil(N / batch_size) batches of near-equal size (each <= batch_size) rather
    than full ones plus a remainder, so no batch is a lone sample that BatchNorm cannot normalise.
    """
    if features.dim() < 1 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"need features [N, ...] and labels [N], got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    num_batches = max(1, math.ceil(features.shape[0] / batch_size))

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        # SeedSequence mixes (seed, epoch) without the collisions of seed * c + epoch.
        state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
        order = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(state))
        for index in order.tensor_split(num_batches):
            index = index.to(features.device)
            yield features[index], labels[index.to(labels.device)]

    return batches


def train_linear_probe(
    data: ProbeData,
    cfg: ProbeConfig,
    on_epoch: Callable[[dict], None] | None = None,
    device: torch.device | str = "cpu",
) -> ProbeResult:
    """Train a ``LinearProbe`` on ``data.train_batches(epoch)`` for ``cfg.epochs`` epochs.

    The lr follows a per-step linear warm-up + cosine decay to 0 (``warmup_cosine``) with peak
    ``scaled_lr(cfg.base_lr, cfg.batch_size)`` over ``cfg.epochs * data.steps_per_epoch`` steps. After each
    epoch ``on_epoch`` gets that epoch's history dict: ``epoch`` (1-based), ``lr`` (the last step's),
    ``train_loss/top1/top5`` (running, over the epoch's batches, so they lag the head a little) and
    ``val_loss/top1/top5`` on ``data.val_features`` / ``data.val_labels`` (None without them).
    """
    cfg.validate("probe")
    steps_per_epoch, val_features, val_labels = data.steps_per_epoch, data.val_features, data.val_labels
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    head = LinearProbe(data.num_features, data.num_classes, generator=torch.Generator().manual_seed(cfg.seed)).to(
        device
    )
    groups = [g for g in param_groups(head, cfg.weight_decay) if g["params"]]
    peak = scaled_lr(cfg.base_lr, cfg.batch_size)
    if cfg.optimizer == "lars":
        optimizer = LARS(groups, lr=peak, momentum=cfg.momentum)
    elif cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=peak)
    else:
        optimizer = torch.optim.SGD(groups, lr=peak, momentum=cfg.momentum)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    optimization = Optimization(optimizer, lambda s: warmup_cosine(s, total, warmup, peak), device)

    has_val = val_features is not None and val_labels is not None
    validate = (lambda: evaluate_head(head, val_features, val_labels)) if has_val else None
    history, val = train_epochs(head, data.train_batches, optimization, cfg.epochs, validate, on_epoch)
    return ProbeResult(history, head, val["predictions"] if val is not None else None)
