"""Recipes: YAML loading, overrides, validation errors that name the key, and every shipped recipe."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sslray.errors import UserError
from sslray.methods.registry import METHODS, build_method
from sslray.methods.simclr import SimCLRConfig
from sslray.recipe import apply_overrides, find_distributions, load_recipe, recipe_from_dict

SEARCH_SPACES = Path(__file__).parents[1] / "search_spaces"
RECIPES = sorted(SEARCH_SPACES.glob("*_fmnist*.yaml"))
PAPER_RECIPES = sorted(SEARCH_SPACES.glob("paper/*.yaml"))


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_there_is_a_recipe_per_method_with_resnet_and_vit_variants():
    assert sorted(p.name.removesuffix("_fmnist.yaml") for p in RECIPES if p.name.endswith("_fmnist.yaml")) == sorted(
        METHODS
    )
    backbones = {}
    for path in RECIPES:
        recipe = load_recipe(path)
        backbones.setdefault(recipe.method_name, set()).add(recipe.backbone.name)
    for method, entry in METHODS.items():  # masked methods need a ViT; every other method has both variants
        if entry.method.needs_vit:
            assert backbones[method] == {"vit_tiny"}, method
        else:  # and maybe a CPU-sized one (simclr_fmnist_cpu.yaml: resnet10t)
            assert {"resnet18", "vit_tiny"} <= backbones[method] <= {"resnet18", "resnet10t", "vit_tiny"}, method


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda p: p.stem)
def test_paper_scale_recipes_are_valid(path):
    recipe = load_recipe(path)
    assert recipe.data.augment.size == 224 and recipe.scaling.use_gpu
    assert recipe.backbone.name in ("resnet50", "vit_base")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_builds_and_runs_one_forward(path):
    recipe = load_recipe(path, ["backbone.depth=1"] if "vit" in path.read_text() else [])
    specs = recipe.data.augment.view_specs()
    model = build_method(recipe)
    views = [torch.randn(4, recipe.data.channels, s.size, s.size) for s in specs]
    out = model(views)
    assert torch.isfinite(out["loss"])
    assert recipe.train.batch_size % recipe.scaling.num_workers == 0


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 (PyYAML's default) reads 2e-3 as a string; recipes and overrides read it as 0.002."""
    path = write(tmp_path, "method: {name: simclr}\nbackbone: {in_chans: 1}\noptim: {weight_decay: 5e-4}\n")
    recipe = load_recipe(path, ["optim.base_lr=2e-3", "method.temperature=1E-1"])
    assert (recipe.optim.base_lr, recipe.optim.weight_decay, recipe.method.temperature) == (0.002, 0.0005, 0.1)
    assert apply_overrides({}, ["data.path=1e"]) == {"data": {"path": "1e"}}  # not a number: stays text


