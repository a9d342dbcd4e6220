"""The interface every self-supervised method implements, and the EMA-target variant shared by
MoCo, BYOL and DINO.

The train loop only ever calls:

* ``forward(views) -> dict``: ``views`` is a list of float, normalised [N, C, H, W] tensors, global
  crops first, then local crops. The dict holds ``"loss"`` (to backpropagate) and detached scalars to
  log under the shared metric names (``pos_top1``, ``embed_std``, ...).
* ``on_step(step, total_steps) -> dict[str, float]``: after each optimizer step; sets scheduled values
  (momentum, teacher temperature), updates target networks and returns the scheduled values to log.
* ``embed(images) -> [N, num_features]``: backbone features for kNN / linear evaluation.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sslray.nn.momentum import update_momentum
from sslray.nn.schedules import cosine_schedule


class SSLMethod(nn.Module):
    """Base class: a backbone (with ``num_features``) plus whatever the method trains on top of it."""

    # True for methods that encode a subset of patch tokens (MAE, MACRL): only a ViT backbone can.
    # Recipes are checked against it before any Ray worker starts.
    needs_vit: ClassVar[bool] = False

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(views)")

    def on_step(self, step: int, total_steps: int) -> dict[str, float]:
        return {}

    def evaluation_backbone(self) -> nn.Module:
        """The network ``embed`` uses: the online backbone, unless a method evaluates another one."""
        return self.backbone

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Backbone features [N, num_features] in eval mode (BN running statistics), without gradient."""
        backbone = self.evaluation_backbone()
        was_training = backbone.training
        backbone.eval()
        try:
            return backbone(images)
        finally:
            backbone.train(was_training)


class MomentumSSLMethod(SSLMethod):
    """A method with EMA target networks whose momentum follows a cosine schedule from ``momentum`` to
    ``final_momentum`` (BYOL, Grill et al. 2020, sec. 3.2; constant when both are equal, as in MoCo v2).

    Subclasses list their (online, target) module pairs in ``momentum_pairs``.
    """

    def __init__(self, backbone: nn.Module, momentum: float, final_momentum: float):
        super().__init__(backbone)
        self.momentum = momentum
        self.base_momentum = momentum
        self.final_momentum = final_momentum

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        raise NotImplementedError(f"{type(self).__name__} must list its (online, target) pairs")

    def on_step(self, step: int, total_steps: int) -> dict[str, float]:
        self.momentum = cosine_schedule(step, total_steps, self.base_momentum, self.final_momentum)
        for online, target in self.momentum_pairs():
            update_momentum(online, target, self.momentum)
        return {"momentum": self.momentum}


def check_views(views: list[Tensor], minimum: int, method: str) -> None:
    """Raise a ValueError when a method gets fewer views than its loss needs."""
    if len(views) < minimum:
        raise ValueError(
            f"{method} needs at least {minimum} views per image, got {len(views)}; "
            f"check the view recipe of the data pipeline"
        )


@torch.no_grad()
def embedding_std(features: Tensor) -> Tensor:
    """Mean over dimensions of the batch std of L2-normalised features (SimSiam, Chen & He 2021,
    sec. 4.1): about 1/sqrt(D) for well-spread embeddings, 0 when they collapse to one point."""
    return F.normalize(features.detach().float(), dim=1).std(dim=0).mean()
