"""Checkpoint folders: what a training checkpoint holds, and reading it back safely.

A checkpoint is a folder with ``model.pt`` (the SSLMethod's state dict), ``optimizer.pt`` and
``state.json`` (epoch, optimizer step, metrics, the resolved recipe, and the byte size of each tensor
file). Tensors are plain state dicts, so everything loads with ``torch.load(..., weights_only=True)``:
no pickled code runs on load, and a file that would need it is refused.
Ray Train copies the folder into ``RUN_DIR/checkpoints/checkpoint_*`` and keeps the latest K; the
best one by ``knn_top1`` is also copied to ``RUN_DIR/checkpoints/best`` (atomically: temp + rename).

A copy cut off half-way (a killed driver or node, a full disk) leaves a folder with missing or short
files; ``checkpoint_folders`` checks every file against the sizes in ``state.json`` and leaves such a
folder out with a warning, so a resume never starts from it. ``state.json`` also records each tensor
file's SHA-256: bytes changed after the write (a flipped bit on disk, a bad copy) keep the size but not
the digest. Digests are checked where tensors are about to be loaded (``damaged_because``: resume skips
such a checkpoint with a warning; eval, report and export refuse it), not on every listing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from sslray.console import say
from sslray.errors import UserError

MODEL, OPTIMIZER, STATE = "model.pt", "optimizer.pt", "state.json"
TENSOR_FILES = (MODEL, OPTIMIZER)


def write_checkpoint(folder: Path, model_state: dict, optimizer_state: dict, state: dict[str, Any]) -> Path:
    """Write the three files; ``state.json`` last, with the tensor files' sizes (what makes a cut-off
    copy recognisable whatever order a copier writes the files in)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model_state, folder / MODEL)
    torch.save(optimizer_state, folder / OPTIMIZER)
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256(folder / name)} for name in TENSOR_FILES}
    write_text_atomically(folder / STATE, json.dumps({**state, "files": files}, indent=2, default=float) + "\n")
    return folder


def sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _recorded(state: dict, name: str) -> tuple[int | None, str | None]:
    """The size and digest ``state.json`` records for tensor file ``name`` (older checkpoints: size only)."""
    entry = state.get("files", {}).get(name)
    if isinstance(entry, dict):
        return entry.get("bytes"), entry.get("sha256")
    return entry, None


def write_text_atomically(path: Path, text: str) -> None:
    """``path`` holds either its old text or the new one, never a part: temp file + rename."""
    partial = path.parent / f".{path.name}.partial-{os.getpid()}"
    partial.write_text(text)
    os.replace(partial, path)


REQUIRED_STATE = ("epoch", "recipe")  # what resume, eval, report and export read from every state.json


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE).read_text())


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only. A file that needs
    more (pickled classes or functions: code that would run on load) is refused with a UserError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a paragraph; the line naming the blocked global is the one that matters.
        # Without one the file is not a pickle at all (corrupt): callers name it "not readable".
        lines = [line for line in str(err).splitlines() if "GLOBAL" in line or "global" in line.lower()]
        if not lines:
            raise
        detail = lines[0].strip()
        raise UserError(f"{path}: refused to load with weights_only=True ({detail}); sslray checkpoints hold "
                        "tensors only, so this file is not one or was tampered with") from None


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


def incomplete_because(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint (a copy cut off half-way), or None when it is."""
    try:
        state = read_state(folder)
    except FileNotFoundError:
        return f"no {STATE}"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{STATE} is cut off"
    missing = [key for key in REQUIRED_STATE if not isinstance(state, dict) or key not in state]
    if missing:  # not written by sslray's checkpointing (which writes these first of all)
        return f"{STATE} lacks {', '.join(missing)}"
    for name in TENSOR_FILES:
        if not (folder / name).is_file():
            return f"no {name}"
        (expected, _), found = _recorded(state, name), (folder / name).stat().st_size
        if expected is not None and found != expected:
            return f"{name} has {found:,} of {expected:,} bytes"
    return None


def damaged_because(folder: Path) -> str | None:
    """Why ``folder`` cannot be loaded: incomplete, or a tensor file whose bytes differ from the SHA-256
    recorded when it was written; None when it is intact. Reads every tensor file (seconds for GBs)."""
    reason = incomplete_because(folder)
    if reason is not None:
        return reason
    state = read_state(folder)
    for name in TENSOR_FILES:
        _, digest = _recorded(state, name)
        if digest is not None and sha256(folder / name) != digest:
            return f"{name} does not match the SHA-256 in {STATE}: its bytes changed after it was written"
    return None


def newest_intact(folders: list[Path]) -> Path | None:
    """The newest of ``folders`` (complete checkpoints, oldest first) whose tensor files match their
    digests; a damaged one is passed over with a warning that names it."""
    for folder in reversed(folders):
        reason = damaged_because(folder)
        if reason is None:
            return folder
        say(f"warning: ignoring checkpoint {folder}: {reason}", err=True)
    return None


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """Complete checkpoints Ray kept for a run, oldest first: ``RUN_DIR/checkpoints/checkpoint_*`` (Ray
    Train) or ``TRIAL_DIR/checkpoint_*`` (a sweep's in-process trial, stored by Tune). A folder cut off
    while being written is left out, with a warning that names it."""
    complete = []
    for folder in sorted([*(run_dir / "checkpoints").glob("checkpoint_*"), *run_dir.glob("checkpoint_*")]):
        if not folder.is_dir():
            continue
        reason = incomplete_because(folder)
        if reason is None:
            complete.append(folder)
        else:
            say(f"warning: ignoring checkpoint {folder}: {reason} (a write that was cut off)", err=True)
    return sorted(complete, key=lambda p: read_state(p)["epoch"])


def find_checkpoint(path: Path, which: str = "best") -> Path:
    """A checkpoint folder from a run folder (``best`` if present, else the latest) or the folder itself.
    A chosen folder cut off half-way is a UserError; digests are checked by whoever loads the tensors
    (``eval.features.Encoder.build``), so they are read once."""
    path = Path(path)
    if (path / MODEL).is_file():
        return _complete(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder or checkpoint")
    best = path / "checkpoints" / "best"
    if which == "best" and (best / MODEL).is_file():
        return _complete(best)
    folders = checkpoint_folders(path)  # complete ones only
    if not folders:
        raise UserError(f"{path}: no checkpoint found (expected {path}/checkpoints/checkpoint_*/model.pt)")
    return folders[-1]


def _complete(folder: Path) -> Path:
    reason = incomplete_because(folder)
    if reason is not None:
        raise UserError(f"{folder}: incomplete checkpoint ({reason}); use another checkpoint of the run")
    return folder