def test_overrides_are_typed_yaml_values_on_dotted_paths(tmp_path):
    path = write(tmp_path, "method: {name: simclr}\nbackbone: {in_chans: 1}\n")
    recipe = load_recipe(
        path,
        [
            "method.temperature=0.2",
            "train.epochs=3",
            "data.limit=512",
            "data.augment.global_view={blur_p: 0.0}",
            "train.sync_batchnorm=true",
        ],
    )
    assert recipe.method.temperature == 0.2 and recipe.train.epochs == 3 and recipe.data.limit == 512
    assert recipe.data.augment.view_specs()[0].blur_p == 0.0 and recipe.train.sync_batchnorm is True
    assert recipe.data.augment.recipe == "simclr"  # the method's default views


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["method.temprature=0.1"],
            r"method\.temprature: unknown key \(did you mean 'temperature'\?\)",
        ),
        (
            "method: {name: mae}\nbackbone: {name: vit_tiny, in_chans: 1, img_size: 32}\n",
            ["method.mask_ratio=1.5"],
            r"method\.mask_ratio: 1\.5 is out of range",
        ),
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["scaling.num_workers=3"],
            r"train\.batch_size: 256 does not split evenly across scaling\.num_workers=3",
        ),
        ("method: {name: simclr}\nbackbone: {in_chans: 3}\n", [], r"backbone\.in_chans: 3 but data\.channels is 1"),
        ("method: {name: simclr}\nbackbone: {in_chans: 1}\ntrainn: {}\n", [], r"trainn: unknown section"),
        ("method: {name: simclrr}\n", [], r"method\.name: unknown method 'simclrr'; choose one of simclr"),
        (
            "method: {name: simclr, temperature: {loguniform: [0.05, 0.5]}}\nbackbone: {in_chans: 1}\n",
            [],
            r"method\.temperature: is a search distribution.*sslray sweep",
        ),
        ("method: {name: simclr}\nbackbone: {in_chans: 1}\n", ["train.epochs"], r"expected key\.path=value"),
        ("method: {name: simclr}\nbackbone: {in_chans: 1}\n", ["train.precision=fp8"], r"train\.precision: 'fp8'"),
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["data.mean=[0.5, 0.5]"],
            r"data\.mean: \[0\.5, 0\.5\] has 2 values; data\.channels is 1",
        ),
        ("method: {name: simclr\n", [], r"recipe\.yaml:2:1: "),
        ("method: !!python/object/apply:os.system ['touch pwned']\n", [], r"recipe\.yaml:1:9: .*safe_load"),
        ("- just\n- a list\n", [], r"expected a mapping of sections"),
        (  # PyYAML keeps the last of two equal keys: the first train section would vanish silently
            "method: {name: simclr}\ntrain: {batch_size: 64, warmup_epochs: 0}\n"
            "backbone: {in_chans: 1}\ntrain: {epochs: 3}\n",
            [],
            r"recipe\.yaml:4:1: duplicate key 'train' \(first on line 2, again on line 4\)",
        ),
        ("method: {name: simclr, name: byol}\n", [], r"recipe\.yaml:1:24: duplicate key 'name'"),
        ("method: {name: simclr}\nbackbone: {in_chans: 1}\n", ["train.seed=-1"], r"train\.seed: -1 is out of range"),
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["train.seed=4294967296"],
            r"train\.seed: .* out of range",
        ),
        ("method: {name: mae}\nbackbone: {in_chans: 1}\n", [], r"backbone\.name: method mae needs a ViT backbone"),
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["train.sync_batchnorm=true", "scaling.num_workers=2"],
            r"train\.sync_batchnorm: SyncBatchNorm runs on GPUs only",
        ),
        (
            "method: {name: moco_v2, bn_mode: sync}\nbackbone: {in_chans: 1}\n",
            ["scaling.num_workers=4"],
            r"method\.bn_mode: SyncBatchNorm runs on GPUs only",
        ),
        # Issue 18 #1: each of these used to pass load and fail inside a Ray worker, retried.
        (
            "method: {name: mae}\nbackbone: {name: vit_tiny, in_chans: 1, img_size: 28}\ndata: {augment: {size: 28}}\n",
            ["backbone.patch_size=5"],
            r"backbone\.patch_size: 5 does not divide backbone\.img_size 28",
        ),
        ("method: {name: simclr}\nbackbone: {in_chans: 1}\n", ["backbone.depth=4"], r"backbone\.depth: resnet18 has"),
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["backbone.drop_path_rate=0.1"],
            r"backbone\.drop_path_rate: 0\.1 is not supported by resnet18",
        ),
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["method.proj_dim=100000000000"],
            r"method\.proj_dim: 100000000000 is out of range",
        ),
        (
            "method: {name: moco_v2}\nbackbone: {in_chans: 1}\n",
            ["method.queue_size=100000000"],
            r"method\.queue_size: 100000000 is out of range",
        ),
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["optim.base_lr=1.0e+300"],
            r"optim\.base_lr: 1e\+300 is out",
        ),
        (
            "method: {name: simclr}\nbackbone: {in_chans: 1}\n",
            ["scaling.placement_strategy=SPREAD_OUT"],
            r"scaling\.placement_strategy: 'SPREAD_OUT' is not allowed; choose PACK, SPREAD, STRICT_PACK, STRICT_SP",
        ),
    ],
)
def test_bad_recipes_name_the_key_and_value(tmp_path, monkeypatch, text, overrides, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message):
        load_recipe(write(tmp_path, text), overrides)
    assert not (tmp_path / "pwned").exists()


def test_missing_recipe_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_recipe(tmp_path / "nope.yaml")


def test_distributions_are_found_anywhere():
    space = {
        "method": {"name": {"choice": ["simclr", "byol"]}, "temperature": {"uniform": [0.1, 0.5]}},
        "optim": {"base_lr": 0.1},
        "data": {"augment": {"views": [{"blur_p": 0.5}]}},
    }
    assert find_distributions(space) == ["method.name", "method.temperature"]
    assert apply_overrides(space, ["optim.base_lr=0.2"])["optim"]["base_lr"] == 0.2
    assert space["optim"]["base_lr"] == 0.1  # the input is not modified


def test_recipe_round_trips_through_its_dict():
    recipe = recipe_from_dict({"method": {"name": "byol"}, "backbone": {"in_chans": 1}})
    assert recipe_from_dict(recipe.to_dict()) == recipe


def test_the_method_section_stays_typed_and_its_dict_is_the_yaml_shape():
    recipe = recipe_from_dict({"method": {"name": "simclr", "temperature": 0.2}, "backbone": {"in_chans": 1}})
    assert recipe.method == SimCLRConfig(temperature=0.2) and recipe.method_name == "simclr"
    with pytest.raises(dataclasses.FrozenInstanceError):  # validated once: no unchecked change afterwards
        recipe.method.temperature = -1.0
    data = recipe.to_dict()
    # config.yaml, checkpoints' state.json and sweep hyperparameters record exactly this shape
    assert list(data) == ["method", "backbone", "data", "optim", "train", "scaling"]
    assert data["method"] == {"name": "simclr", **dataclasses.asdict(SimCLRConfig(temperature=0.2))}
    assert list(data["method"])[0] == "name"
    assert data["backbone"] == dataclasses.asdict(recipe.backbone) and data["train"]["epochs"] == 100
    assert build_method(recipe).cfg is recipe.method  # built from the typed config, not from a dict


def test_sync_batchnorm_is_fine_on_gpus_or_a_single_worker(tmp_path):
    text = "method: {name: moco_v2, bn_mode: sync}\nbackbone: {in_chans: 1}\n"
    assert load_recipe(write(tmp_path, text), ["scaling.num_workers=2", "scaling.use_gpu=true"]).scaling.use_gpu
    assert load_recipe(write(tmp_path, text), ["train.sync_batchnorm=true"]).train.sync_batchnorm
