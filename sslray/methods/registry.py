"""The explicit registry of methods and ``build_method``, which turns a recipe dict into a method.

A recipe has a ``method`` section (``name`` plus the method's knobs, see each method's config
dataclass) and a ``backbone`` section (``sslray.nn.backbones.BackboneConfig``); other sections are
ignored here.
"""

from __future__ import annotations

from typing import Any

from sslray.errors import UserError
from sslray.methods.barlow_twins import BarlowTwins, BarlowTwinsConfig
from sslray.methods.base import SSLMethod
from sslray.methods.byol import BYOL, BYOLConfig
from sslray.methods.dino import DINO, DINOConfig
from sslray.methods.ijepa import IJEPA, IJEPAConfig
from sslray.methods.macrl import MACRL, MACRLConfig
from sslray.methods.mae import MAE, MAEConfig
from sslray.methods.moco import MoCoV2, MoCoV2Config, MoCoV3, MoCoV3Config
from sslray.methods.simclr import SimCLR, SimCLRConfig
from sslray.methods.simsiam import SimSiam, SimSiamConfig
from sslray.methods.vicreg import VICReg, VICRegConfig
from sslray.nn.backbones import BackboneConfig, build_backbone
from sslray.sections import section_from_dict

# name -> (method class, config dataclass); the class is built as cls(backbone, config)
METHODS: dict[str, tuple[type[SSLMethod], type]] = {
    "simclr": (SimCLR, SimCLRConfig),
    "moco_v2": (MoCoV2, MoCoV2Config),
    "moco_v3": (MoCoV3, MoCoV3Config),
    "byol": (BYOL, BYOLConfig),
    "simsiam": (SimSiam, SimSiamConfig),
    "dino": (DINO, DINOConfig),
    "mae": (MAE, MAEConfig),
    "macrl": (MACRL, MACRLConfig),
    "ijepa": (IJEPA, IJEPAConfig),
    "vicreg": (VICReg, VICRegConfig),
    "barlow_twins": (BarlowTwins, BarlowTwinsConfig),
}


def method_config(method_section: dict[str, Any] | None) -> tuple[str, Any]:
    """Validate a recipe's ``method`` section: returns (name, config dataclass instance)."""
    if not isinstance(method_section, dict):
        raise UserError(f"method: expected a mapping with at least 'name', got {method_section!r}")
    knobs = dict(method_section)
    name = knobs.pop("name", None)
    if not isinstance(name, str) or name not in METHODS:  # a list or mapping is unhashable: no `in`
        what = "missing" if name is None else f"unknown method {name!r}"
        raise UserError(f"method.name: {what}; choose one of {', '.join(METHODS)}")
    _, config_cls = METHODS[name]
    return name, section_from_dict(config_cls, knobs, "method")


def check_method_backbone(name: str, backbone: BackboneConfig) -> None:
    """Refuse a backbone the method cannot use (a masked method on a ResNet), naming both keys: a
    recipe mistake must stop before Ray starts, not inside a worker that Ray would restart."""
    method_cls, _ = METHODS[name]
    if method_cls.needs_vit and not backbone.name.startswith("vit"):
        raise UserError(f"backbone.name: method {name} needs a ViT backbone (vit_tiny, vit_small or vit_base), "
                        f"got {backbone.name}")


def build_method(recipe: dict[str, Any]) -> SSLMethod:
    """Build the method and backbone a recipe describes, e.g.

    ``{"method": {"name": "simclr", "temperature": 0.2}, "backbone": {"name": "resnet18", "in_chans": 1}}``

    Unknown names, unknown keys and out-of-range values raise a UserError naming the dotted key.
    """
    if not isinstance(recipe, dict):
        raise UserError(f"recipe: expected a mapping, got {type(recipe).__name__}")
    name, cfg = method_config(recipe.get("method"))
    backbone_cfg = section_from_dict(BackboneConfig, recipe.get("backbone"), "backbone")
    method_cls, _ = METHODS[name]
    return method_cls(build_backbone(backbone_cfg), cfg)
