"""``recipe_from_dict`` and ``load_recipe``: a recipe dict (or file, with overrides) validated into a
``Recipe``: unknown sections, search distributions left in a fixed recipe, each section's own checks,
then the checks across sections (channels, SyncBatchNorm on CPUs, batch split, ViT crop size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sslray.errors import UserError
from sslray.methods.registry import METHODS, check_method_backbone, method_config
from sslray.nn.backbones import BackboneConfig, check_backbone_config
from sslray.nn.optim import OptimizerConfig
from sslray.recipe.schema import SECTIONS, DataConfig, Recipe, ScalingConfig, TrainConfig
from sslray.recipe.yaml_io import apply_overrides, find_distributions, read_yaml
from sslray.sections import section_from_dict


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Validate a recipe dict (no distributions left) into a ``Recipe``."""
    sections = set(SECTIONS)
    unknown = sorted(set(data) - sections, key=str)  # YAML keys may be numbers, null, dates
    if unknown:
        raise UserError(f"{unknown[0]}: unknown section; allowed: {', '.join(sorted(sections))}")
    left = find_distributions(data)
    if left:
        raise UserError(
            f"{left[0]}: is a search distribution; `sslray train` needs fixed values (explore it with `sslray sweep`)"
        )
    name, knobs = method_config(data.get("method"))
    recipe = Recipe(
        method_name=name,
        method=knobs,
        backbone=section_from_dict(BackboneConfig, data.get("backbone"), "backbone"),
        data=section_from_dict(DataConfig, data.get("data"), "data"),
        optim=section_from_dict(OptimizerConfig, data.get("optim"), "optim"),
        train=section_from_dict(TrainConfig, data.get("train"), "train"),
        scaling=section_from_dict(ScalingConfig, data.get("scaling"), "scaling"),
    )
    if recipe.data.augment.recipe is None:
        recipe.data.augment.recipe = METHODS[name].views
    if recipe.data.eval_view.size is None:
        recipe.data.eval_view.size = recipe.data.augment.size
    check_backbone_config(recipe.backbone)  # here, not only when a Ray worker builds the model
    for section in (recipe.data, recipe.train, recipe.scaling):
        section.validate()
    recipe.data.augment.view_specs()  # validates every view
    recipe.data.eval_view.validate("data.eval_view")
    _check_across_sections(recipe)
    return recipe


def _check_across_sections(recipe: Recipe) -> None:
    if recipe.backbone.in_chans != recipe.data.channels:
        raise UserError(
            f"backbone.in_chans: {recipe.backbone.in_chans} but data.channels is "
            f"{recipe.data.channels}; they must match"
        )
    check_method_backbone(recipe.method_name, recipe.backbone)
    workers = recipe.scaling.num_workers
    sync_bn = (
        "train.sync_batchnorm"
        if recipe.train.sync_batchnorm
        else "method.bn_mode"
        if getattr(recipe.method, "bn_mode", None) == "sync"
        else None
    )
    if sync_bn and workers > 1 and not recipe.scaling.use_gpu:
        # torch's SyncBatchNorm refuses CPU tensors once there is more than one rank to sync with.
        raise UserError(
            f"{sync_bn}: SyncBatchNorm runs on GPUs only, and scaling.use_gpu is false with "
            f"{workers} workers; on CPUs use method.bn_mode: shuffle (MoCo) or plain BatchNorm"
        )
    if recipe.train.batch_size % workers:
        raise UserError(
            f"train.batch_size: {recipe.train.batch_size} does not split evenly across "
            f"scaling.num_workers={workers}; use a multiple of {workers}"
        )
    if recipe.backbone.name.startswith("vit") and recipe.backbone.img_size != recipe.data.augment.size:
        raise UserError(
            f"backbone.img_size: {recipe.backbone.img_size} but data.augment.size is "
            f"{recipe.data.augment.size}; a ViT needs the crop size it was built for"
        )


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe file."""
    return recipe_from_dict(apply_overrides(read_yaml(path), list(overrides)))
