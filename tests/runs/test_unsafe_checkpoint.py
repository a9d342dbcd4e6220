"""A checkpoint whose ``model.pt`` pickles code (``os.system``) is refused by ``load_tensors``,
``sslray export``, ``sslray eval`` and ``sslray report`` with one line and exit code 2; the code never runs
and nothing is written (no half-made eval/report folder either). The fault is injected for real, no mocks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from sslray.cli import main
from sslray.errors import UserError
from sslray.methods.registry import build_method
from sslray.runs.checkpoint import MODEL, STATE, load_tensors, read_state, sha256

from ..conftest import assert_one_line_error


class RunsCode:
    """Unpickling this runs a shell command: what a tampered checkpoint would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def plant_code(checkpoint: Path, marker: Path) -> None:
    """Replace model.pt by a pickle that touches ``marker`` when loaded without weights_only, and update
    state.json's recorded size and digest, as a tamperer would, so that the checkpoint is otherwise intact
    (not refused as cut off or damaged): only weights_only stands between the file and the payload."""
    state_dict = build_method(read_state(checkpoint)["recipe"]).state_dict()
    torch.save({**state_dict, "payload": RunsCode(f"touch {shlex.quote(str(marker))}")}, checkpoint / MODEL)
    state = read_state(checkpoint)
    state["files"][MODEL] = {"bytes": (checkpoint / MODEL).stat().st_size, "sha256": sha256(checkpoint / MODEL)}
    (checkpoint / STATE).write_text(json.dumps(state, indent=2))


def test_a_checkpoint_that_pickles_code_is_refused_everywhere(ray_local, clean_run, tiny_fmnist, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(clean_run, run_dir)
    assert main(["export", str(run_dir), str(tmp_path / "before.pt")]) == 0  # the run is sound but for the plant
    marker = tmp_path / "pwned"
    model = run_dir / "checkpoints" / "best" / MODEL
    for checkpoint in (model.parent, run_dir / "checkpoints" / "checkpoint_000000"):
        plant_code(checkpoint, marker)
    capsys.readouterr()

    with pytest.raises(UserError, match=re.escape(str(model)) + ".*weights_only=True"):
        load_tensors(model)

    exported = tmp_path / "out.pt"
    assert main(["export", str(run_dir), str(exported)]) == 2
    assert_one_line_error(capsys.readouterr().err, str(model), "weights_only=True")
    assert not exported.exists() and not exported.with_suffix(".json").exists()

    for command in (["eval", str(run_dir), "--protocol", "knn"], ["report", str(run_dir)]):
        out = tmp_path / command[0]
        assert main([*command, "--data", str(tiny_fmnist), "--out", str(out)]) == 2
        assert_one_line_error(capsys.readouterr().err, str(model), "weights_only=True")
        # No half-made output is left behind for the next try to need --overwrite.
        assert not out.exists()
    assert not (run_dir / "eval").exists()

    assert not marker.exists()
    # The plant is live: the same file loaded the unsafe way runs the command.
    torch.load(model, weights_only=False)
    assert marker.exists()
