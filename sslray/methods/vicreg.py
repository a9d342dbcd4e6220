"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning").

Both views go through the same backbone and expander (the paper's name for the projector); the loss
pulls the two embeddings of an image together (invariance), keeps every embedding dimension's batch
std above 1 (variance) and decorrelates the dimensions (covariance). No negatives, no predictor, no
momentum encoder: the variance term alone prevents collapse (paper, sec. 3.1; without it, constant
embeddings minimise the other two terms).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from sslray.losses.vicreg import VICRegLoss
from sslray.methods.base import SSLMethod, check_views, embedding_std
from sslray.nn.heads import ProjectionHead
from sslray.sections import check_range


@dataclass(frozen=True)
class VICRegConfig:
    invariance_weight: float = 25.0  # lambda (paper, sec. 4.1, implementation details; app. D.4)
    variance_weight: float = 25.0  # mu (paper, sec. 4.1); 0 lets the embeddings collapse
    covariance_weight: float = 1.0  # nu (paper, sec. 4.1)
    proj_hidden_dim: int = 8192  # expander: 3 layers of 8192, BN + ReLU on the hidden ones (paper, sec. 4.1)
    proj_dim: int = 8192  # expander output, where the loss is computed
    proj_layers: int = 3

    def __post_init__(self) -> None:
        for name in ("invariance_weight", "variance_weight", "covariance_weight"):
            check_range(f"method.{name}", getattr(self, name), 0.0, None)
        check_range("method.proj_hidden_dim", self.proj_hidden_dim, 1, None)
        check_range("method.proj_dim", self.proj_dim, 2, None)  # a covariance needs 2 dimensions
        check_range("method.proj_layers", self.proj_layers, 1, None)


class VICReg(SSLMethod):
    def __init__(self, backbone: nn.Module, cfg: VICRegConfig | None = None):
        super().__init__(backbone)
        self.cfg = cfg = cfg or VICRegConfig()
        # The output layer keeps ProjectionHead's bias (the paper's has none): a shift shared by both
        # views changes no term of the loss, so that bias gets a zero gradient and stays at 0.
        self.projector = ProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers)
        self.criterion = VICRegLoss(cfg.invariance_weight, cfg.variance_weight, cfg.covariance_weight)

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        check_views(views, 2, "VICReg")
        # One backbone pass per view, as the paper's Algorithm 1: BN statistics per view.
        features = [self.backbone(v) for v in views[:2]]
        z0, z1 = (self.projector(f) for f in features)
        loss, terms = self.criterion(z0, z1)
        return {"loss": loss, **terms, "embed_std": embedding_std(features[0])}
