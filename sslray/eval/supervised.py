"""One epoch of supervised training on (inputs, labels) batches and its metrics, shared by the linear
probe (``sslray.eval.linear_probe``) and fine-tuning (``sslray.eval.finetune``): cross-entropy on the
labelled rows, a per-step learning rate, sample-weighted loss and top-1 / top-5 accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sslray.errors import UserError


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
        return {
            f"{prefix}loss": self.loss_sum / n,
            f"{prefix}top1": self.correct[0] / n,
            f"{prefix}top5": self.correct[1] / n,
        }


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device | str) -> dict:
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


@dataclass(frozen=True)
class Optimization:
    """How ``train_epoch`` takes an optimizer step."""

    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]  # optimizer step -> lr, before each group's "lr_scale"
    device: torch.device | str = "cpu"  # where the model is; batches are moved there
    label_smoothing: float = 0.0  # of the cross-entropy (fine-tuning: 0.1, MAE App. A.1)


def train_epoch(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], optimization: Optimization, step: int
) -> tuple[ClassificationMeter, int, float]:
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
                raise UserError(
                    f"training diverged: the loss is {float(loss)} at step {step} (lr {lr:.3g}); lower base_lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        meter.update(loss.detach(), logits.detach(), labels)
        step += 1
    return meter, step, lr


VAL_KEYS = ("val_loss", "val_top1", "val_top5")  # None in the history when there is nothing to validate on


def train_epochs(
    model: nn.Module,
    train_batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    optimization: Optimization,
    epochs: int,
    validate: Callable[[], dict] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[list[dict], dict | None]:
    """``epochs`` of ``train_epoch`` over ``train_batches(epoch)``; after each, ``validate()`` (a dict with
    ``loss``, ``top1``, ``top5``, as ``evaluate_batches`` returns) and ``on_epoch(stats)``. Returns the
    per-epoch history (``epoch``, ``lr``, ``train_loss/top1/top5``, ``val_loss/top1/top5`` or None) and
    the last validation's dict (None without ``validate``)."""
    history, val, step = [], None, 0
    for epoch in range(epochs):
        meter, step, lr = train_epoch(model, train_batches(epoch), optimization, step)
        stats = {"epoch": epoch + 1, "lr": lr, **meter.summary("train_"), **dict.fromkeys(VAL_KEYS)}
        if validate is not None:
            val = validate()
            stats.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"])
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history, val
