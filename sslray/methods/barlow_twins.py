"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction").

Both views go through the same backbone and projector; the loss drives the cross-correlation matrix
of the two batches of embeddings, each standardised over the batch, towards the identity: diagonal
1 (invariance to the augmentations), off-diagonal 0 (no redundancy between dimensions). No negatives,
no predictor, no momentum encoder (paper, sec. 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from sslray.losses.barlow_twins import BarlowTwinsLoss
from sslray.methods.base import SSLMethod, check_views, embedding_std
from sslray.nn.heads import ProjectionHead
from sslray.sections import check_range


@dataclass(frozen=True)
class BarlowTwinsConfig:
    offdiag_weight: float = 5e-3  # lambda, the off-diagonal (redundancy reduction) weight (paper, sec. 2.2)
    proj_hidden_dim: int = 8192  # projector: 3 linear layers of 8192, BN + ReLU after the first two (sec. 2.2)
    proj_dim: int = 8192  # projector output, where the cross-correlation is computed; wider is better (sec. 4)
    proj_layers: int = 3

    def __post_init__(self) -> None:
        check_range("method.offdiag_weight", self.offdiag_weight, 0.0, None)
        check_range("method.proj_hidden_dim", self.proj_hidden_dim, 1, None)
        check_range("method.proj_dim", self.proj_dim, 2, None)  # off-diagonal entries need 2 dimensions
        check_range("method.proj_layers", self.proj_layers, 1, None)


class BarlowTwins(SSLMethod):
    def __init__(self, backbone: nn.Module, cfg: BarlowTwinsConfig | None = None):
        super().__init__(backbone)
        self.cfg = cfg = cfg or BarlowTwinsConfig()
        # The output layer keeps ProjectionHead's bias (the paper's has none): the loss standardises
        # each dimension over the batch, so that bias gets a zero gradient and stays at 0.
        self.projector = ProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers)
        self.criterion = BarlowTwinsLoss(cfg.offdiag_weight)

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        check_views(views, 2, "Barlow Twins")
        # One backbone pass per view, as the paper's Algorithm 1: BN statistics per view.
        features = [self.backbone(v) for v in views[:2]]
        z0, z1 = (self.projector(f) for f in features)
        loss, terms = self.criterion(z0, z1)
        return {"loss": loss, **terms, "embed_std": embedding_std(features[0])}
