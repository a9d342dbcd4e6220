"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

The online network (backbone, projector, predictor) predicts the target network's projection of the
other view; the target is an EMA of the online backbone + projector and gets no gradient. No
negatives: the predictor and the slowly moving target avoid collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sslray.losses.regression import NormalizedMSELoss
from sslray.methods.base import MomentumSSLMethod, check_views, embedding_std
from sslray.nn.heads import PredictionHead, ProjectionHead
from sslray.nn.momentum import build_target
from sslray.sections import check_range


@dataclass(frozen=True)
class BYOLConfig:
    # Base EMA tau_base (paper, sec. 3.2); 0.99 works better with small batches (paper, app. F/J).
    momentum: float = 0.996
    final_momentum: float = 1.0  # tau rises to 1 with a cosine schedule (paper, sec. 3.2)
    proj_hidden_dim: int = 4096  # projector and predictor MLP: 4096 hidden, BN + ReLU (paper, sec. 3.3)
    proj_dim: int = 256  # output of projector and predictor (paper, sec. 3.3)
    pred_hidden_dim: int = 4096

    def __post_init__(self) -> None:
        check_range("method.momentum", self.momentum, 0.0, 1.0)
        check_range("method.final_momentum", self.final_momentum, self.momentum, 1.0)
        check_range("method.proj_hidden_dim", self.proj_hidden_dim, 1, None)
        check_range("method.proj_dim", self.proj_dim, 1, None)
        check_range("method.pred_hidden_dim", self.pred_hidden_dim, 1, None)


class BYOL(MomentumSSLMethod):
    def __init__(self, backbone: nn.Module, cfg: BYOLConfig | None = None):
        cfg = cfg or BYOLConfig()
        super().__init__(backbone, cfg.momentum, cfg.final_momentum)
        self.cfg = cfg
        self.projector = ProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, num_layers=2)
        self.predictor = PredictionHead(cfg.proj_dim, cfg.pred_hidden_dim, num_layers=2)
        self.target_backbone = build_target(self.backbone)
        self.target_projector = build_target(self.projector)
        self.criterion = NormalizedMSELoss()

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        check_views(views, 2, "BYOL")
        features = [self.backbone(v) for v in views[:2]]
        predictions = [self.predictor(self.projector(f)) for f in features]
        with torch.no_grad():
            targets = [self.target_projector(self.target_backbone(v)) for v in views[:2]]
        # Symmetrised: each view predicts the other's target (paper, eq. 2 and the text after it).
        loss = self.criterion(predictions[0], targets[1]) + self.criterion(predictions[1], targets[0])
        return {"loss": loss, "embed_std": embedding_std(features[0])}
