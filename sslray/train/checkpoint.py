"""Checkpoint folders: what a training checkpoint holds, and reading it back safely.

A checkpoint is a folder with ``model.pt`` (the SSLMethod's state dict), ``optimizer.pt`` and
``state.json`` (epoch, optimizer step, metrics, the resolved recipe). Tensors are plain state dicts,
so everything loads with ``torch.load(..., weights_only=True)``: no pickled code runs on load.
Ray Train copies the folder into ``RUN_DIR/checkpoints/checkpoint_*`` and keeps the latest K; the
best one by ``knn_top1`` is also copied to ``RUN_DIR/checkpoints/best`` (atomically: temp + rename).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from sslray.errors import UserError

MODEL, OPTIMIZER, STATE = "model.pt", "optimizer.pt", "state.json"


def write_checkpoint(folder: Path, model_state: dict, optimizer_state: dict, state: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model_state, folder / MODEL)
    torch.save(optimizer_state, folder / OPTIMIZER)
    (folder / STATE).write_text(json.dumps(state, indent=2, default=float) + "\n")
    return folder


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE).read_text())


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only."""
    return torch.load(path, map_location=map_location, weights_only=True)


def replace_atomically(source: Path, target: Path) -> None:
    """Copy folder ``source`` to ``target`` so that ``target`` is always either the old or the new copy."""
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    if target.exists():
        target.rename(old)
    partial.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """Complete checkpoints Ray kept for a run, oldest first: ``RUN_DIR/checkpoints/checkpoint_*`` (Ray
    Train) or ``TRIAL_DIR/checkpoint_*`` (a sweep's in-process trial, stored by Tune). A folder without
    state.json is a checkpoint cut off while being written, and is left out."""
    candidates = [*(run_dir / "checkpoints").glob("checkpoint_*"), *run_dir.glob("checkpoint_*")]
    found = [p for p in candidates if (p / STATE).is_file() and (p / MODEL).is_file()]
    return sorted(found, key=lambda p: read_state(p)["epoch"])


def find_checkpoint(path: Path, which: str = "best") -> Path:
    """A checkpoint folder from a run folder (``best`` if present, else the latest) or the folder itself."""
    path = Path(path)
    if (path / MODEL).is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder or checkpoint")
    best = path / "checkpoints" / "best"
    if which == "best" and (best / MODEL).is_file():
        return best
    folders = checkpoint_folders(path)
    if not folders:
        raise UserError(f"{path}: no checkpoint found (expected {path}/checkpoints/checkpoint_*/model.pt)")
    return folders[-1]
