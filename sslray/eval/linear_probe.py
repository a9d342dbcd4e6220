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
``train_epoch`` (with its ``Optimization``) and ``evaluate_batches`` are shared with fine-tuning
(``sslray.eval.finetune``).
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
    epochs: int = 40            # MAE probes 90 epochs on ImageNet (App. A.2); small datasets converge sooner
    batch_size: int = 512
    optimizer: str = "sgd"      # "sgd" | "lars" (MAE, SimCLR: large batches) | "adamw"
    base_lr: float = 0.1        # per 256 images, lr = base_lr * batch_size / 256 (MAE, SimCLR linear eval)
    weight_decay: float = 0.0   # MAE and SimCLR probe without weight decay
    momentum: float = 0.9       # SGD / LARS heavy-ball momentum
    warmup_epochs: int = 0      # linear warm-up before the cosine decay (MAE uses 10 of 90 at batch 16384)
    seed: int = 0               # head initialisation and, via feature_batches, the batch order

    def validate(self, where: str) -> None:
        """Raise a UserError naming the first bad field, its value and what is allowed."""
        check_range(f"{where}.epochs", self.epochs, 1, None)
        check_range(f"{where}.batch_size", self.batch_size, 1, None)
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"{where}.optimizer: {self.optimizer!r} is not allowed; choose one of "
                            f"{', '.join(OPTIMIZERS)}")
        check_range(f"{where}.base_lr", self.base_lr, 0.0, None, low_open=True)
        check_range(f"{where}.weight_decay", self.weight_decay, 0.0, None)
        check_range(f"{where}.momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range(f"{where}.warmup_epochs", self.warmup_epochs, 0, self.epochs)
        check_range(f"{where}.seed", self.seed, 0, None)


@dataclass(frozen=True)
class ProbeData:
    """What a probe trains on and is scored on."""
    train_batches: Batches              # epoch -> (features [B, D], labels [B]) batches, e.g. feature_batches
    num_features: int                   # D
    num_classes: int
    steps_per_epoch: int                # batches per epoch: the unit of the lr schedule
    val_features: Tensor | None = None  # [N_val, D], scored after every epoch (None: no val metrics)
    val_labels: Tensor | None = None    # [N_val]

    @classmethod
    def of_features(cls, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None, num_classes: int,
                    cfg: ProbeConfig) -> ProbeData:
        """Cached train features [N, D] and labels [N] in ``feature_batches`` of ``cfg.batch_size``
        (order seeded by ``cfg.seed``), scored on ``val`` (features, labels) after every epoch."""
        features, labels = train
        val_features, val_labels = val if val is not None else (None, None)
        return cls(feature_batches(features, labels, cfg.batch_size, cfg.seed), features.shape[1], num_classes,
                   math.ceil(len(labels) / cfg.batch_size), val_features, val_labels)


@dataclass
class ProbeResult:
    history: list[dict]               # one dict per epoch, see train_linear_probe
    head: LinearProbe
    val_predictions: Tensor | None    # [N_val] int64 class ids after the last epoch, None without val


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """For each k, how many rows of ``logits`` [N, C] rank their label [N] among the top min(k, C)."""
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # [N, k_max], best first
    hits = ranked == labels[:, None]
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


class ClassificationMeter:
    """Sample-weighted mean loss and top-1 / top-5 accuracy over the batches seen so far."""

    def __init__(self) -> None:
        self.count, self.loss_sum, self.correct = 0, 0.0, [0, 0]

    def update(self, mean_loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        n = labels.shape[0]
        self.count += n
        self.loss_sum += float(mean_loss) * n
        self.correct = [c + k for c, k in zip(self.correct, topk_correct(logits, labels))]

    def summary(self, prefix: str = "") -> dict[str, float]:
        """``{prefix + "loss", prefix + "top1", prefix + "top5"}``; NaN before any sample."""
        n = self.count or math.nan
        return {f"{prefix}loss": self.loss_sum / n, f"{prefix}top1": self.correct[0] / n,
                f"{prefix}top5": self.correct[1] / n}


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                     device: torch.device | str) -> dict:
    """Cross-entropy (no smoothing) and accuracies of ``model`` in eval mode over (inputs, labels) batches.

    Returns ``{"loss", "top1", "top5"}`` floats (top5 is top-min(5, C)), ``"predictions"`` [N] and
    ``"labels"`` [N] int64 on the CPU. Rows labelled < 0 (unlabelled images) get a prediction but do not
    count in the metrics. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    meter, predictions, all_labels = ClassificationMeter(), [], []
    for inputs, labels in batches:
        labels = labels.to(device).long()
        logits = model(inputs.to(device).float())
        labelled = labels >= 0
        if bool(labelled.any()):
            meter.update(F.cross_entropy(logits[labelled], labels[labelled]), logits[labelled], labels[labelled])
        predictions.append(logits.argmax(dim=1).cpu())
        all_labels.append(labels.cpu())
    model.train(was_training)
    if meter.count == 0:
        raise ValueError("nothing to evaluate: the batches hold no labelled samples")
    return {**meter.summary(), "predictions": torch.cat(predictions), "labels": torch.cat(all_labels)}


def evaluate_head(head: nn.Module, features: Tensor, labels: Tensor, batch_size: int = 4096) -> dict:
    """Loss, top-1, top-5 and predictions [N] of ``head`` on features [N, D] with labels [N] (no grad)."""
    device = next(head.parameters()).device
    stats = evaluate_batches(head, zip(features.split(batch_size), labels.split(batch_size)), device)
    del stats["labels"]
    return stats


def feature_batches(features: Tensor, labels: Tensor, batch_size: int,
                    seed: int) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """``epoch -> (features [b, D], labels [b])`` over every sample exactly once, in an order shuffled
    deterministically from (seed, epoch). Any [N, ...] tensor works (images [N, C, H, W] too).

    The epoch is cut into ceil(N / batch_size) batches of near-equal size (each <= batch_size) rather
    than full ones plus a remainder, so no batch is a lone sample that BatchNorm cannot normalise.
    """
    if features.dim() < 1 or labels.shape != features.shape[:1]:
        raise ValueError(f"need features [N, ...] and labels [N], got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    num_batches = max(1, math.ceil(features.shape[0] / batch_size))

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        # SeedSequence mixes (seed, epoch) without the collisions of seed * c + epoch.
        state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
        order = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(state))
        for index in order.tensor_split(num_batches):
            index = index.to(features.device)
            yield features[index], labels[index.to(labels.device)]

    return batches


@dataclass(frozen=True)
class Optimization:
    """How ``train_epoch`` takes an optimizer step."""
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]         # optimizer step -> lr, before each group's "lr_scale"
    device: torch.device | str = "cpu"    # where the model is; batches are moved there
    label_smoothing: float = 0.0          # of the cross-entropy (fine-tuning: 0.1, MAE App. A.1)


def train_epoch(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], optimization: Optimization,
                step: int) -> tuple[ClassificationMeter, int, float]:
    """One epoch of cross-entropy training on the labelled rows (label >= 0) of ``batches``; before
    optimizer step ``step`` every group gets ``lr_at(step) * group["lr_scale"]`` (1 when absent).
    Returns the epoch's running metrics, the next step and the last lr used."""
    optimizer, lr_at, device = optimization.optimizer, optimization.lr_at, optimization.device
    model.train()
    meter, lr = ClassificationMeter(), lr_at(step)
    for inputs, labels in batches:
        labelled = labels >= 0  # rows labelled < 0 are unlabelled images: nothing to learn from
        if not bool(labelled.all()):
            inputs, labels = inputs[labelled.to(inputs.device)], labels[labelled]
        if labels.shape[0] == 0:
            continue
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        labels = labels.to(device).long()
        # A batch generator that yields inside ``torch.no_grad()`` (natural when a frozen backbone computes
        # the features) leaves grad mode off while we hold its batch; the head still needs gradients.
        with torch.enable_grad():
            logits = model(inputs.to(device).float())
            loss = F.cross_entropy(logits, labels, label_smoothing=optimization.label_smoothing)
            if not torch.isfinite(loss):
                raise UserError(f"training diverged: the loss is {float(loss)} at step {step} (lr {lr:.3g}); "
                                f"lower base_lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        meter.update(loss.detach(), logits.detach(), labels)
        step += 1
    return meter, step, lr


def train_linear_probe(data: ProbeData, cfg: ProbeConfig, on_epoch: Callable[[dict], None] | None = None,
                       device: torch.device | str = "cpu") -> ProbeResult:
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
    head = LinearProbe(data.num_features, data.num_classes,
                       generator=torch.Generator().manual_seed(cfg.seed)).to(device)
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

    history, step, val = [], 0, None
    for epoch in range(cfg.epochs):
        meter, step, lr = train_epoch(head, data.train_batches(epoch), optimization, step)
        stats = {"epoch": epoch + 1, "lr": lr, **meter.summary("train_"),
                 "val_loss": None, "val_top1": None, "val_top5": None}
        if val_features is not None and val_labels is not None:
            val = evaluate_head(head, val_features, val_labels)
            stats.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"])
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return ProbeResult(history, head, val["predictions"] if val is not None else None)
