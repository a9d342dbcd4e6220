"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

One network (backbone + projector) and a predictor; the prediction of one view regresses the
projection of the other under stop-gradient. No negatives and no momentum encoder: the stop-gradient
alone prevents collapse (paper, sec. 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from sslray.losses.regression import NegativeCosineLoss
from sslray.methods.base import SSLMethod, check_views, embedding_std
from sslray.nn.heads import PredictionHead, ProjectionHead
from sslray.sections import check_range


@dataclass(frozen=True)
class SimSiamConfig:
    proj_hidden_dim: int = 2048  # projector: 3 layers, BN on every layer incl. the output (paper, sec. 3)
    proj_dim: int = 2048  # projector output = predictor input/output (paper, sec. 3)
    pred_hidden_dim: int = 512  # predictor bottleneck, 1/4 of proj_dim (paper, sec. 3)
    proj_layers: int = 3  # 2 for CIFAR-10 in the paper (appendix D)

    def __post_init__(self) -> None:
        check_range("method.proj_hidden_dim", self.proj_hidden_dim, 1, None)
        check_range("method.proj_dim", self.proj_dim, 1, None)
        check_range("method.pred_hidden_dim", self.pred_hidden_dim, 1, None)
        check_range("method.proj_layers", self.proj_layers, 1, None)


class SimSiam(SSLMethod):
    def __init__(self, backbone: nn.Module, cfg: SimSiamConfig | None = None):
        super().__init__(backbone)
        self.cfg = cfg = cfg or SimSiamConfig()
        self.projector = ProjectionHead(
            backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers, last_bn=True
        )
        self.predictor = PredictionHead(cfg.proj_dim, cfg.pred_hidden_dim, num_layers=2)
        self.criterion = NegativeCosineLoss()

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        check_views(views, 2, "SimSiam")
        features = [self.backbone(v) for v in views[:2]]
        projections = [self.projector(f) for f in features]
        predictions = [self.predictor(z) for z in projections]
        # L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2 (paper, eq. 2); the loss detaches z.
        loss = (self.criterion(predictions[0], projections[1]) + self.criterion(predictions[1], projections[0])) / 2
        return {"loss": loss, "embed_std": embedding_std(features[0])}
