"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning") and MoCo v3
(Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

Both contrast a query from the online encoder with a key from a momentum (EMA) copy of it. They
differ in one place, ``contrast``: MoCo v2 takes its negatives from a queue of past keys, MoCo v3 from
the other keys of the batch and adds a predictor and a symmetric loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from sslray.losses.infonce import InfoNCELoss, MemoryQueue
from sslray.methods.base import MomentumSSLMethod, check_views, embedding_std
from sslray.nn import dist
from sslray.nn.backbones import ResNetBackbone
from sslray.nn.heads import PredictionHead, ProjectionHead
from sslray.nn.momentum import build_target
from sslray.sections import check_range


@dataclass(frozen=True)
class MoCoV2Config:
    temperature: float = 0.2  # MoCo v2 paper, sec. 2 (0.07 in MoCo v1)
    momentum: float = 0.999  # EMA of the key encoder, constant (MoCo v1 paper, sec. 4.1)
    queue_size: int = 65536  # K negatives (MoCo v1 paper, sec. 4.1); keep it a multiple of the global batch
    proj_hidden_dim: int = 2048  # MLP head fc-ReLU-fc with a 2048-d hidden layer (MoCo v2 paper, sec. 2)
    proj_dim: int = 128  # output dim (MoCo v1/v2)
    # "shuffle": shuffled BN across ranks for the keys (MoCo v1, sec. 3.3); "sync": SyncBatchNorm everywhere
    bn_mode: Literal["shuffle", "sync", "none"] = "shuffle"
    # The paper contrasts view 0 -> view 1 only; True adds view 1 -> view 0 (2x the signal per batch).
    symmetric: bool = False

    def __post_init__(self) -> None:
        check_range("method.temperature", self.temperature, 0.0, None, low_open=True)
        check_range("method.momentum", self.momentum, 0.0, 1.0)
        check_range("method.queue_size", self.queue_size, 1, None)
        check_range("method.proj_hidden_dim", self.proj_hidden_dim, 1, None)
        check_range("method.proj_dim", self.proj_dim, 1, None)


@dataclass(frozen=True)
class MoCoV3Config:
    temperature: float | None = None  # None: 1.0 for ResNets, 0.2 for ViTs (moco-v3 reference code, --moco-t)
    momentum: float = 0.99  # base EMA, raised to final_momentum by a cosine schedule (MoCo v3 paper, sec. 4)
    final_momentum: float = 1.0  # end of the cosine momentum schedule
    proj_hidden_dim: int = 4096  # hidden width of projector and predictor (MoCo v3 paper, sec. 4)
    proj_dim: int = 256  # output dim of projector and predictor
    proj_layers: int | None = None  # None: 2 for ResNets, 3 for ViTs (moco-v3 builder)
    pred_layers: int = 2  # predictor depth (MoCo v3 paper, sec. 4)

    def __post_init__(self) -> None:
        if self.temperature is not None:
            check_range("method.temperature", self.temperature, 0.0, None, low_open=True)
        check_range("method.momentum", self.momentum, 0.0, 1.0)
        check_range("method.final_momentum", self.final_momentum, self.momentum, 1.0)
        check_range("method.proj_hidden_dim", self.proj_hidden_dim, 1, None)
        check_range("method.proj_dim", self.proj_dim, 1, None)
        if self.proj_layers is not None:
            check_range("method.proj_layers", self.proj_layers, 1, None)
        check_range("method.pred_layers", self.pred_layers, 1, None)


class _MoCo(MomentumSSLMethod):
    """Online backbone + projector (query encoder), their EMA copies (key encoder); subclasses
    implement ``contrast(views) -> (loss, pos_top1)``."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, momentum: float, final_momentum: float):
        super().__init__(backbone, momentum, final_momentum)
        self.projector = projector
        self.target_backbone = build_target(backbone)
        self.target_projector = build_target(projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        return self.target_projector(self.target_backbone(x))

    def contrast(self, views: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Return (loss, pos_top1, backbone features of view 0)."""
        raise NotImplementedError

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        check_views(views, 2, type(self).__name__)
        loss, pos_top1, features = self.contrast(views)
        return {"loss": loss, "pos_top1": pos_top1, "embed_std": embedding_std(features)}


class MoCoV2(_MoCo):
    def __init__(self, backbone: nn.Module, cfg: MoCoV2Config | None = None):
        cfg = cfg or MoCoV2Config()
        projector = ProjectionHead(
            backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, num_layers=2, hidden_bn=False
        )
        if cfg.bn_mode == "sync":
            backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
        super().__init__(backbone, projector, cfg.momentum, cfg.momentum)
        self.cfg = cfg
        self.criterion = InfoNCELoss(cfg.temperature)
        self.queue = MemoryQueue(cfg.proj_dim, cfg.queue_size)
        self.shuffle_calls = 0  # same count on every rank, so the BN shuffle is the same everywhere

    def shuffled_keys(self, x: Tensor) -> Tensor:
        """Keys computed on a batch shuffled across ranks, then put back in order (MoCo v1, sec. 3.3):
        the key encoder's BN statistics then come from other images than the query's, which stops the
        model from cheating through BN. On one process it is the plain key computation."""
        if self.cfg.bn_mode != "shuffle" or dist.world_size() == 1:
            return self.keys(x)
        n = x.shape[0]
        everything = dist.gather(x)
        generator = torch.Generator().manual_seed(self.shuffle_calls)
        self.shuffle_calls += 1
        order = torch.randperm(everything.shape[0], generator=generator).to(x.device)
        mine = slice(dist.rank() * n, (dist.rank() + 1) * n)
        shuffled_keys = dist.gather(self.keys(everything[order][mine]))
        return shuffled_keys[torch.argsort(order)][mine]

    def contrast(self, views: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        negatives = self.queue.negatives
        features = self.backbone(views[0])
        key = self.shuffled_keys(views[1])
        loss, pos_top1 = self.criterion(self.projector(features), key, negatives)
        new_keys = [key]
        if self.cfg.symmetric:
            swapped_key = self.shuffled_keys(views[0])
            swapped_loss, swapped_top1 = self.criterion(self.projector(self.backbone(views[1])), swapped_key, negatives)
            loss, pos_top1 = (loss + swapped_loss) / 2.0, (pos_top1 + swapped_top1) / 2.0
            new_keys.append(swapped_key)
        # Enqueue after the loss: this batch's keys must not be negatives of their own queries.
        for new_key in new_keys:
            self.queue.enqueue(dist.gather(new_key))
        return loss, pos_top1, features


class MoCoV3(_MoCo):
    def __init__(self, backbone: nn.Module, cfg: MoCoV3Config | None = None):
        cfg = cfg or MoCoV3Config()
        is_resnet = isinstance(backbone, ResNetBackbone)
        proj_layers = cfg.proj_layers or (2 if is_resnet else 3)
        # Hidden layers Linear-BN-ReLU, BN without affine after the output (moco-v3 _build_mlp).
        projector = ProjectionHead(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, proj_layers, last_bn=True)
        super().__init__(backbone, projector, cfg.momentum, cfg.final_momentum)
        self.cfg = cfg
        self.predictor = PredictionHead(cfg.proj_dim, cfg.proj_hidden_dim, cfg.pred_layers)
        self.temperature = cfg.temperature or (1.0 if is_resnet else 0.2)
        self.criterion = InfoNCELoss(self.temperature)

    def contrast(self, views: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        features = [self.backbone(v) for v in views[:2]]
        queries = [self.predictor(self.projector(f)) for f in features]
        keys = [self.keys(v) for v in views[:2]]
        loss_01, top1_01 = self.criterion(queries[0], keys[1])
        loss_10, top1_10 = self.criterion(queries[1], keys[0])
        # Symmetric loss, each term scaled by 2T as in the moco-v3 reference code (keeps the gradient
        # magnitude comparable across temperatures).
        loss = (loss_01 + loss_10) * 2.0 * self.temperature
        return loss, (top1_01 + top1_10) / 2.0, features[0]
