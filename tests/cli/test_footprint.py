"""What ``sslray train`` and ``sslray sweep`` leave behind, run as the command line with a fresh working
folder, HOME and TMPDIR (the two at once, their listening sockets sampled while they run):

- they write nothing outside ``--out`` (``--overwrite`` replacing an old sweep folder on the way) but
  Ray's session folder and the few files that Ray, matplotlib and torch keep in HOME / TMPDIR;
- every socket of the Ray they start listens on loopback, torch's TCPStore of a Ray Train worker group
  included (``sslray.train.process_group`` binds it to the node's address: 127.0.0.1 here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import psutil
import pytest
import yaml

from ..conftest import USER_ENV, is_loopback, tiny_grid, tiny_recipe

SUBPROCESS_TIMEOUT_S = 300


# The command-line runs skip the online kNN (two more Ray Data passes): what they check is where files go.
NO_KNN = {"knn_every": 0}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file, folder and link under ``root``: kind, size and modification time."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            stat = path.lstat()
            entries[str(path.relative_to(root))] = (stat.st_mode, stat.st_size, stat.st_mtime_ns)
    return entries


def changed(before: dict, after: dict) -> set[str]:
    return {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))


@dataclass
class CliRun:
    """One ``python -m sslray.cli ...`` with a working folder, HOME and TMPDIR of its own."""

    argv: list[str]
    out: Path
    places: dict[str, Path]
    proc: subprocess.Popen | None = None
    before: dict[str, dict] = field(default_factory=dict)
    writes: dict[str, set[str]] = field(default_factory=dict)
    listening: dict[tuple[int, str, int], set[str]] = field(default_factory=dict)  # (pid, ip, port): names

    @property
    def cwd(self) -> Path:
        return self.places["cwd"]

    @property
    def log(self) -> Path:
        return self.cwd.parent / "output.txt"

    def start(self) -> None:
        # Caches and temp files at their defaults, i.e. under HOME and TMPDIR.
        env = {k: v for k, v in USER_ENV.items() if not k.startswith(("XDG_", "MPLCONFIGDIR", "TORCH_HOME", "HF_"))}
        env.update(HOME=str(self.places["home"]), TMPDIR=str(self.places["tmpdir"]))
        self.before = {name: snapshot(place) for name, place in self.places.items()}
        with open(self.log, "w") as log:  # a file, not a pipe: nothing blocks while we watch the sockets
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sslray.cli", *self.argv],
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def record_listening(self, connections: list) -> None:
        try:
            tree = {p.pid: p for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]}
        except psutil.NoSuchProcess:
            return
        for c in connections:
            if c.status == psutil.CONN_LISTEN and c.pid in tree:
                try:
                    self.listening.setdefault((c.pid, c.laddr.ip, c.laddr.port), set()).add(tree[c.pid].name())
                except psutil.NoSuchProcess:
                    pass

    def finish(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            with open(self.log, "a") as log:
                log.write(f"\n[killed after {SUBPROCESS_TIMEOUT_S} s]\n")
        self.writes = {name: changed(self.before[name], snapshot(place)) for name, place in self.places.items()}

    def assert_succeeded(self) -> None:
        assert self.proc.returncode == 0, f"sslray {' '.join(self.argv)}:\n{self.log.read_text()[-8000:]}"


def fresh_places(root: Path, data: Path) -> dict[str, Path]:
    places = {
        "cwd": root / "cwd",
        "home": root / "home",
        "data": data,
        # Under /tmp itself: Ray's Unix sockets live in TMPDIR/ray/session_*/sockets (107 bytes at most).
        "tmpdir": Path(tempfile.mkdtemp(prefix="sslray-safety-", dir="/tmp")),
    }
    for place in places.values():
        place.mkdir(exist_ok=True)
    return places


@pytest.fixture(scope="module")
def cli_runs(tiny_fmnist, tmp_path_factory) -> dict[str, CliRun]:
    """``sslray train`` into a new folder and ``sslray sweep --overwrite`` over an old sweep folder, both
    started at once (two local Rays side by side: their start-up waits overlap), with the listening
    sockets of their process trees sampled twice a second while they run."""
    train = CliRun(
        ["train", "recipe.yaml", "--out", "runs/r1"],
        Path("runs/r1"),
        fresh_places(tmp_path_factory.mktemp("train"), tiny_fmnist),
    )
    (train.cwd / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe(tiny_fmnist, **NO_KNN)))
    sweep = CliRun(
        ["sweep", "space.yaml", "--out", "sweeps/s1", "--overwrite"],
        Path("sweeps/s1"),
        fresh_places(tmp_path_factory.mktemp("sweep"), tiny_fmnist),
    )
    (sweep.cwd / "space.yaml").write_text(yaml.safe_dump(tiny_grid(tiny_fmnist, **NO_KNN)))
    old = sweep.cwd / sweep.out
    old.mkdir(parents=True)
    (old / "space.yaml").write_text(yaml.safe_dump(tiny_grid(tiny_fmnist)))
    (old / "old.txt").write_text("from the last sweep")
    runs = {"train": train, "sweep": sweep}
    try:
        for run in runs.values():
            run.start()
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while time.monotonic() < deadline and any(run.proc.poll() is None for run in runs.values()):
            connections = psutil.net_connections(kind="inet")
            for run in runs.values():
                if run.proc.poll() is None:
                    run.record_listening(connections)
            time.sleep(0.5)
        for run in runs.values():
            run.finish()
        yield runs
    finally:
        for run in runs.values():
            if run.proc is not None and run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)
            shutil.rmtree(run.places["tmpdir"], ignore_errors=True)


# Files that libraries write to HOME by design, not sslray code: Ray (token authentication, on by default
# for a local ray.init) stores its token in ~/.ray/auth_token the first time; matplotlib (the sweep's
# leaderboard.png) keeps its font cache in ~/.cache and creates ~/.config/matplotlib.
THIRD_PARTY_IN_HOME = [
    ".ray",
    ".ray/auth_token",
    ".cache",
    ".cache/matplotlib",
    ".cache/matplotlib/fontlist-v*.json",
    ".config",
    ".config/matplotlib",
]


def outside(paths: set[str], folder: str) -> list[str]:
    """Paths neither in ``folder`` nor one of the folders that hold it (created or changed by mkdir)."""
    holders = {str(p) for p in Path(folder).parents}
    return sorted(p for p in paths if p != folder and not p.startswith(folder + "/") and p not in holders)


# Left in TMPDIR (/tmp by default) by libraries: Ray's session folder (logs, sockets, spilled objects);
# the folder of the multiprocessing forkserver that Ray's dashboard starts (killed at ray.shutdown, so
# it cannot remove it); the empty cache folder torch creates when torchvision is imported.
THIRD_PARTY_IN_TMPDIR = ["ray", "ray/*", "pymp-*", "pymp-*/listener-*", "torchinductor_*"]


def unexpected(paths: set[str], allowed: list[str]) -> list[str]:
    return [p for p in sorted(paths) if not any(fnmatch(p, pattern) for pattern in allowed)]


def assert_written_only_under_out(run: CliRun) -> None:
    writes = run.writes
    assert outside(writes["cwd"], str(run.out)) == [], sorted(writes["cwd"])
    assert writes["data"] == set()
    assert unexpected(writes["home"], THIRD_PARTY_IN_HOME) == [], sorted(writes["home"])
    assert unexpected(writes["tmpdir"], THIRD_PARTY_IN_TMPDIR) == [], unexpected(writes["tmpdir"], ["ray/*"])


def test_train_writes_only_under_its_run_folder(cli_runs):
    run = cli_runs["train"]
    run.assert_succeeded()
    assert json.loads((run.cwd / run.out / "result.json").read_text())["metrics"]["epoch"] == 1
    assert_written_only_under_out(run)


def test_sweep_overwrites_an_old_sweep_and_writes_only_under_it(cli_runs):
    run = cli_runs["sweep"]
    run.assert_succeeded()
    out = run.cwd / run.out
    assert not (out / "old.txt").exists()
    assert len((out / "leaderboard.csv").read_text().strip().splitlines()) == 1 + 2  # a loss has no baselines
    assert_written_only_under_out(run)


def off_loopback(run: CliRun) -> dict[tuple[int, str, int], set[str]]:
    return {key: names for key, names in run.listening.items() if not is_loopback(key[1])}


def test_the_command_lines_ray_listens_on_loopback(cli_runs):
    for command, run in cli_runs.items():
        print(f"{command}: listening sockets of the process tree (pid, address, port: process names)")
        for key, names in sorted(run.listening.items()):
            print(f"  {key}: {', '.join(sorted(names))}")
        names = set().union(*run.listening.values())
        assert {"gcs_server", "raylet"} <= names, names
        assert off_loopback(run) == {}
    # The train run's worker group was seen (its sockets sampled), so the test below checks something.
    assert any("RayTrainWorker" in name for names in cli_runs["train"].listening.values() for name in names)


def test_the_train_runs_process_group_store_listens_on_loopback(cli_runs):
    """torch's TCPStore (rank 0's rendezvous, unauthenticated) listened on every interface ('::') for the
    whole run with Ray Train's env:// set-up; sslray.train.process_group binds it to the node's address."""
    assert off_loopback(cli_runs["train"]) == {}
