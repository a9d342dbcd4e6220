"""A sweep across SimCLR, VICReg and Barlow Twins, each with its own knob: validated per method before
Ray starts, run end to end on the real local Ray, and shown in a leaderboard where each trial lists
the knobs of its method and "-" for the others."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from sslray.cli import main
from sslray.errors import UserError
from sslray.tune.space import space_from_dict

from ..conftest import read_leaderboard
from .conftest import tiny_space


def root_hparams_config(sweep_dir) -> tuple[list[str], list[str]]:
    """The hyperparameter names and metric tags of the experiment summary in the sweep root's event file."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    (events,) = sweep_dir.glob("events.out.tfevents.*")
    for event in EventFileLoader(str(events)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("experiment"):
                    experiment = data.experiment
                    return [h.name for h in experiment.hparam_infos], [m.name.tag for m in experiment.metric_infos]
    raise AssertionError(f"no HParams experiment summary in {events}")


OWN_KNOB = {"simclr": "method.temperature", "vicreg": "method.variance_weight", "barlow_twins": "method.offdiag_weight"}
TERMS = {
    "simclr": {"pos_top1"},
    "vicreg": {"invariance", "variance", "covariance"},
    "barlow_twins": {"on_diagonal", "off_diagonal"},
}


def three_method_space(data_dir, **tune_section) -> dict:
    data = tiny_space(data_dir, **tune_section)
    data["method"].update(
        name={"grid": ["simclr", "vicreg", "barlow_twins"]},
        temperature={"choice": [0.2, 0.3]},
        variance_weight={"uniform": [20.0, 30.0]},
        offdiag_weight={"loguniform": [1e-3, 1e-2]},
    )
    return data


def test_each_methods_knobs_are_validated_for_that_method_only(tmp_path):
    data = three_method_space(tmp_path)
    space = space_from_dict(data, "rr")
    assert space.methods == ["simclr", "vicreg", "barlow_twins"]
    for method, knob in OWN_KNOB.items():
        config = {**space.first_config(), "method.name": method}
        recipe = space.trial_recipe(config)["method"]
        assert set(recipe) == {"name", knob.split(".")[1], "proj_hidden_dim", "proj_dim"}
        assert {k for k in space.applicable(config) if k.startswith("method.")} == {"method.name", knob}

    bad = three_method_space(tmp_path)
    bad["method"]["offdiag_weight"] = {"uniform": [-0.01, 0.01]}  # the low end is out of range
    with pytest.raises(UserError, match=r"method.name=barlow_twins\): method.offdiag_weight: -0.01 is out of range"):
        space_from_dict(bad, "rr")
    typo = three_method_space(tmp_path)
    typo["method"]["variance_weigth"] = 25.0
    with pytest.raises(UserError, match="method.variance_weigth: not a knob of simclr or vicreg or barlow_twins"):
        space_from_dict(typo, "rr")


@pytest.mark.parametrize("method, knob", [("vicreg", "variance_weight"), ("barlow_twins", "offdiag_weight")])
def test_pbt_may_perturb_the_loss_weights(tmp_path, method, knob):
    data = tiny_space(tmp_path, scheduler="pbt")
    data["method"] = {"name": method, knob: {"loguniform": [1e-3, 30.0]}, "proj_hidden_dim": 32, "proj_dim": 16}
    space = space_from_dict(data, "pbt")
    assert space.tune.options.mutated_keys(space.knobs) == [f"method.{knob}"]


def test_sweep_over_three_methods_shows_each_trials_own_knobs(ray_local, tiny_fmnist, tmp_path):
    data = three_method_space(tiny_fmnist, scheduler="fifo", num_samples=1)
    data["train"]["epochs"] = 1
    space_path = tmp_path / "space.yaml"
    space_path.write_text(yaml.safe_dump(data))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", str(space_path), "--out", str(sweep_dir)]) == 0

    rows, _ = read_leaderboard(sweep_dir)
    assert sorted(r["method"] for r in rows) == ["barlow_twins", "simclr", "vicreg"]
    for row in rows:
        assert row["status"] == "done" and 0.0 <= float(row["best knn_top1"]) <= 1.0
        for method, knob in OWN_KNOB.items():
            if method == row["method"]:
                float(row[knob])  # the sampled value, a number
            else:
                assert row[knob] == "", f"{knob} shown for a {row['method']} trial"  # empty: pandas reads NaN
    assert float(next(r for r in rows if r["method"] == "vicreg")["method.variance_weight"]) == pytest.approx(
        25.0, abs=5.0
    )
    # The sweep root's HParams config lists every knob of every method and the metric first (issue 17
    # item 2): TensorBoard would otherwise take its columns from one trial's summary.
    knobs, metrics = root_hparams_config(sweep_dir)
    assert knobs[0] == "method.name" and set(knobs) == {"method.name", *OWN_KNOB.values()}
    assert metrics[:3] == ["hparams/best_knn_top1", "hparams/best_epoch_knn_top1", "hparams/knn_top1"]
    markdown = (sweep_dir / "leaderboard.md").read_text()
    assert all(k in markdown.splitlines()[0] for k in OWN_KNOB.values())

    # Each trial trained its own method with only its own knobs, to a finite loss with its own terms.
    trials = [p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file()]
    assert len(trials) == 3
    for trial in trials:
        method = yaml.safe_load((trial / "config.yaml").read_text())["method"]
        own = OWN_KNOB[method["name"]].split(".")[1]
        assert own in method and not (set(OWN_KNOB[m].split(".")[1] for m in OWN_KNOB) - {own}) & set(method)
        [result] = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
        assert math.isfinite(result["loss"]) and TERMS[method["name"]] <= set(result)
