"""Safety (issue 8), each fault injected for real, no mocks:

- a checkpoint whose ``model.pt`` pickles code (``os.system``) is refused by ``load_tensors``,
  ``sslray export``, ``sslray eval`` and ``sslray report`` with one line and exit code 2; the code never
  runs and nothing is written (no half-made eval/report folder either);
- every TCP socket the session's local Ray listens on (GCS, raylet, dashboard + job server, agents,
  workers, the driver) is bound to loopback, and a connection to the machine's other addresses is
  refused; the same for the Ray that ``sslray train`` / ``sweep`` start, sampled while they run, except
  torch's TCPStore of a Ray Train worker group (a known gap, marked xfail);
- ``sslray train`` and ``sslray sweep``, run as the command line with a fresh working folder, HOME and
  TMPDIR, write nothing outside ``--out`` (``--overwrite`` replacing an old sweep folder on the way) but
  Ray's session folder and the few files that Ray, matplotlib and torch keep in HOME / TMPDIR;
- an existing output (run, sweep, prepared dataset, exported backbone) is never replaced without
  ``--overwrite``, and ``--overwrite`` never deletes a folder that sslray did not write.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from sslray.cli import main
from sslray.data.shards import prepare
from sslray.errors import UserError
from sslray.methods.registry import build_method
from sslray.recipe import recipe_from_dict
from sslray.runs.checkpoint import MODEL, STATE, load_tensors, read_state, write_checkpoint

SUBPROCESS_TIMEOUT_S = 300
# A user's shell: without what conftest's use_loopback() and the session's Ray put into this process.
USER_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GLOO_"))}


@pytest.fixture(scope="module")
def tiny_fmnist(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fmnist")
    prepare("fashion-mnist", root, split="train", limit=256, rows_per_shard=128, workers=1)
    prepare("fashion-mnist", root, split="test", limit=128, workers=1)
    return root


def tiny_recipe(data: Path, **train) -> dict:
    """A tiny ViT SimCLR on 128 images at 16 px: seconds per epoch on one CPU."""
    return {
        "method": {"name": "simclr", "temperature": 0.2, "proj_hidden_dim": 32, "proj_dim": 16},
        "backbone": {"name": "vit_tiny", "img_size": 16, "patch_size": 4, "in_chans": 1, "depth": 1},
        "data": {"path": str(data / "train"), "knn_bank": str(data / "train"), "knn_query": str(data / "test"),
                 "limit": 128, "knn_bank_limit": 256, "knn_query_limit": 128, "augment": {"size": 16}},
        "optim": {"name": "adamw", "base_lr": 1e-3},
        "train": {"epochs": 1, "batch_size": 32, "warmup_epochs": 0, **train},
        "scaling": {"num_workers": 1},
    }


def tiny_space(data: Path, **train) -> dict:
    """Two one-epoch trials (a grid over the temperature), run one after the other."""
    space = tiny_recipe(data, **train)
    space["method"]["temperature"] = {"grid": [0.1, 0.2]}
    space["tune"] = {"seed": 0, "scheduler": {"name": "fifo"}, "metric": "loss"}
    return space


# The command-line runs skip the online kNN (two more Ray Data passes): what they check is where files go.
NO_KNN = {"knn_every": 0}


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


class RunsCode:
    """Unpickling this runs a shell command: what a tampered checkpoint would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def plant_code(checkpoint: Path, marker: Path) -> None:
    """Replace model.pt by a pickle that touches ``marker`` when loaded without weights_only, and update
    state.json's recorded size so that the checkpoint is otherwise complete (not skipped as cut off)."""
    state_dict = build_method(read_state(checkpoint)["recipe"]).state_dict()
    torch.save({**state_dict, "payload": RunsCode(f"touch {shlex.quote(str(marker))}")}, checkpoint / MODEL)
    state = read_state(checkpoint)
    state["files"][MODEL] = (checkpoint / MODEL).stat().st_size
    (checkpoint / STATE).write_text(json.dumps(state, indent=2))


