"""``clean_run``: a small but complete run folder, written directly (no Ray), for the tests that read one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from sslray.methods.registry import build_method
from sslray.recipe import recipe_from_dict
from sslray.runs.checkpoint import write_checkpoint

from ..conftest import tiny_recipe


@pytest.fixture(scope="module")
def clean_run(tiny_fmnist, tmp_path_factory) -> Path:
    """A run folder as ``sslray train`` leaves it (config.yaml, checkpoints/checkpoint_000000 and best),
    written directly."""
    run_dir = tmp_path_factory.mktemp("clean") / "run"
    recipe = recipe_from_dict(tiny_recipe(tiny_fmnist))
    method = build_method(recipe.to_dict())
    optimizer = torch.optim.AdamW(method.parameters())
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(recipe.to_dict()))
    state = {"epoch": 0, "step": 4, "recipe": recipe.to_dict(), "metrics": {"loss": 5.0, "knn_top1": 0.1}}
    latest = write_checkpoint(run_dir / "checkpoints" / "checkpoint_000000", method.state_dict(),
                              optimizer.state_dict(), state)
    shutil.copytree(latest, run_dir / "checkpoints" / "best")
    return run_dir
