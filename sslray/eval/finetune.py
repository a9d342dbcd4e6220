"""End-to-end fine-tuning: backbone + linear head trained together with labels, optionally on a
class-balanced fraction of them (the semi-supervised protocol).

The recipe is MAE's (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", App. A.1):
AdamW, lr = base_lr * batch_size / 256 with linear warm-up then cosine decay, weight decay 0.05 except
on biases / norms / position embedding / CLS token, label smoothing 0.1, and for ViTs layer-wise lr
decay (Clark et al. 2020 ELECTRA; BEiT, Bao et al. 2021): with L blocks, parameters of depth l get

    lr_scale(l) = layer_decay ** (L + 1 - l),   l = 0 patch embedding / CLS, l = i + 1 block i, L + 1 head

so the new head learns at the full rate and the pretrained early layers move least. Depths come from
timm's ``param_groups_layer_decay`` and the ViT's ``group_matcher``, which put the final norm with the
last block (MAE's own ``lr_decay.py`` gives it the head's scale 1.0; two vectors differ by one factor).

The label fractions 1% and 10% are the semi-supervised protocol of SimCLR (Chen et al. 2020, sec. 4.2:
subsets "sampled in a class-balanced way").
Mixup / CutMix / RandAugment of the ImageNet recipe are left to the data pipeline (none here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from timm.optim import param_groups_layer_decay
from torch import Tensor, nn

from sslray.eval.linear_probe import Batches
from sslray.eval.supervised import Optimization, evaluate_batches, train_epochs
from sslray.nn.optim import param_groups, scaled_lr
from sslray.nn.schedules import warmup_cosine
from sslray.sections import check_range


@dataclass
class FinetuneConfig:
    epochs: int = 20  # MAE: 100 (ViT-B) / 50 (ViT-L/H) on ImageNet; small datasets need fewer
    batch_size: int = 256
    base_lr: float = 1e-3  # AdamW lr per 256 images; MAE's released ViT-B recipe uses 5e-4 (FINETUNE.md)
    weight_decay: float = 0.05  # MAE App. A.1 (AdamW)
    layer_decay: float = 0.75  # ViT only: MAE App. A.1 (ViT-B, following BEiT); 1.0 turns it off
    warmup_epochs: int = 1  # MAE warms up 5 of 100 epochs
    label_smoothing: float = 0.1  # Szegedy et al. 2016; MAE App. A.1
    label_fraction: float = 1.0  # per class, applied by the caller via label_subset: 0.01 / 0.1 / 1.0 (SimCLR)
    seed: int = 0  # the label subset (and, by the caller, the batch order)

    def validate(self, where: str) -> None:
        """Raise a UserError naming the first bad field, its value and what is allowed."""
        check_range(f"{where}.epochs", self.epochs, 1, None)
        check_range(f"{where}.batch_size", self.batch_size, 1, None)
        check_range(f"{where}.base_lr", self.base_lr, 0.0, None, low_open=True)
        check_range(f"{where}.weight_decay", self.weight_decay, 0.0, None)
        check_range(f"{where}.layer_decay", self.layer_decay, 0.0, 1.0, low_open=True)
        check_range(f"{where}.warmup_epochs", self.warmup_epochs, 0, self.epochs)
        check_range(f"{where}.label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check_range(f"{where}.label_fraction", self.label_fraction, 0.0, 1.0, low_open=True)
        check_range(f"{where}.seed", self.seed, 0, None)


@dataclass(frozen=True)
class FinetuneData:
    """What fine-tuning trains on and is scored on."""

    train_batches: Batches  # epoch -> (images [B, C, H, W], labels [B]) batches
    steps_per_epoch: int  # batches per epoch: the unit of the lr schedule
    val_batches: Callable[[], Iterable[tuple[Tensor, Tensor]]] | None = None  # scored after every epoch


@dataclass
class FinetuneResult:
    history: list[dict]  # one dict per epoch, same keys as the linear probe's
    val_predictions: Tensor | None  # [N_val] int64 after the last epoch, None without val batches
    val_labels: Tensor | None  # [N_val] int64, in the same order


def label_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices [M] of a class-balanced subset of the labelled rows of ``labels`` [N].

    Each class c with n_c images keeps max(1, round(fraction * n_c)) of them (round half up), so even
    1% of a rare class leaves one example; negative labels (unlabelled images) are never chosen. The
    choice depends only on (labels, seed), and a smaller fraction picks a subset of a larger one (each
    class is shuffled once, then a prefix is kept), so the 1% images are among the 10% images.
    """
    check_range("label_fraction", fraction, 0.0, 1.0, low_open=True)
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels[labels >= 0]).tolist():  # sorted, so the draws are in a fixed order
        members = (labels == c).nonzero().squeeze(1)
        keep = max(1, int(fraction * len(members) + 0.5))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:keep]])
    if not chosen:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat(chosen).sort().values


