import dataclasses
from pathlib import Path

import pytest

from sslray.data.augment import RECIPES
from sslray.errors import UserError
from sslray.methods.base import SSLMethod
from sslray.methods.byol import BYOL
from sslray.methods.dino import DINO
from sslray.methods.moco import MoCoV2, MoCoV3
from sslray.methods.registry import METHODS, build_method, method_config
from sslray.methods.simclr import SimCLR, SimCLRConfig
from sslray.methods.simsiam import SimSiam
from sslray.recipe import load_recipe

BACKBONE = {"name": "resnet18", "small_stem": True, "in_chans": 1, "img_size": 28}
SEARCH_SPACES = Path(__file__).parents[2] / "search_spaces"


def test_registry_names():
    assert {"simclr", "moco_v2", "moco_v3", "byol", "simsiam", "dino"} <= set(METHODS)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("simclr", SimCLR),
        ("moco_v2", MoCoV2),
        ("moco_v3", MoCoV3),
        ("byol", BYOL),
        ("simsiam", SimSiam),
        ("dino", DINO),
    ],
)
def test_build_method_from_a_recipe(name, cls):
    knobs = {"out_dim": 256} if name == "dino" else {}
    method = build_method({"method": {"name": name, **knobs}, "backbone": BACKBONE, "train": {"epochs": 1}})
    assert type(method) is cls
    assert method.backbone.num_features == 512
    assert method.backbone.net.conv1.in_channels == 1


def test_knobs_reach_the_config():
    method = build_method({"method": {"name": "simclr", "temperature": 0.2, "proj_dim": 64}, "backbone": BACKBONE})
    assert method.cfg == SimCLRConfig(temperature=0.2, proj_dim=64)
    assert method.criterion.temperature == 0.2
    assert method.projector.out_dim == 64


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"method": {"name": "simclr2"}}, r"method.name: unknown method 'simclr2'; choose one of simclr, moco_v2"),
        ({"method": {"temperature": 0.1}}, r"method.name: missing"),
        (
            {"method": {"name": "simclr", "temprature": 0.2}},
            r"method.temprature: unknown key \(did you mean 'temperature'\?\)",
        ),
        ({"method": {"name": "simclr", "temperature": "hot"}}, r"method.temperature: expected a number"),
        ({"method": {"name": "simclr", "temperature": 0}}, r"method.temperature: 0.0 is out of range"),
        ({"method": {"name": "byol", "momentum": 1.5}}, r"method.momentum: 1.5 is out of range"),
        ({"method": {"name": "moco_v2", "bn_mode": "batch"}}, r"method.bn_mode: 'batch' is not allowed"),
        ({"method": {"name": "simclr"}, "backbone": {"name": "resnet101"}}, r"backbone.name: unknown backbone"),
        ({"method": {"name": "simclr"}, "backbone": {"in_chan": 1}}, r"backbone.in_chan: unknown key"),
        ({"method": "simclr"}, r"method: expected a mapping"),
    ],
)
def test_bad_recipes_name_the_key(recipe, message):
    with pytest.raises(UserError, match=message):
        build_method(recipe)


def test_method_config_without_building():
    name, cfg = method_config({"name": "dino", "temperature": 0.05})
    assert name == "dino" and cfg.temperature == 0.05 and cfg.student_temperature == 0.1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_entry_is_complete(name):
    """A method is its file, its registry line and its recipe: each part is there and fits the others."""
    entry = METHODS[name]
    assert issubclass(entry.method, SSLMethod)
    assert dataclasses.is_dataclass(entry.config) and entry.config.__dataclass_params__.frozen
    entry.config()  # the defaults are valid
    assert entry.views in RECIPES, f"{name}: default view recipe {entry.views!r} unknown to data.augment"
    recipe = load_recipe(SEARCH_SPACES / f"{name}_fmnist.yaml")
    assert recipe.method_name == name and isinstance(recipe.method, entry.config)
    bare = load_recipe(SEARCH_SPACES / f"{name}_fmnist.yaml", ["data.augment.recipe=null"])
    assert bare.data.augment.recipe == entry.views  # no views given: the method's own
