"""Trials that go wrong end with a status and a reason in the leaderboard; the others are unaffected.

Injected for real in one sweep, crossed with a collapse threshold no embedding can meet
(``train.collapse_std: 0.99``: the online ``embed_std`` check fires after epoch 1):
- lr 1e8: the first optimizer step blows the weights up, the next loss is NaN (caught at that step,
  averaged over ranks so every rank stops at the same one);
- lr 1e4: the loss stays finite through epoch 1 but the weights end it as NaN (caught by the online
  evaluation's non-finite ``embed_std``, before the collapse check);
- lr 1e-3: trains normally, or collapses by the threshold.
None of these stops is an error: Tune records no failure (a retry would only meet the same NaN again),
no NaN weights are checkpointed, and the normal trial finishes.
"""

from __future__ import annotations

import json
from pathlib import Path

from sslray.runs.checkpoint import checkpoint_folders
from sslray.tune.space import space_from_dict
from sslray.tune.sweep import run_sweep

from ..conftest import read_leaderboard
from ..tune.conftest import tiny_space


def test_diverged_and_collapsed_trials_are_reported_and_the_rest_finish(ray_local, tiny_fmnist, tmp_path):
    data = tiny_space(tiny_fmnist, scheduler="fifo", max_concurrent_trials=2, resources_per_trial={"cpu": 0.5})
    data["optim"]["base_lr"] = {"grid": [1e-3, 1e4, 1e8]}
    data["train"]["collapse_std"] = {"grid": [0.0, 0.99]}
    data["train"]["epochs"] = 2
    sweep_dir = tmp_path / "sweep"
    rows = run_sweep(space_from_dict(data, "stops-test"), sweep_dir)
    status = {(r["config"]["optim.base_lr"], r["config"]["train.collapse_std"]): r["status"] for r in rows}
    epochs = {(r["config"]["optim.base_lr"], r["config"]["train.collapse_std"]): r["epochs"] for r in rows}

    fine = next(r for r in rows if r["config"] == {"optim.base_lr": 1e-3, "train.collapse_std": 0.0})
    assert fine["status"] == "done" and fine["epochs"] == 2 and 0.0 <= fine["best"] <= 1.0
    assert status[(1e-3, 0.99)].startswith("collapsed: embed_std")
    assert "< train.collapse_std 0.99 at epoch 1" in status[(1e-3, 0.99)] and epochs[(1e-3, 0.99)] == 1
    for collapse_std in (0.0, 0.99):
        assert status[(1e8, collapse_std)] == (
            "diverged: non-finite loss (nan) at epoch 1, optimizer step 1: lower optim.base_lr or check the data"
        )
        assert status[(1e4, collapse_std)].startswith("diverged: non-finite embeddings (embed_std nan) after epoch 1")
        assert epochs[(1e8, collapse_std)] == epochs[(1e4, collapse_std)] == 1

    board, _ = read_leaderboard(sweep_dir)
    assert board[0]["trial"] == Path(fine["path"]).name  # ranked first: the only one with a real metric
    assert sorted(row["status"].split(":")[0] for row in board) == ["collapsed"] + ["diverged"] * 4 + ["done"]
    for row in rows:
        trial = Path(row["path"])
        # Stopped, not failed: Tune saw no error (nothing retried, no error file).
        assert not (trial / "error.txt").exists() and not (trial / "error.pkl").exists()
        reported = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in reported] == list(range(1, row["epochs"] + 1))
        if row["status"].startswith("diverged"):
            assert reported[-1]["stop_reason"] == row["status"]
            assert not checkpoint_folders(trial)  # NaN weights are never checkpointed
