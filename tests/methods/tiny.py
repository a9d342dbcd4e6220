"""Tiny versions of every registered method, for tests that must cover the whole registry.

``tiny_method(name)`` builds ``name`` with the knobs below (methods not listed keep their defaults, so
a newly registered method is still built and tested) on a tiny backbone: a ResNet-18 (ImageNet stem)
at 32 px, or a one-block ViT-tiny at 16 px for methods that need a ViT (``needs_vit``).
"""

from __future__ import annotations

import torch

from sslray.methods.registry import METHODS, build_method

# Narrow heads keep a step at a few milliseconds; the formulas do not depend on the widths.
SMALL_KNOBS: dict[str, dict] = {
    "simclr": {"proj_hidden_dim": 64, "proj_dim": 32},
    "moco_v2": {"proj_hidden_dim": 64, "proj_dim": 32, "queue_size": 32},
    "moco_v3": {"proj_hidden_dim": 64, "proj_dim": 32},
    "byol": {"proj_hidden_dim": 64, "proj_dim": 32, "pred_hidden_dim": 64},
    "simsiam": {"proj_hidden_dim": 64, "proj_dim": 32, "pred_hidden_dim": 16},
    "dino": {"out_dim": 128, "head_hidden_dim": 64, "head_bottleneck_dim": 32},
    "mae": {"decoder_dim": 32, "decoder_depth": 1},
    "macrl": {"decoder_dim": 32, "proj_hidden_dim": 64, "proj_dim": 32},
    "ijepa": {"predictor_dim": 32, "predictor_depth": 1, "predictor_num_heads": 2},
    "vicreg": {"proj_hidden_dim": 64, "proj_dim": 32},
    "barlow_twins": {"proj_hidden_dim": 64, "proj_dim": 32},
}
# ResNet at 32 px with the ImageNet stem: 8 px after it, 2 px into the last stage. Not smaller: torch's
# CPU bf16 convolution returns garbage weight gradients for a 1x1 input at stride 2 (torch 2.14).
RESNET_SIZE, VIT_SIZE = 32, 16
RESNET = {"name": "resnet18", "small_stem": False, "img_size": RESNET_SIZE}
VIT = {"name": "vit_tiny", "img_size": VIT_SIZE, "patch_size": 4, "depth": 1}


def needs_vit(name: str) -> bool:
    return METHODS[name].method.needs_vit


def image_size(name: str, vit: bool | None = None) -> int:
    return VIT_SIZE if (needs_vit(name) if vit is None else vit) else RESNET_SIZE


def tiny_recipe(name: str, in_chans: int = 1, vit: bool | None = None, **knobs) -> dict:
    """The ``method`` and ``backbone`` sections of a tiny ``name``; ``vit`` forces the backbone family."""
    use_vit = needs_vit(name) if vit is None else vit
    backbone = {**(VIT if use_vit else RESNET), "in_chans": in_chans}
    return {"method": {"name": name, **SMALL_KNOBS.get(name, {}), **knobs}, "backbone": backbone}


def tiny_method(name: str, in_chans: int = 1, vit: bool | None = None, **knobs):
    return build_method(tiny_recipe(name, in_chans, vit, **knobs))


def tiny_views(
    name: str,
    n: int = 6,
    in_chans: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    vit: bool | None = None,
) -> list[torch.Tensor]:
    """Two global views at the backbone's size; DINO also gets two local crops at half of it (a ViT
    takes them through its interpolated position table)."""
    size = image_size(name, vit)
    views = [torch.randn(n, in_chans, size, size, generator=generator).to(dtype) for _ in range(2)]
    if name == "dino":
        views += [torch.randn(n, in_chans, size // 2, size // 2, generator=generator).to(dtype) for _ in range(2)]
    return views