class Classifier(nn.Module):
    """``backbone`` (any module with ``num_features``, [N, C, H, W] -> [N, num_features]) + linear head:
    images [N, C, H, W] -> logits [N, num_classes]."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = nn.Linear(backbone.num_features, num_classes)
        # Near-zero head (MAE main_finetune.py: trunc_normal std 2e-5): the first steps barely perturb
        # the pretrained features while the head's scale grows.
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def group_matcher(self, coarse: bool = False) -> dict:
        """A ViT backbone's timm ``group_matcher`` (regexes from parameter name to depth) re-rooted at this
        module, for timm's layer-wise lr decay: the head matches no pattern, so timm puts it deepest."""

        def rooted(pattern: str) -> str:  # timm applies re.match, so a leading "^" is redundant
            return rf"backbone\.vit\.(?:{pattern.removeprefix('^')})"

        matcher = self.backbone.vit.group_matcher(coarse=coarse)
        return {
            name: [(rooted(p), suffix) for p, suffix in spec]
            if isinstance(spec, (list, tuple))
            else None
            if spec is None
            else rooted(spec)
            for name, spec in matcher.items()
        }


def finetune_param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict]:
    """AdamW parameter groups, each with ``lr_scale`` and ``weight_decay``.

    A ViT backbone (one with a timm ``.vit``) gets timm's layer-wise decay (``param_groups_layer_decay``
    over ``model.group_matcher()``; the head at scale 1.0) and no weight decay on 1-D tensors and the
    ViT's ``no_weight_decay()`` names (position embedding, CLS token). Any other backbone gets
    ``sslray.nn.optim.param_groups`` with ``lr_scale`` 1.0 throughout.
    """
    vit = getattr(model.backbone, "vit", None)
    if vit is not None:
        groups = param_groups_layer_decay(
            model,
            weight_decay=cfg.weight_decay,
            layer_decay=cfg.layer_decay,
            no_weight_decay_list=[f"backbone.vit.{name}" for name in sorted(vit.no_weight_decay())],
        )
    else:
        groups = [
            {"params": g["params"], "weight_decay": g["weight_decay"], "lr_scale": 1.0}
            for g in param_groups(model, cfg.weight_decay)
        ]
    return [group for group in groups if group["params"]]


def finetune(
    model: Classifier,
    data: FinetuneData,
    cfg: FinetuneConfig,
    on_epoch: Callable[[dict], None] | None = None,
    device: torch.device | str = "cpu",
) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``data.train_batches(epoch)``.

    Per optimizer step, group g gets lr = warmup_cosine(step) * g["lr_scale"], peak
    ``scaled_lr(cfg.base_lr, cfg.batch_size)``, over ``cfg.epochs * data.steps_per_epoch`` steps. After each
    epoch ``on_epoch`` gets the history dict: ``epoch`` (1-based), ``lr`` (the head's, last step),
    ``train_loss/top1/top5`` (running over the epoch, with label smoothing in the loss) and
    ``val_loss/top1/top5`` over ``data.val_batches()`` (plain cross-entropy; None without val batches).
    Dropout / drop-path draw from torch's global RNG: seed it before calling for exact repeats.
    """
    cfg.validate("fine-tune")
    steps_per_epoch, val_batches = data.steps_per_epoch, data.val_batches
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    model.to(device)
    peak = scaled_lr(cfg.base_lr, cfg.batch_size)
    optimizer = torch.optim.AdamW(finetune_param_groups(model, cfg), lr=peak)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    optimization = Optimization(
        optimizer, lambda s: warmup_cosine(s, total, warmup, peak), device, label_smoothing=cfg.label_smoothing
    )

    validate = (lambda: evaluate_batches(model, val_batches(), device)) if val_batches is not None else None
    history, val = train_epochs(model, data.train_batches, optimization, cfg.epochs, validate, on_epoch)
    return FinetuneResult(history, val["predictions"] if val else None, val["labels"] if val else None)
