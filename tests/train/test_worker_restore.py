"""The worker loop restored from a checkpoint with nothing left to train (what PBT does when it clones
a trial that has already finished): it reports the restored model's last metrics once, with a fresh
checkpoint, instead of ending without a result."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from ray import tune

from sslray.runs.checkpoint import read_state
from sslray.train.worker import run_worker

from ..tune.conftest import tiny_space


class FolderSession:
    """One worker in this process that keeps what it is given: the loop's surroundings, not under test."""

    rank, world, device = 0, 1, torch.device("cpu")

    def __init__(self, keep: Path, restore_from: Path | None = None) -> None:
        self.keep, self.restore_from, self.reports = keep, restore_from, []

    def prepare_model(self, model):
        return model

    def get_checkpoint(self):
        return tune.Checkpoint.from_directory(str(self.restore_from)) if self.restore_from else None

    def checkpoint(self, folder: str) -> Path:
        kept = self.keep / f"checkpoint_{len(self.reports)}"
        shutil.copytree(folder, kept)  # the loop deletes its temporary folder after the report
        return kept

    def report(self, metrics, checkpoint=None) -> None:
        self.reports.append((dict(metrics), checkpoint))


def test_a_restore_past_the_last_epoch_reports_the_restored_metrics_once(ray_local, tiny_fmnist, tmp_path):
    space = tiny_space(tiny_fmnist)
    space.pop("tune")
    space["train"]["epochs"] = 1
    finished = FolderSession(tmp_path / "finished")
    run_worker({"recipe": space, "run_dir": str(tmp_path / "run_a")}, finished)
    [(last, checkpoint)] = finished.reports
    assert checkpoint is not None and last["epoch"] == 1

    clone = FolderSession(tmp_path / "clone", restore_from=checkpoint)
    space["method"]["temperature"] = 0.5  # the cloning trial's own (perturbed) config
    run_worker({"recipe": space, "run_dir": str(tmp_path / "run_b")}, clone)
    [(metrics, copied)] = clone.reports
    assert metrics["epoch"] == 1 and metrics["resumed_from_epoch"] == 1
    assert metrics["knn_top1"] == last["knn_top1"] and metrics["loss"] == last["loss"]
    state = read_state(copied)
    assert state["epoch"] == 0 and state["recipe"]["method"]["temperature"] == 0.5
