"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two views of each image go through the backbone f and a projection MLP g; NT-Xent pulls the two
projections of an image together and pushes the other 2N - 2 views of the batch away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sslray.losses.infonce import NTXentLoss
from sslray.methods.base import SSLMethod, check_views, embedding_std
from sslray.nn.heads import ProjectionHead
from sslray.sections import check_range


@dataclass(frozen=True)
class SimCLRConfig:
    temperature: float = 0.5  # NT-Xent tau; 0.5 in the CIFAR-10 experiments (paper, appendix B.9), 0.1 on ImageNet
    proj_hidden_dim: int = 2048  # hidden width of g (paper, sec. 2.1 / B.9)
    proj_dim: int = 128  # output of g, where the loss is computed (paper, sec. 2.1)
    proj_layers: int = 2  # linear layers in g; SimCLR v2 uses 3

    def __post_init__(self) -> None:
        check_range("method.temperature", self.temperature, 0.0, None, low_open=True)
        check_range("method.proj_hidden_dim", self.proj_hidden_dim, 1, None)
        check_range("method.proj_dim", self.proj_dim, 1, None)
        check_range("method.proj_layers", self.proj_layers, 1, None)


class SimCLR(SSLMethod):
    def __init__(self, backbone: nn.Module, cfg: SimCLRConfig | None = None):
        super().__init__(backbone)
        self.cfg = cfg = cfg or SimCLRConfig()
        self.projector = ProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers)
        self.criterion = NTXentLoss(cfg.temperature)

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        check_views(views, 2, "SimCLR")
        x0, x1 = views[0], views[1]
        # Both views in one pass: BN statistics over all 2N views, as in the paper's (global) batch.
        features = self.backbone(torch.cat([x0, x1]))
        z0, z1 = self.projector(features).chunk(2)
        loss, pos_top1 = self.criterion(z0, z1)
        return {"loss": loss, "pos_top1": pos_top1, "embed_std": embedding_std(features[: x0.shape[0]])}
