"""Search-space YAML -> Ray Tune domains, and the mistakes a space can hold, each named (no Ray needed)."""

from __future__ import annotations

import re

import pytest
import yaml
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer

from sslray.errors import UserError
from sslray.recipe import recipe_from_dict
from sslray.tune.distributions import spec_values
from sslray.tune.registry import SEARCHERS, pbt_explore
from sslray.tune.space import SCHEDULERS, load_space, space_from_dict, tune_domain

BASE = {
    "method": {"name": "simclr", "temperature": 0.2},
    "backbone": {"name": "vit_tiny", "img_size": 16, "patch_size": 4, "in_chans": 1, "depth": 1},
    "data": {"augment": {"size": 16}},
    "train": {"epochs": 2, "batch_size": 32},
}


def space(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return data


def test_every_form_becomes_its_tune_domain():
    choice = tune_domain("k", {"choice": [0.1, 0.2]})
    assert isinstance(choice, Categorical) and choice.categories == [0.1, 0.2]
    assert tune_domain("k", {"grid": [1, 2]}) == tune.grid_search([1, 2])
    uniform = tune_domain("k", {"uniform": [0.5, 0.9]})
    assert isinstance(uniform, Float) and (uniform.lower, uniform.upper) == (0.5, 0.9)
    log = tune_domain("k", {"loguniform": [1e-4, 1e-2]})
    assert isinstance(log, Float) and isinstance(log.get_sampler(), Float._LogUniform)
    randint = tune_domain("k", {"randint": [2, 4]})
    assert isinstance(randint, Integer) and (randint.lower, randint.upper) == (2, 5)  # inclusive of 4
    assert {randint.sample() for _ in range(200)} == {2, 3, 4}
    quniform = tune_domain("k", {"quniform": [0.5, 0.9, 0.1]})
    values = [quniform.sample() for _ in range(100)]
    assert all(0.5 <= v <= 0.9 and abs(round(v / 0.1) * 0.1 - v) < 1e-9 for v in values)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"uniform": [0.9, 0.5]}, "needs low < high"),
        ({"loguniform": [0.0, 0.5]}, "needs low > 0"),
        ({"randint": [5, 2]}, "low > high"),
        ({"randint": [1.5, 2]}, "needs integers"),
        ({"choice": []}, "non-empty list"),
        ({"uniform": [0.1]}, "needs [low, high]"),
        ({"quniform": [0.1, 0.5, 0]}, "needs q > 0"),
        ({"uniform": ["a", 1]}, "needs numbers"),
    ],
)
def test_malformed_distributions_name_the_key(spec, message):
    with pytest.raises(UserError, match="method.temperature") as err:
        space_from_dict(space(method__temperature=spec))
    assert message in str(err.value)


def test_a_misspelt_distribution_is_named_with_a_suggestion():
    with pytest.raises(
        UserError,
        match=r"method.temperature: unknown distribution 'logunifrom'; "
        "did you mean loguniform",
    ):
        space_from_dict(space(method__temperature={"logunifrom": [0.1, 0.5]}))


def test_a_knob_no_candidate_method_has_is_refused():
    with pytest.raises(UserError, match=r"method.mask_ratio: not a knob of simclr or byol"):
        space_from_dict(space(method__name={"choice": ["simclr", "byol"]}, method__mask_ratio={"uniform": [0.5, 0.9]}))


def test_knobs_apply_only_to_the_methods_that_have_them():
    s = space_from_dict(
        space(
            method__name={"choice": ["simclr", "mae"]},
            method__mask_ratio={"uniform": [0.5, 0.9]},
            method__temperature={"loguniform": [0.1, 0.5]},
        )
    )
    simclr = s.trial_recipe({"method.name": "simclr", "method.mask_ratio": 0.6, "method.temperature": 0.3})
    mae = s.trial_recipe({"method.name": "mae", "method.mask_ratio": 0.6, "method.temperature": 0.3})
    assert simclr["method"] == {"name": "simclr", "temperature": 0.3}
    assert mae["method"] == {"name": "mae", "mask_ratio": 0.6}
    assert s.applicable({"method.name": "mae", "method.mask_ratio": 0.6, "method.temperature": 0.3}) == {
        "method.name": "mae",
        "method.mask_ratio": 0.6,
    }


