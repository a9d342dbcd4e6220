"""What a sweep prints: sslray's progress lines on the console, Ray's, Tune's and the trials' output in
``SWEEP/logs/driver.log``; a table redrawn in place on a terminal; ``--verbose`` brings Tune's output back.

Each test runs the real CLI in its own process (the console is the process's file descriptors) against
the test session's Ray."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import tiny_space

TRIALS, EPOCHS = 3, 2


def _space(tiny_fmnist: Path, tmp_path: Path, trials: int = TRIALS, epochs: int = EPOCHS) -> Path:
    data = tiny_space(tiny_fmnist, num_samples=trials, scheduler="fifo")
    data["method"]["temperature"] = {"loguniform": [0.1, 0.5]}
    data["train"]["epochs"] = epochs
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _sweep(ray_local, space: Path, out: Path, *options: str, **popen) -> subprocess.CompletedProcess:
    address = ray_local.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "sslray.cli", "sweep", str(space), "--out", str(out), "--address", address]
    return subprocess.run([*command, *options], timeout=600, **popen)


def test_a_quiet_sweep_prints_sslrays_lines_and_logs_the_rest(ray_local, tiny_fmnist, tmp_path):
    out = tmp_path / "sweep"
    done = _sweep(ray_local, _space(tiny_fmnist, tmp_path), out, capture_output=True, text=True)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    lines = console.splitlines()
    # Progress: a start, an epoch line per epoch and an end per trial, the header, the leaderboard.
    assert len(lines) <= 20 + TRIALS * (EPOCHS + 2) + TRIALS + 2, console
    assert "Traceback" not in console and "╭" not in console and "\x1b[" not in console, console
    for i in range(1, TRIALS + 1):
        assert any(f"trial {i}/{TRIALS} " in line and "started  temperature=" in line for line in lines), console
        epoch_lines = [line for line in lines if f"trial {i}/{TRIALS} " in line and "  knn_top1 0." in line]
        assert [line.split(" epoch ")[1][:3] for line in epoch_lines] == ["1/2", "2/2"], console
    assert sum(f"done at epoch {EPOCHS}/{EPOCHS}: best knn_top1 0." in line for line in lines) == TRIALS, console
    assert "ETA " in console and f"{TRIALS}/{TRIALS} done, 0 running" in console, console
    assert any(line.startswith("best: ") for line in lines), console  # the leaderboard follows
    # Everything else: Tune's experiment box, and the trials' own output that Ray forwards to the driver.
    log = (out / "logs" / "driver.log").read_text()
    assert "Configuration for experiment" in log and "(run_trial pid=" in log and "epoch 1/2" in log, log[-3000:]
    assert f"logs:    {out}/logs/driver.log" in console


def test_on_a_terminal_the_table_is_redrawn_in_place(ray_local, tiny_fmnist, tmp_path):
    try:
        leader, follower = pty.openpty()
    except OSError as err:  # a container without /dev/ptmx
        pytest.skip(f"no pseudo-terminal on this machine: {err}")
    address = ray_local.get_runtime_context().gcs_address
    space = _space(tiny_fmnist, tmp_path, trials=2, epochs=1)
    command = [sys.executable, "-m", "sslray.cli", "sweep", str(space), "--out", str(tmp_path / "sweep")]
    driver = subprocess.Popen([*command, "--address", address], stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    shown = b""
    try:
        while True:  # read as it comes: a full terminal buffer would block the sweep
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the sweep closed its end
                break
            if not chunk:
                break
            shown += chunk
        errors = driver.stderr.read().decode()
        driver.wait(timeout=600)
    finally:
        os.close(leader)
        if driver.poll() is None:
            driver.kill()
    text = shown.decode()
    assert driver.returncode == 0, text + errors
    assert "F\x1b[0J" in text  # cursor up and clear: the table replaces itself
    assert "#  trial" in text and "knn_top1" in text and "elapsed, 2/2 done, 0 running" in text, text
    assert "] trial " not in text, text  # no plain event lines on a terminal
    assert "Traceback" not in text + errors


def test_verbose_shows_tunes_own_output(ray_local, tiny_fmnist, tmp_path):
    out = tmp_path / "sweep"
    done = _sweep(
        ray_local, _space(tiny_fmnist, tmp_path, trials=1, epochs=1), out, "--verbose", capture_output=True, text=True
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    assert "Trial status" in console and "(run_trial pid=" in console, console
    assert not (out / "logs").exists()
