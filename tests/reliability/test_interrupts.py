"""Ctrl-C and SIGTERM on real ``sslray train`` / ``sslray sweep`` processes (issue 18 #2): exit 130, one
line naming what was kept and the exact command that continues, and that command finishes the work.

Before: Ray Train's own SIGINT handler made ``train`` exit 1 with no message and no result.json, and
``sweep`` exited 0 with the interrupted trial labelled "stopped early".
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..conftest import read_leaderboard, tiny_recipe
from ..tune.conftest import tiny_space


def sslray(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sslray.cli", *args], cwd=cwd, capture_output=True, text=True)


def interrupt(args: list[str], cwd: Path, ready: str, folder: Path, sig: signal.Signals, timeout: float) -> str:
    """Start ``sslray ARGS``, send ``sig`` once ``folder`` holds a ``ready`` file, and return its one
    ``sslray: interrupted:`` line, after checking that it exited 130 within ``timeout`` seconds."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sslray.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test's signal reaches only this command
    )
    wait_for(ready, folder, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 130, err[-3000:]
    return interrupted_line(err)


def wait_for(pattern: str, folder: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {pattern} under {folder} after {timeout} s"
        time.sleep(0.5)


def interrupted_line(stderr: str) -> str:
    """The one ``sslray: interrupted:`` line; no traceback from sslray itself (lines Ray forwards from its
    actors, prefixed ``(ActorName pid=N)``, are Ray's own; other local Ray instances make it log some)."""
    own = [line for line in stderr.splitlines() if not re.sub(r"\x1b\[[0-9;]*m", "", line).startswith("(")]
    assert not [line for line in own if "Traceback" in line], [line for line in own if "Traceback" in line]
    lines = [line for line in own if line.startswith("sslray: interrupted: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_sigterm_on_train_keeps_the_checkpoints_and_prints_the_resume_command(tiny_fmnist, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_fmnist, epochs=3)))
    run_dir = tmp_path / "run"
    args = ["train", str(recipe), "--out", str(run_dir)]
    line = interrupt(args, tmp_path, "checkpoints/checkpoint_*/state.json", run_dir, signal.SIGTERM, timeout=120)
    assert f"{run_dir} keeps its checkpoints up to epoch " in line
    command = line.split("continue with: ")[1]
    assert command == f"sslray train {recipe} --resume {run_dir}"

    resumed = sslray(shlex.split(command)[1:], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "result.json").read_text())
    assert summary["metrics"]["epoch"] == 3 and summary["metrics"]["resumed_from_epoch"] >= 1


def test_ctrl_c_on_a_sweep_labels_the_trial_interrupted_and_resume_finishes_it(tiny_fmnist, tmp_path):
    space = tiny_space(tiny_fmnist, metric="knn_top1", scheduler={"name": "fifo"}, max_concurrent_trials=1)
    space["method"]["temperature"] = {"grid": [0.1, 0.2]}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    sweep_dir = tmp_path / "sweep"
    line = interrupt(["sweep", str(path), "--out", str(sweep_dir)], tmp_path, "*/checkpoint_*/state.json", sweep_dir,
                     signal.SIGINT, timeout=180)  # fmt: skip
    assert line.endswith(f"continue with: sslray sweep --resume {sweep_dir}")
    statuses = [row["status"] for row in read_leaderboard(sweep_dir)[0]]
    assert any(s.startswith("interrupted at epoch") for s in statuses), statuses
    assert not any(s.startswith("stopped early") for s in statuses), statuses

    resumed = sslray(["sweep", "--resume", str(sweep_dir)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["status"] for row in read_leaderboard(sweep_dir)[0]] == ["done", "done"]