def test_a_range_reaching_out_of_bounds_fails_before_the_sweep():
    with pytest.raises(UserError, match=r"method.mask_ratio: 1.2") as err:
        data = space(method__mask_ratio={"uniform": [0.5, 1.2]})
        data["method"] = {"name": "mae", "mask_ratio": data["method"]["mask_ratio"]}
        space_from_dict(data)
    assert "(method.name" not in str(err.value)  # one method: no need to say which


def test_tune_section_mistakes():
    with pytest.raises(UserError, match="tune.scheduler.name: 'hyperband2' is not a scheduler"):
        space_from_dict({**space(), "tune": {"scheduler": "hyperband2"}})
    with pytest.raises(UserError, match="tune.scheduler.grace: unknown key"):
        space_from_dict({**space(), "tune": {"scheduler": {"name": "asha", "grace": 2}}})
    with pytest.raises(UserError, match="tune.metric: 'accuracy'"):
        space_from_dict({**space(), "tune": {"metric": "accuracy"}})
    with pytest.raises(UserError, match="train.knn_every: 2"):
        space_from_dict({**space(train__knn_every=2), "tune": {}})
    with pytest.raises(UserError, match=r"tune.seed: -1 is out of range"):  # was a ValueError from numpy
        space_from_dict({**space(), "tune": {"seed": -1}})


def test_linear_top1_needs_a_final_probe_and_a_scheduler_that_waits_for_it():
    labelled = space(data__knn_bank="data/fmnist/train", data__knn_query="data/fmnist/test")
    with pytest.raises(UserError, match="train.linear_probe_epochs: 0, but tune.metric linear_top1 needs a probe"):
        space_from_dict({**labelled, "tune": {"metric": "linear_top1", "scheduler": "fifo"}})
    probed = {**labelled, "train": {**labelled["train"], "linear_probe_epochs": 5}}
    with pytest.raises(UserError, match="tune.scheduler: asha compares trials every epoch"):
        space_from_dict({**probed, "tune": {"metric": "linear_top1"}})
    ok = space_from_dict({**probed, "tune": {"metric": "linear_top1", "scheduler": "fifo"}})
    assert ok.tune.mode == "max"


def test_pbt_refuses_searched_architecture_and_needs_a_numeric_knob():
    with pytest.raises(UserError, match="method.name: PBT copies weights"):
        space_from_dict({**space(method__name={"choice": ["simclr", "byol"]}), "tune": {"scheduler": "pbt"}})
    with pytest.raises(UserError, match="PBT needs at least one searched numeric knob"):
        space_from_dict({**space(), "tune": {"scheduler": "pbt"}})
    ok = space_from_dict({**space(method__temperature={"loguniform": [0.1, 0.5]}), "tune": {"scheduler": "pbt"}})
    assert ok.tune.options.mutated_keys(ok.knobs) == ["method.temperature"]


def test_pbt_explore_keeps_every_perturbed_value_inside_its_distribution():
    # BYOL's momentum at the top of its range, times PBT's 1.2, was 1.19: a UserError in the trial.
    from ray.tune.schedulers.pbt import _explore

    data = space(
        method__name="byol",
        method__momentum={"uniform": [0.9, 0.99]},
        optim__base_lr={"loguniform": [1e-4, 1e-2]},
        optim__weight_decay={"quniform": [0.0, 0.1, 0.05]},
        train__warmup_epochs={"randint": [0, 1]},
        data__limit={"choice": [64, 128]},
    )
    del data["method"]["temperature"]
    s = space_from_dict({**data, "tune": {"scheduler": {"name": "pbt", "resample_probability": 0.0}}})
    scheduler = s.build_scheduler()
    assert isinstance(scheduler, tune.schedulers.PopulationBasedTraining)
    low = {key: spec_values(spec)[0] for key, spec in s.knobs.items()}
    high = {key: spec_values(spec)[-1] for key, spec in s.knobs.items()}
    for config, factor in [(high, 1.2), (low, 0.8), (high, 0.8), (low, 1.2)]:
        for _ in range(5):  # lists move to a random neighbour
            explored, _ = _explore(
                config, scheduler._hyperparam_mutations, 0.0, (factor,), scheduler._custom_explore_fn
            )
            for key, spec in s.knobs.items():
                if "choice" in spec:
                    assert explored[key] in spec["choice"]
                else:
                    assert spec_values(spec)[0] <= explored[key] <= spec_values(spec)[-1], (key, explored[key])
            recipe_from_dict(s.trial_recipe(explored))  # a valid recipe: the trial would start
    assert pbt_explore(s.knobs, {**high, "method.momentum": 1.19})["method.momentum"] == 0.99
    assert pbt_explore(s.knobs, {**high, "optim.weight_decay": 0.13})["optim.weight_decay"] == 0.1
    assert pbt_explore(s.knobs, {**high, "train.warmup_epochs": -1})["train.warmup_epochs"] == 0
    assert pbt_explore(s.knobs, {**high, "data.limit": 100})["data.limit"] == 128


