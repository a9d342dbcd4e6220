"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

A student (backbone + DINO head) matches the output distribution of a teacher, an EMA of the student.
The teacher sees only the global crops, the student all crops (multi-crop); the teacher's output is
centred and sharpened to avoid collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sslray.losses.dino import DINOLoss
from sslray.methods.base import MomentumSSLMethod, check_views, embedding_std
from sslray.nn.heads import DINOHead, DINOHeadConfig
from sslray.nn.momentum import build_target
from sslray.nn.schedules import linear_warmup
from sslray.sections import check_range


@dataclass(frozen=True)
class DINOConfig:
    temperature: float = 0.07  # teacher temperature after warm-up (paper, sec. 3.1 / appendix)
    warmup_temperature: float = 0.04  # teacher temperature at step 0, raised linearly (paper, appendix)
    temperature_warmup_fraction: float = 0.3  # share of training spent warming up: 30 of 100 epochs (reference code)
    student_temperature: float = 0.1  # T_s (paper, sec. 3.1)
    momentum: float = 0.996  # teacher EMA, cosine schedule to final_momentum (paper, sec. 3.1)
    final_momentum: float = 1.0
    center_momentum: float = 0.9  # EMA rate m of the centre (paper, alg. 1)
    out_dim: int = 65536  # K prototypes of the head's last layer (paper, sec. 3.1)
    head_hidden_dim: int = 2048  # 3-layer MLP, hidden 2048 (paper, appendix)
    head_bottleneck_dim: int = 256  # L2-normalised bottleneck before the last layer (paper, appendix)
    head_layers: int = 3
    head_bn: bool = False  # BN in the head MLP; off for ViTs (paper, table 13)
    norm_last_layer: bool = True  # freeze the weight-norm magnitude of the last layer (reference code)
    num_global_crops: int = 2  # the first views are global crops, the rest local crops (paper, sec. 3.1)

    def __post_init__(self) -> None:
        check_range("method.temperature", self.temperature, 0.0, None, low_open=True)
        check_range("method.warmup_temperature", self.warmup_temperature, 0.0, None, low_open=True)
        check_range("method.temperature_warmup_fraction", self.temperature_warmup_fraction, 0.0, 1.0)
        check_range("method.student_temperature", self.student_temperature, 0.0, None, low_open=True)
        check_range("method.momentum", self.momentum, 0.0, 1.0)
        check_range("method.final_momentum", self.final_momentum, self.momentum, 1.0)
        check_range("method.center_momentum", self.center_momentum, 0.0, 1.0)
        check_range("method.out_dim", self.out_dim, 1, None)
        check_range("method.head_hidden_dim", self.head_hidden_dim, 1, None)
        check_range("method.head_bottleneck_dim", self.head_bottleneck_dim, 1, None)
        check_range("method.head_layers", self.head_layers, 1, None)
        check_range("method.num_global_crops", self.num_global_crops, 1, None)


class DINO(MomentumSSLMethod):
    def __init__(self, backbone: nn.Module, cfg: DINOConfig | None = None):
        cfg = cfg or DINOConfig()
        super().__init__(backbone, cfg.momentum, cfg.final_momentum)
        self.cfg = cfg
        self.head = DINOHead(
            backbone.num_features,
            DINOHeadConfig(
                out_dim=cfg.out_dim,
                hidden_dim=cfg.head_hidden_dim,
                bottleneck_dim=cfg.head_bottleneck_dim,
                num_layers=cfg.head_layers,
                use_bn=cfg.head_bn,
                norm_last_layer=cfg.norm_last_layer,
            ),
        )
        self.teacher_backbone = build_target(self.backbone)
        self.teacher_head = build_target(self.head)
        self.criterion = DINOLoss(
            cfg.out_dim,
            teacher_temp=cfg.warmup_temperature,
            student_temp=cfg.student_temperature,
            center_momentum=cfg.center_momentum,
        )

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        n_global = self.cfg.num_global_crops
        check_views(views, max(n_global, 2), "DINO")
        global_crops, local_crops = views[:n_global], views[n_global:]
        n = views[0].shape[0]
        # One backbone pass per resolution, as the DINO MultiCropWrapper does.
        global_features = self.backbone(torch.cat(global_crops))
        student_features = [global_features]
        if local_crops:
            student_features.append(self.backbone(torch.cat(local_crops)))
        student_out = self.head(torch.cat(student_features)).split(n)
        with torch.no_grad():
            teacher_out = self.teacher_head(self.teacher_backbone(torch.cat(global_crops))).split(n)
        loss = self.criterion(list(student_out), list(teacher_out))
        return {"loss": loss, "embed_std": embedding_std(global_features[:n])}

    def evaluation_backbone(self) -> nn.Module:
        # DINO evaluates the teacher, which is better than the student throughout training (paper, sec. 5.2
        # and fig. 6; the reference code's kNN evaluation loads the teacher).
        return self.teacher_backbone

    def on_step(self, step: int, total_steps: int) -> dict[str, float]:
        scheduled = super().on_step(step, total_steps)
        # The next forward is step + 1's.
        warmup_steps = round(self.cfg.temperature_warmup_fraction * total_steps)
        self.criterion.teacher_temp = linear_warmup(
            step + 1, warmup_steps, self.cfg.warmup_temperature, self.cfg.temperature
        )
        return {**scheduled, "teacher_temperature": self.criterion.teacher_temp}
