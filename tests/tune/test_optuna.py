"""``tune.search: optuna`` end to end on the real local Ray (issue 17 item 5): the ``optuna`` extra
installs it, Ray Tune's OptunaSearch samples the space, and the leaderboard ranks what it tried."""

from __future__ import annotations

import yaml

from sslray.cli import main

from ..conftest import read_leaderboard
from .conftest import tiny_space


def test_a_two_trial_optuna_sweep(ray_local, tiny_fmnist, tmp_path):
    data = tiny_space(tiny_fmnist, search="optuna", num_samples=2, scheduler={"name": "fifo"}, metric="knn_top1")
    data["train"]["epochs"] = 1
    data["method"]["temperature"] = {"loguniform": [0.05, 0.5]}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["sweep", str(path), "--out", str(tmp_path / "sweep")]) == 0
    rows, baselines = read_leaderboard(tmp_path / "sweep")
    temperatures = [float(r["method.temperature"]) for r in rows]
    assert [r["status"] for r in rows] == ["done", "done"] and set(baselines) == {"random-init", "raw-pixels"}
    assert all(0.05 <= t <= 0.5 for t in temperatures) and temperatures[0] != temperatures[1]
    assert float(rows[0]["best knn_top1"]) >= float(rows[1]["best knn_top1"])