def test_every_registered_scheduler_and_searcher_builds_rays_own():
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import SearchAlgorithm, Searcher

    for name, entry in SCHEDULERS.items():
        s = space_from_dict({**space(method__temperature={"loguniform": [0.1, 0.5]}), "tune": {"scheduler": name}})
        assert isinstance(s.build_scheduler(), TrialScheduler)
        assert entry.checkpoints_kept(s.tune.options) >= 2
    random = SEARCHERS["random"].build(0, 2)
    assert isinstance(random, (Searcher, SearchAlgorithm))


def test_shipped_search_spaces_load(tmp_path):
    from pathlib import Path

    spaces = sorted(Path("search_spaces").glob("**/*.yaml"))
    assert Path("search_spaces/quickstart.yaml") in spaces
    for path in spaces:
        load_space(path)


def test_sweep_command_mistakes_exit_2_before_ray_starts(tmp_path, capsys):
    from sslray.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "method": {"name": "simclr", "temperature": {"uniform": [0.5, 0.1]}}}))
    assert main(["sweep", str(bad)]) == 2
    assert "method.temperature: {uniform: [0.5, 0.1]} needs low < high" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "is " + str(tmp_path) + " a sweep folder?" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(BASE))
    assert main(["sweep", str(good), "--out", str(occupied)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (occupied / "keep.txt").read_text() == "mine"


def test_every_value_of_a_searched_data_path_or_batch_size_is_checked_before_ray(tiny_fmnist, tmp_path, capsys):
    """Issue 18 #3: only the first value used to be checked, so a sweep whose other values could never
    run spent every such trial on an error and exited 0."""
    from sslray.cli import main

    from ..conftest import assert_one_line_error
    from .conftest import tiny_space

    missing = tmp_path / "nope"
    cases = [
        ("data", "path", {"choice": [str(tiny_fmnist / "train"), str(missing)]}, [f"data.path={missing}", "nope"]),
        ("train", "batch_size", {"choice": [32, 100000]}, ["train.batch_size=100000", "needs at least"]),
    ]
    for section, key, spec, needles in cases:
        data = tiny_space(tiny_fmnist)
        data[section][key] = spec
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump(data))
        out = tmp_path / f"sweep-{key}"
        assert main(["sweep", str(path), "--out", str(out)]) == 2
        assert_one_line_error(capsys.readouterr().err, str(path), *needles)
        assert not out.exists()


@pytest.mark.parametrize(
    "spec, hint",
    [
        ({"distribution": "log_uniform_values", "min": 0.0001, "max": 0.01}, "{loguniform: [0.0001, 0.01]}"),
        ({"distribution": "uniform", "min": 0.1, "max": 0.5}, "{uniform: [0.1, 0.5]}"),
        ({"distribution": "int_uniform", "min": 1, "max": 4}, "{randint: [1, 4]}"),
        ({"values": [0.1, 0.2]}, "{choice: [0.1, 0.2]}"),
    ],
)
def test_a_wandb_style_distribution_gets_its_sslray_spelling(spec, hint):
    """Issue 17 item 5: W&B sweep configs are what many users have; say how to write one here."""
    with pytest.raises(UserError, match=re.escape(f"method.temperature: {hint}")):
        space_from_dict(space(method__temperature=spec))
