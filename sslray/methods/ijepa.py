"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture"), split like facebookresearch/mae ``models_mae.py``, computed as facebookresearch/ijepa's
``train.py`` does.

From one context block of an image, predict the representations of several target blocks of the same
image (sec. 3):

* masks: ``num_targets`` target blocks and one context block with the targets removed, per image
  (``sslray.nn.multiblock``);
* context encoder: the online ViT on the context patches only;
* target encoder: an EMA copy of the ViT on the whole image, no gradient; its patch features, layer-
  normed, are the targets at the target-block positions;
* predictor: a narrow ViT on the context tokens plus one mask token (with the target's position) per
  target patch, once per target block (``sslray.nn.vit.JEPAPredictor``);
* loss: smooth L1 (or MSE) between predictions and targets (``FeaturePredictionLoss``); the target
  encoder follows the context encoder by EMA, momentum 0.996 -> 1 (linear by default, App. A.1).

    forward_target(images)                       -> h [N, L, D]     (no gradient)
    forward_encoder(images, masks.context)       -> z [N, Kc, D]
    forward_predictor(z, masks)                  -> p [N, M, Kt, D]
    forward_loss(p, h, masks.targets)            -> scalar

``views[0]`` is the only view used: the paper needs no second augmented view (its views are one
random resized crop, the ``ijepa`` view recipe).

The backbone keeps its CLS token in both encoders (the official ViT has none): it is one more token
the patch tokens attend to, and keeping it makes the exported timm model compute exactly the features
``embed`` returns (see ``AvgPooledViT``). Neither the predictor nor the loss ever sees its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from sslray.errors import UserError
from sslray.losses.feature_prediction import FeaturePredictionLoss
from sslray.methods.base import MomentumSSLMethod, embedding_std
from sslray.nn.masked_vit import require_vit
from sslray.nn.momentum import build_target, update_momentum
from sslray.nn.multiblock import MultiBlockConfig, MultiBlockMasks, sample_multiblock_masks
from sslray.nn.schedules import linear_warmup
from sslray.nn.vit import BlockStackConfig, JEPAPredictor, ViTBackbone
from sslray.sections import check_range


@dataclass(frozen=True)
class IJEPAConfig:
    # Masks (App. A.1). On the 7x7 grid of 28 px / 4 px Fashion-MNIST: a target of scale 0.15-0.2 keeps
    # floor(49 s) = 7-9 patches, shaped 2x3, 3x2, 3x3, 4x2 or 4x3 by the aspect ratio (rounding); the
    # context is the whole 7x7 grid or a 6x6 block, minus the targets.
    num_targets: int = 4  # target blocks per image (App. A.1; 4 beat fewer in the paper's ablation, App. C)
    target_scale: tuple[float, float] = (0.15, 0.2)  # share of the grid per target block (App. A.1)
    target_aspect_ratio: tuple[float, float] = (0.75, 1.5)  # height / width of the target blocks (App. A.1)
    context_scale: tuple[float, float] = (0.85, 1.0)  # share of the grid of the context block, aspect 1 (App. A.1)
    min_context: int = 4  # a context with fewer patches is re-drawn (official collator's min_keep default)
    # Predictor: narrow in the paper (width 384 and depth 12 for the 1280-wide, 32-deep ViT-H/14, App.
    # A.1). For a ViT-tiny (192 wide) at 28 px: half the width, head width 32 as MAE's decoder here, and
    # 4 blocks, a CPU-sized choice (the predictor runs once per target block); sweep the depth.
    predictor_dim: int = 96
    predictor_depth: int = 4
    predictor_num_heads: int = 3
    # Target encoder EMA (App. A.1): 0.996, increased linearly to 1 over training.
    momentum: float = 0.996
    final_momentum: float = 1.0
    momentum_schedule: Literal["linear", "cosine"] = "linear"  # cosine: BYOL's schedule, as the other methods here
    loss: Literal["smooth_l1", "mse"] = "smooth_l1"  # official train.py: smooth L1; paper sec. 3 writes L2

    def __post_init__(self) -> None:
        check_range("method.num_targets", self.num_targets, 1, None)
        for name in ("target_scale", "context_scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise UserError(f"method.{name}: {[low, high]} is out of range; need 0 < min <= max <= 1")
        low, high = self.target_aspect_ratio
        if not 0 < low <= high:
            raise UserError(f"method.target_aspect_ratio: {[low, high]} is out of range; need 0 < min <= max")
        if self.num_targets * self.target_scale[0] >= 1:  # overlap aside, they would cover the image
            raise UserError(
                f"method.num_targets: {self.num_targets} targets of at least {self.target_scale[0]} of "
                f"the image (method.target_scale) leave no room for a context"
            )
        check_range("method.min_context", self.min_context, 1, None)
        check_range("method.predictor_dim", self.predictor_dim, 1, None)
        check_range("method.predictor_depth", self.predictor_depth, 1, None)
        check_range("method.predictor_num_heads", self.predictor_num_heads, 1, None)
        if self.predictor_dim % self.predictor_num_heads or self.predictor_dim % 4:
            raise UserError(
                f"method.predictor_dim: {self.predictor_dim} must be divisible by 4 (sin-cos position "
                f"embedding) and by method.predictor_num_heads ({self.predictor_num_heads})"
            )
        check_range("method.momentum", self.momentum, 0.0, 1.0)
        check_range("method.final_momentum", self.final_momentum, 0.0, 1.0)


def gather_tokens(tokens: Tensor, ids: Tensor) -> Tensor:
    """tokens [N, L, D], patch indices ids [N, *S] -> [N, *S, D] (row n picks from image n)."""
    rows = torch.arange(tokens.shape[0], device=tokens.device).view(-1, *[1] * (ids.ndim - 1))
    return tokens[rows, ids]


class AvgPooledViT(nn.Module):
    """A ``ViTBackbone``'s timm model read out as the mean of its patch tokens after the final norm:
    [N, C, H, W] -> [N, num_features].

    The same numbers as a plain ``timm VisionTransformer(..., global_pool="avg", fc_norm=False)`` with
    these weights (tested); the weights load into it, and into the default CLS-pooled one, with
    ``strict=True`` (``sslray export`` saves ``.vit``).
    """

    def __init__(self, backbone: ViTBackbone) -> None:
        super().__init__()
        self.vit = backbone.vit
        self.num_features = backbone.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.vit.forward_features(x)[:, self.vit.num_prefix_tokens :].mean(dim=1)


class IJEPA(MomentumSSLMethod):
    """I-JEPA on a ``ViTBackbone``: forward(views) -> loss, embed_std, context_patches, target_patches;
    on_step moves the target encoder by EMA."""

    needs_vit = True

    def __init__(self, backbone: nn.Module, cfg: IJEPAConfig | None = None):
        cfg = cfg or IJEPAConfig()
        super().__init__(require_vit(backbone, "ijepa"), cfg.momentum, cfg.final_momentum)
        self.cfg = cfg
        vit = self.backbone
        self.target_backbone = build_target(vit)
        self.predictor = JEPAPredictor(
            vit.num_features,
            vit.grid_size,
            BlockStackConfig(cfg.predictor_dim, cfg.predictor_depth, cfg.predictor_num_heads),
        )
        self.mask_cfg = MultiBlockConfig(
            cfg.num_targets, cfg.target_scale, cfg.target_aspect_ratio, cfg.context_scale, cfg.min_context
        )
        self.criterion = FeaturePredictionLoss(cfg.loss)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone)]

    def on_step(self, step: int, total_steps: int) -> dict[str, float]:
        if self.cfg.momentum_schedule == "cosine":
            return super().on_step(step, total_steps)
        # App. A.1 / official train.py: a straight line from momentum at step 0 to final_momentum at the end
        self.momentum = linear_warmup(step, total_steps, self.base_momentum, self.final_momentum)
        update_momentum(self.backbone, self.target_backbone, self.momentum)
        return {"momentum": self.momentum}

    def evaluation_backbone(self) -> nn.Module:
        # The paper evaluates the target encoder with its patch features average-pooled (App. A). There
        # is no CLS token in I-JEPA, and the one kept here is in no loss, so CLS pooling reads out a
        # token that learned nothing by itself; the mean of the patch tokens is what the loss shapes.
        return AvgPooledViT(self.target_backbone)

    def sample_masks(self, batch_size: int, generator: torch.Generator | None = None) -> MultiBlockMasks:
        """Multi-block masks for a batch on this backbone's patch grid (CPU ``generator``, or the global RNG)."""
        return sample_multiblock_masks(batch_size, self.backbone.grid_size, self.mask_cfg, generator)

    @torch.no_grad()
    def forward_target(self, images: Tensor) -> Tensor:
        """Target encoder on every patch -> [N, L, D] patch features after the final norm (CLS dropped)."""
        vit = self.target_backbone
        return vit.encode(vit.patchify_embed(images))[:, 1:]

    def forward_encoder(self, images: Tensor, context_ids: Tensor) -> Tensor:
        """Context encoder on the context patches [N, Kc] only -> [N, Kc, D] (CLS dropped)."""
        tokens = gather_tokens(self.backbone.patchify_embed(images), context_ids)
        return self.backbone.encode(tokens)[:, 1:]

    def forward_predictor(self, context: Tensor, masks: MultiBlockMasks) -> Tensor:
        return self.predictor(context, masks.context, masks.targets)

    def forward_loss(self, pred: Tensor, target_features: Tensor, target_ids: Tensor) -> Tensor:
        return self.criterion(pred, gather_tokens(target_features, target_ids))

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        images = views[0]
        masks = self.sample_masks(images.shape[0])
        masks = MultiBlockMasks(*(ids.to(images.device, non_blocking=True) for ids in masks))
        target_features = self.forward_target(images)
        pred = self.forward_predictor(self.forward_encoder(images, masks.context), masks)
        loss = self.forward_loss(pred, target_features, masks.targets)
        # embed_std of the target encoder's mean patch feature: the evaluation feature, computed anyway.
        # Patch counts per image (context) and per target block, as the official train.py logs them.
        return {
            "loss": loss,
            "embed_std": embedding_std(target_features.mean(dim=1)),
            "context_patches": torch.tensor(float(masks.context.shape[1])),
            "target_patches": torch.tensor(float(masks.targets.shape[2])),
        }
