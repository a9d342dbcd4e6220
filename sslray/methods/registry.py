"""The explicit registry of methods, and ``build_method``, which turns a recipe into a method.

Each method is one ``MethodEntry``: its class, its config dataclass (the recipe's ``method`` section
minus ``name``) and the view recipe its paper trains on. A new method is its file, one line in
``METHODS`` and a ``search_spaces/<name>_fmnist.yaml`` recipe; the tests then cover it.

A recipe has a ``method`` section (``name`` plus the method's knobs, see each method's config
dataclass) and a ``backbone`` section (``sslray.nn.backbones.BackboneConfig``); other sections are
ignored here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

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
from sslray.sections import check_range, section_from_dict


@dataclass(frozen=True)
class MethodEntry:
    method: type[SSLMethod]  # built as method(backbone, config)
    config: type  # the knobs of the recipe's method section, validated by section_from_dict
    views: str  # data.augment.recipe when the recipe names none: the paper's views


METHODS: dict[str, MethodEntry] = {
    "simclr": MethodEntry(SimCLR, SimCLRConfig, views="simclr"),
    "moco_v2": MethodEntry(MoCoV2, MoCoV2Config, views="simclr"),
    "moco_v3": MethodEntry(MoCoV3, MoCoV3Config, views="byol"),
    "byol": MethodEntry(BYOL, BYOLConfig, views="byol"),
    "simsiam": MethodEntry(SimSiam, SimSiamConfig, views="simclr"),
    "dino": MethodEntry(DINO, DINOConfig, views="dino"),
    "mae": MethodEntry(MAE, MAEConfig, views="mae"),
    "macrl": MethodEntry(MACRL, MACRLConfig, views="macrl"),
    "ijepa": MethodEntry(IJEPA, IJEPAConfig, views="ijepa"),
    "vicreg": MethodEntry(VICReg, VICRegConfig, views="byol"),
    "barlow_twins": MethodEntry(BarlowTwins, BarlowTwinsConfig, views="byol"),
}


class MethodRecipe(Protocol):
    """What ``build_method`` reads of a validated ``sslray.recipe.Recipe`` (which sits above this layer)."""

    method_name: str
    method: Any  # METHODS[method_name].config instance
    backbone: BackboneConfig


def method_config(method_section: dict[str, Any] | None) -> tuple[str, Any]:
    """Validate a recipe's ``method`` section: returns (name, config dataclass instance)."""
    if not isinstance(method_section, dict):
        raise UserError(f"method: expected a mapping with at least 'name', got {method_section!r}")
    knobs = dict(method_section)
    name = knobs.pop("name", None)
    if not isinstance(name, str) or name not in METHODS:  # a list or mapping is unhashable: no `in`
        what = "missing" if name is None else f"unknown method {name!r}"
        raise UserError(f"method.name: {what}; choose one of {', '.join(METHODS)}")
    config = section_from_dict(METHODS[name].config, knobs, "method")
    check_sizes(config)
    return name, config


MAX_DIM = 1 << 18  # 262,144: DINO's largest head in its ablations; a wider layer is a typo, not a recipe
MAX_QUEUE = 1 << 20  # 1,048,576 keys: 16x MoCo's 65,536


def check_sizes(config) -> None:
    """Bounds on a method's layer widths and queue: a typo such as ``proj_dim: 100000000000`` is one line
    here, not an allocation error inside a Ray worker that Ray retries."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        if f.name.endswith("_dim"):
            check_range(f"method.{f.name}", value, 1, MAX_DIM)
        elif f.name == "queue_size":
            check_range("method.queue_size", value, 0, MAX_QUEUE)


def check_method_backbone(name: str, backbone: BackboneConfig) -> None:
    """Refuse a backbone the method cannot use (a masked method on a ResNet), naming both keys: a
    recipe mistake must stop before Ray starts, not inside a worker that Ray would restart."""
    if METHODS[name].method.needs_vit and not backbone.name.startswith("vit"):
        raise UserError(
            f"backbone.name: method {name} needs a ViT backbone (vit_tiny, vit_small or vit_base), got {backbone.name}"
        )


def build_method(recipe: MethodRecipe | dict[str, Any]) -> SSLMethod:
    """Build the method and backbone of a validated ``Recipe`` (as it is: no second validation), or of a
    recipe dict, e.g.

    ``{"method": {"name": "simclr", "temperature": 0.2}, "backbone": {"name": "resnet18", "in_chans": 1}}``

    A dict's unknown names, unknown keys and out-of-range values raise a UserError naming the dotted key.
    """
    if isinstance(recipe, dict):
        name, cfg = method_config(recipe.get("method"))
        backbone_cfg = section_from_dict(BackboneConfig, recipe.get("backbone"), "backbone")
    elif all(hasattr(recipe, key) for key in ("method_name", "method", "backbone")):
        name, cfg, backbone_cfg = recipe.method_name, recipe.method, recipe.backbone
    else:
        raise UserError(f"recipe: expected a mapping, got {type(recipe).__name__}")
    return METHODS[name].method(build_backbone(backbone_cfg), cfg)