def assert_one_line_error(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and err.startswith("sslray: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


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


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv6 socket bound to 127.0.0.1
    return (mapped or address).is_loopback


def session_processes(session_dir: str) -> dict[int, str]:
    """The test process, every process it started (GCS, raylet, dashboard and its modules, agents, the
    workers under the raylet), and any process whose command line names this Ray session's folder."""
    me = psutil.Process()
    found = {me.pid: "driver (this test process)"}
    for proc in me.children(recursive=True):
        try:
            found[proc.pid] = proc.name()
        except psutil.NoSuchProcess:
            pass
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if session_dir in " ".join(proc.info["cmdline"] or []):
            found[proc.pid] = proc.info["name"]
    return found


def pid_of_worker() -> int:
    return os.getpid()


def gloo_interface_of_worker() -> str | None:
    return os.environ.get("GLOO_SOCKET_IFNAME")


class PidActor:
    def pid(self) -> int:
        return os.getpid()


def test_every_port_of_the_local_ray_listens_on_loopback_only(ray_local):
    node = ray_local._private.worker.global_worker.node
    info = node.address_info
    # A task and an actor: their worker processes (and their gRPC servers) exist while we look.
    actor = ray_local.remote(num_cpus=0)(PidActor).remote()
    worker_pids = {ray_local.get(ray_local.remote(num_cpus=0)(pid_of_worker).remote()),
                   ray_local.get(actor.pid.remote())}

    processes = session_processes(info["session_dir"])
    assert worker_pids <= set(processes)
    listening = [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in processes]
    report = "\n".join(f"{processes[pid]} (pid {pid}) {ip}:{port}" for pid, ip, port in sorted(listening))
    print(f"listening sockets of the session's Ray:\n{report}")

    dashboard_host, dashboard_port = info["webui_url"].rsplit(":", 1)
    assert dashboard_host == "127.0.0.1"
    gcs_port = int(info["gcs_address"].rsplit(":", 1)[1])
    expected = {"gcs_server": gcs_port, "dashboard + job server": int(dashboard_port),
                "raylet": node.node_manager_port, "dashboard agent": info["dashboard_agent_listen_port"],
                "metrics agent": info["metrics_export_port"]}
    ports = {port for _, _, port in listening}
    # A port Ray chose not to open (-1, e.g. the agent's HTTP port when its default is taken) is left out.
    assert {name: port for name, port in expected.items() if port > 0 and port not in ports} == {}, report
    assert [entry for entry in listening if not is_loopback(entry[1])] == [], report

    # What someone on the network would try: every port, at every address of this machine but loopback.
    outside = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
               if a.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(a.address)
               and not a.address.startswith("fe80")]
    reached = []
    for ip in outside:
        for port in sorted(ports):
            try:
                socket.create_connection((ip, port), timeout=1).close()
                reached.append(f"{ip}:{port}")
            except OSError:
                pass
    assert reached == [], f"reachable from outside: {reached}\n{report}"
    ray_local.kill(actor)
    # Ray Train's gloo groups on this Ray listen on the loopback interface, whatever the host name resolves to.
    assert ray_local.get(ray_local.remote(num_cpus=0)(gloo_interface_of_worker).remote()) == "lo"


@pytest.mark.parametrize("given, local_only, gloo_interface", [
    ({}, "0", "lo"),
    ({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}, "1", None),  # the user opened the node: gloo left alone
    ({"GLOO_SOCKET_IFNAME": "eth1"}, "0", "eth1"),
])
def test_loopback_defaults_never_override_the_users_settings(given, local_only, gloo_interface):
    code = ("import json, os; from sslray.cluster import use_loopback; use_loopback(); print(json.dumps("
            "[os.environ.get('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'), os.environ.get('GLOO_SOCKET_IFNAME')]))")
    result = subprocess.run([sys.executable, "-c", code], env={**USER_ENV, **given}, capture_output=True,
                            text=True, timeout=60)
    assert json.loads(result.stdout) == [local_only, gloo_interface], result.stderr


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
            self.proc = subprocess.Popen([sys.executable, "-m", "sslray.cli", *self.argv], cwd=self.cwd, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

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
    places = {"cwd": root / "cwd", "home": root / "home", "data": data,
              # Under /tmp itself: Ray's Unix sockets live in TMPDIR/ray/session_*/sockets (107 bytes at most).
              "tmpdir": Path(tempfile.mkdtemp(prefix="sslray-safety-", dir="/tmp"))}
    for place in places.values():
        place.mkdir(exist_ok=True)
    return places


@pytest.fixture(scope="module")
def cli_runs(tiny_fmnist, tmp_path_factory) -> dict[str, CliRun]:
    """``sslray train`` into a new folder and ``sslray sweep --overwrite`` over an old sweep folder, both
    started at once (two local Rays side by side: their start-up waits overlap), with the listening
    sockets of their process trees sampled twice a second while they run."""
    train = CliRun(["train", "recipe.yaml", "--out", "runs/r1"], Path("runs/r1"),
                   fresh_places(tmp_path_factory.mktemp("train"), tiny_fmnist))
    (train.cwd / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe(tiny_fmnist, **NO_KNN)))
    sweep = CliRun(["sweep", "space.yaml", "--out", "sweeps/s1", "--overwrite"], Path("sweeps/s1"),
                   fresh_places(tmp_path_factory.mktemp("sweep"), tiny_fmnist))
    (sweep.cwd / "space.yaml").write_text(yaml.safe_dump(tiny_space(tiny_fmnist, **NO_KNN)))
    old = sweep.cwd / sweep.out
    old.mkdir(parents=True)
    (old / "space.yaml").write_text(yaml.safe_dump(tiny_space(tiny_fmnist)))
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
THIRD_PARTY_IN_HOME = [".ray", ".ray/auth_token", ".cache", ".cache/matplotlib", ".cache/matplotlib/fontlist-v*.json",
                       ".config", ".config/matplotlib"]


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
    assert len((out / "leaderboard.csv").read_text().strip().splitlines()) == 1 + 2
    assert_written_only_under_out(run)


def off_loopback(run: CliRun) -> dict[tuple[int, str, int], set[str]]:
    return {key: names for key, names in run.listening.items() if not is_loopback(key[1])}


def is_torch_store(key: tuple[int, str, int], names: set[str]) -> bool:
    """torch's TCPStore, the rendezvous of a Ray Train worker group: rank 0 listens on every interface."""
    return key[1] in ("::", "0.0.0.0") and any("RayTrainWorker" in name for name in names)


def test_the_command_lines_ray_listens_on_loopback_but_for_torchs_store(cli_runs):
    for command, run in cli_runs.items():
        print(f"{command}: listening sockets of the process tree (pid, address, port: process names)")
        for key, names in sorted(run.listening.items()):
            print(f"  {key}: {', '.join(sorted(names))}")
        names = set().union(*run.listening.values())
        assert {"gcs_server", "raylet"} <= names, names
        assert {key: names for key, names in off_loopback(run).items() if not is_torch_store(key, names)} == {}
    # The train run's worker group was seen (its sockets sampled), so the test below checks something.
    assert any("RayTrainWorker" in name for names in cli_runs["train"].listening.values() for name in names)


@pytest.mark.xfail(strict=True, reason=(
    "torch's TCPStore binds every interface ('::') for the whole run; torch has no setting for its address. "
    "Fix: rank 0 creates the store on a socket bound to 127.0.0.1 (TCPStore(master_listen_fd=...)) and "
    "init_process_group(store=...) instead of Ray Train's env:// set-up, on a loopback-only node."))
def test_the_train_runs_process_group_store_listens_on_loopback(cli_runs):
    assert off_loopback(cli_runs["train"]) == {}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(params=["train", "sweep"])
def results_command(request, tiny_fmnist, tmp_path):
    """(command, input YAML, marker file of its results folder) for train and for sweep."""
    command = request.param
    path = tmp_path / f"{command}.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_fmnist) if command == "train" else tiny_space(tiny_fmnist)))
    return command, str(path), "config.yaml" if command == "train" else "space.yaml"


def test_an_existing_results_folder_is_kept_without_overwrite(results_command, tmp_path, capsys):
    command, yaml_path, marker = results_command
    old = tmp_path / "old"
    old.mkdir()
    (old / marker).write_text("method: {name: simclr}\n")
    (old / "old.txt").write_text("results of last week")
    kept = folder_bytes(old)
    assert main([command, yaml_path, "--out", str(old)]) == 2
    assert_one_line_error(capsys.readouterr().err, str(old), "already exists", "--overwrite")
    assert folder_bytes(old) == kept


def test_overwrite_never_deletes_a_folder_sslray_did_not_write(results_command, tmp_path, capsys):
    command, yaml_path, marker = results_command
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a run")
    (mine / "sub").mkdir()
    (mine / "sub" / "data.bin").write_bytes(os.urandom(64))
    kept = folder_bytes(mine)
    assert main([command, yaml_path, "--out", str(mine), "--overwrite"]) == 2
    assert_one_line_error(capsys.readouterr().err, str(mine), f"no {marker}")
    assert folder_bytes(mine) == kept


def test_resume_and_overwrite_together_are_refused(results_command, tmp_path, capsys):
    command, yaml_path, marker = results_command
    old = tmp_path / "old"
    old.mkdir()
    (old / marker).write_text("method: {name: simclr}\n")
    kept = folder_bytes(old)
    argv = [command, yaml_path] if command == "train" else [command]
    assert main([*argv, "--resume", str(old), "--overwrite"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--resume", "--overwrite")
    assert folder_bytes(old) == kept


def test_prepare_into_an_existing_dataset_is_refused_from_the_command_line(tiny_fmnist, tmp_path, capsys):
    out = tmp_path / "data"
    shutil.copytree(tiny_fmnist / "test", out / "test")
    kept = folder_bytes(out)
    assert main(["data", "prepare", "fashion-mnist", str(out), "--split", "test", "--limit", "8"]) == 2
    assert_one_line_error(capsys.readouterr().err, str(out / "test"), "already exists", "--overwrite")
    assert folder_bytes(out) == kept


@pytest.mark.parametrize("existing", ["out.pt", "out.json"])
def test_export_over_an_existing_file_is_refused(clean_run, tmp_path, capsys, existing):
    (tmp_path / existing).write_bytes(b"someone's file")
    assert main(["export", str(clean_run), str(tmp_path / "out.pt")]) == 2
    assert_one_line_error(capsys.readouterr().err, str(tmp_path / existing), "already exists", "--overwrite")
    assert folder_bytes(tmp_path) == {existing: b"someone's file"}
