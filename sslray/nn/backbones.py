"""Feature extractors: torchvision ResNets, timm's shallow ResNet-10-T and the project's ViT, behind one interface.

Every backbone has an attribute ``num_features`` and ``forward(x [N, C, H, W]) -> [N, num_features]``
(globally pooled features, no classifier), the convention of timm's ``forward_features`` + pooling.
Backbones are listed in the explicit registry ``BACKBONES``; ``build_backbone`` is the only way the
rest of sslray makes one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn
from torchvision.models import resnet

from sslray.errors import UserError
from sslray.sections import check_range


@dataclass
class BackboneConfig:
    name: str = "resnet18"  # a key of BACKBONES: resnet18/34/50, resnet10t, vit_tiny/small/base
    small_stem: bool = True  # ResNet: 3x3 stride-1 conv and no max-pool, for 28-64 px images (SimCLR CIFAR variant)
    in_chans: int = 3  # 1 for Fashion-MNIST, 3 for RGB
    img_size: int = 32  # ViT: input side in pixels (sets the number of patches); ResNets accept any size
    patch_size: int = 4  # ViT: patch side in pixels; img_size must be a multiple of it
    drop_path_rate: float = 0.0  # ViT: stochastic depth; ResNets have none, so it must stay 0 for them
    depth: int | None = None  # ViT: number of blocks; None keeps the size's default (12); small values for CPU runs
    width: int | None = None  # resnet10t: channels of the first stage, doubled per stage (None: 64); 16-32 on a CPU


class ResNetBackbone(nn.Module):
    """A torchvision ResNet (``weights=None``) with the classifier removed.

    ``small_stem`` replaces the 7x7 stride-2 conv + max-pool by a 3x3 stride-1 conv, as SimCLR does
    for CIFAR-10 (Chen et al. 2020, appendix B.9): a 28-32 px image would otherwise reach the last
    stage at 1x1 resolution.
    """

    def __init__(self, depth: int, in_chans: int = 3, small_stem: bool = False):
        super().__init__()
        constructors = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50}
        net = constructors[depth](weights=None)
        if small_stem:
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.num_features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def compile_trunk(self) -> None:
        """``torch.compile`` the whole network, in place (``nn.Module.compile``: state-dict keys stay)."""
        self.net.compile()


def resnet10t_args(width: int | None, in_chans: int) -> dict:
    """``timm.create_model("resnet10t", **args)`` for a width (None: timm's 64): channels doubled per
    stage, and stem_width w/2, since the tiered stem ends at 2 x stem_width = the first stage's width.
    ``sslray export`` writes the same arguments into its loading line."""
    width = width or 64
    return {
        "num_classes": 0,
        "in_chans": in_chans,
        "channels": tuple(width * 2**stage for stage in range(4)),
        "stem_width": width // 2,
    }


class ResNet10TBackbone(nn.Module):
    """timm's ``resnet10t`` (one BasicBlock per stage behind a 3-conv "tiered" 3x3 stem, average-pool
    downsampling; Wightman et al. 2021, "ResNet strikes back"), at any width: ``width`` channels in the
    first stage, doubled per stage (64 -> 64/128/256/512 as timm's). The CPU-sized ConvNet of sslray:
    at width 32 and 28 px a training image costs about a fifth of a ResNet-18 with the small stem.

    ``small_stem`` makes the stem's first conv stride 1 and drops the max-pool (28 px reaches the first
    stage at full resolution instead of 7x7), as ``ResNetBackbone`` does.
    """

    def __init__(self, width: int | None = 64, in_chans: int = 3, small_stem: bool = False):
        super().__init__()
        import timm

        net = timm.create_model("resnet10t", pretrained=False, **resnet10t_args(width, in_chans))
        if small_stem:
            net.conv1[0].stride = (1, 1)
            net.maxpool = nn.Identity()
        self.num_features = net.num_features
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def compile_trunk(self) -> None:
        self.net.compile()


def _resnet_knobs_only(cfg: BackboneConfig) -> None:
    if cfg.drop_path_rate != 0.0:
        raise UserError(
            f"backbone.drop_path_rate: {cfg.drop_path_rate!r} is not supported by "
            f"{cfg.name}; it applies to ViT backbones only (leave it at 0)"
        )
    if cfg.depth is not None:
        raise UserError(f"backbone.depth: {cfg.name} has a fixed depth; depth applies to ViT backbones only")


def _resnet(depth: int) -> Callable[[BackboneConfig], nn.Module]:
    def build(cfg: BackboneConfig) -> nn.Module:
        return ResNetBackbone(depth, in_chans=cfg.in_chans, small_stem=cfg.small_stem)

    return build


def _resnet10t(cfg: BackboneConfig) -> nn.Module:
    return ResNet10TBackbone(cfg.width, in_chans=cfg.in_chans, small_stem=cfg.small_stem)


def _vit(size: str) -> Callable[[BackboneConfig], nn.Module]:
    def build(cfg: BackboneConfig) -> nn.Module:
        # Imported here so the ResNet paths work without the ViT module (and its timm imports).
        from sslray.nn.vit import ViTBackbone

        return ViTBackbone(
            size,
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            depth=cfg.depth,
            drop_path_rate=cfg.drop_path_rate,
        )

    return build


BACKBONES: dict[str, Callable[[BackboneConfig], nn.Module]] = {
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "resnet10t": _resnet10t,
    "vit_tiny": _vit("tiny"),
    "vit_small": _vit("small"),
    "vit_base": _vit("base"),
}


def check_backbone_config(cfg: BackboneConfig) -> None:
    """Raise a UserError naming the first bad value of ``cfg``."""
    if cfg.name not in BACKBONES:
        raise UserError(f"backbone.name: unknown backbone {cfg.name!r}; choose one of {', '.join(BACKBONES)}")
    check_range("backbone.in_chans", cfg.in_chans, 1, None)
    check_range("backbone.img_size", cfg.img_size, 1, None)
    check_range("backbone.patch_size", cfg.patch_size, 1, None)
    check_range("backbone.drop_path_rate", cfg.drop_path_rate, 0.0, 1.0, high_open=True)
    if cfg.depth is not None:
        check_range("backbone.depth", cfg.depth, 1, None)
    if cfg.width is not None:
        check_range("backbone.width", cfg.width, 2, 1024)
        if cfg.width % 2:
            raise UserError(f"backbone.width: {cfg.width} is odd; the stem halves it (use an even width)")
    # Knobs of one family given to another: checked here, at load time, where the error names the key
    # (a builder's error would surface inside a Ray worker, which Ray restarts).
    if cfg.name.startswith("vit"):
        if cfg.width is not None:
            raise UserError(f"backbone.width: {cfg.name} sets its width by size; width applies to resnet10t only")
        if cfg.img_size % cfg.patch_size != 0:
            raise UserError(f"backbone.patch_size: {cfg.patch_size} does not divide backbone.img_size {cfg.img_size}")
    else:
        _resnet_knobs_only(cfg)
        if cfg.width is not None and cfg.name != "resnet10t":
            raise UserError(f"backbone.width: {cfg.name} has a fixed width; width applies to resnet10t only")


def compile_backbones(model: nn.Module) -> int:
    """``torch.compile`` (in place) the trunk of every backbone inside ``model``: the online one and
    the EMA targets / teachers alike; returns how many. Compiling in place keeps the state-dict keys,
    so compiled and eager runs read each other's checkpoints and ``sslray export`` is unchanged."""
    backbones = [m for m in model.modules() if callable(getattr(m, "compile_trunk", None))]
    for backbone in backbones:
        backbone.compile_trunk()
    return len(backbones)


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """Build the backbone named by ``cfg.name``; it has ``num_features`` and returns [N, num_features]."""
    check_backbone_config(cfg)
    backbone = BACKBONES[cfg.name](cfg)
    if not isinstance(getattr(backbone, "num_features", None), int):
        raise TypeError(f"backbone {cfg.name!r} does not expose an int num_features")
    return backbone
