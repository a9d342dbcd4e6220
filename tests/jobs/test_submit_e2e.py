"""``sslray submit`` against a real Ray cluster started with ``ray start --head`` on 127.0.0.1.

The head runs with Ray's token auth the way a user meets it (docs/ray.md §9): a token is generated
in the user's ~/.ray (a temporary HOME here), ``ray start`` turns auth on because it exists, and
``sslray submit`` finds it. The head's node carries the label ``sslray-role=data``; the sweep's
``data.label_selector`` must reach every Ray Data task. The sweep writes to a ``file://`` URI, the same
code path as ``s3://``: trials train in node-local folders mirrored to the storage location.

Skipped where ``ray start`` cannot run (no ``ray`` executable next to this Python); SSLRAY_CLUSTER_TESTS=0
skips it on purpose. The head has its own --temp-dir and ports, and is stopped by killing its own
process tree: ``ray stop`` would also stop the test session's Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sslray.data.shards import ShardOptions, prepare

from ..conftest import read_leaderboard
from ..tune.conftest import tiny_space

RAY = Path(sys.executable).with_name("ray")
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not RAY.is_file() or os.environ.get("SSLRAY_CLUSTER_TESTS") == "0",
        reason="needs the `ray` CLI to start a head node (SSLRAY_CLUSTER_TESTS=0 skips)",
    ),
]
LABEL = {"sslray-role": "data"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_table() -> dict[int, tuple[int, str]]:
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            table[int(entry.name)] = (parent, args)
    return table


def stop_cluster(markers: list[str]) -> None:
    """SIGTERM (then SIGKILL) every process whose command line names this cluster, and their children."""
    table = process_table()
    tree = {pid for pid, (_, args) in table.items() if any(m in args for m in markers)}
    while True:
        children = {pid for pid, (parent, _) in table.items() if parent in tree} - tree
        if not children:
            break
        tree |= children
    tree.discard(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in tree):
            time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


class Head:
    def __init__(self, home: Path, address: str, env: dict[str, str]) -> None:
        self.home, self.address, self.env = home, address, env

    def sslray(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sslray.cli", *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")  # the user's ~ (~/.ray/auth_token) for the head and the client
    temp_dir = tempfile.mkdtemp(prefix="sslray-head-", dir="/tmp")  # short: Ray's unix sockets live here
    gcs, dashboard, client_server, agent = (free_port() for _ in range(4))
    env = {**os.environ, "HOME": str(home), "PATH": f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)  # as a user's fresh shell; the test session's Ray sets some in this process
    subprocess.run([str(RAY), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    assert (home / ".ray" / "auth_token").is_file()
    start = subprocess.run(
        [
            str(RAY),
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(gcs),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--ray-client-server-port",
            str(client_server),
            "--dashboard-agent-listen-port",
            str(agent),
            "--num-cpus",
            "2",
            "--labels",
            ",".join(f"{k}={v}" for k, v in LABEL.items()),
            "--temp-dir",
            temp_dir,
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert "Token authentication is enabled" in start.stdout + start.stderr
        yield Head(home, f"http://127.0.0.1:{dashboard}", env)
    finally:
        stop_cluster([temp_dir, f"127.0.0.1:{gcs}"])
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project folder (the job's working_dir): a search space, nothing else. sslray itself
    travels with the job as a py_module, since this folder has no sslray/ of its own."""
    root = tmp_path_factory.mktemp("project")
    data = root.parent / f"{root.name}-fmnist"
    prepare("fashion-mnist", data, split="train", limit=256, options=ShardOptions(rows_per_shard=128, workers=1))
    prepare("fashion-mnist", data, split="test", limit=128, options=ShardOptions(workers=1))
    space = tiny_space(data, num_samples=1, scheduler={"name": "fifo"})
    space["method"]["temperature"] = {"grid": [0.1, 0.5]}
    space["train"]["epochs"] = 2
    space["data"]["label_selector"] = LABEL
    (root / "search_spaces").mkdir()
    (root / "search_spaces" / "tiny.yaml").write_text(yaml.safe_dump(space))
    bad = {**space, "method": {**space["method"], "temprature": 0.2}}
    (root / "search_spaces" / "typo.yaml").write_text(yaml.safe_dump(bad))
    return root


def test_a_sweep_job_succeeds_and_leaves_its_results_in_storage(ray_head, project, tmp_path):
    store = tmp_path / "bucket"
    out = f"file://{store}/sweeps/tiny"
    done = ray_head.sslray(
        "submit", "search_spaces/tiny.yaml", "--address", ray_head.address, "--out", out, "--follow", cwd=project
    )
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-5000:]
    job_id = next(line.split()[-1] for line in done.stdout.splitlines() if line.startswith("submitted job"))
    assert f"job {job_id} SUCCEEDED" in done.stdout
    # sslray's progress lines and the leaderboard, streamed; Ray's and the trials' own output in the log file,
    # uploaded next to the results.
    assert "trial 1/2 " in logs and "  knn_top1 0." in logs and "best knn_top1" in logs, logs[-5000:]
    assert "(run_trial pid=" not in logs and "Traceback" not in logs
    assert "(run_trial pid=" in (store / "sweeps" / "tiny" / "logs" / "driver.log").read_text()
    assert "no node of this cluster has these labels" not in logs

    sweep = store / "sweeps" / "tiny"
    rows, baselines = read_leaderboard(sweep)
    assert set(baselines) == {"random-init", "raw-pixels"}
    assert sorted(float(r["method.temperature"]) for r in rows) == [0.1, 0.5]
    assert all(r["status"] == "done" and 0.0 <= float(r["best knn_top1"]) <= 1.0 for r in rows)
    assert (sweep / "leaderboard.png").read_bytes()[:4] == b"\x89PNG" and (sweep / "space.yaml").is_file()
    trials = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.startswith("simclr_"))
    assert len(trials) == 2
    for trial in trials:
        # Mirrored by the trial (config, TensorBoard, best checkpoint) and stored by Tune (checkpoints, results).
        assert yaml.safe_load((trial / "config.yaml").read_text())["data"]["label_selector"] == LABEL
        events = EventAccumulator(str(trial), size_guidance={"scalars": 0})
        events.Reload()
        assert [s.step for s in events.Scalars("eval/knn_top1")] == [1, 2]
        assert (trial / "checkpoints" / "best" / "model.pt").is_file()
        assert sorted(p.name for p in trial.glob("checkpoint_*")) == ["checkpoint_000000", "checkpoint_000001"]
        assert [json.loads(line)["epoch"] for line in (trial / "result.json").read_text().splitlines()] == [1, 2]

    listed = ray_head.sslray("submit", "--address", ray_head.address, "--list", cwd=project)
    assert listed.returncode == 0 and any(
        job_id in line and "SUCCEEDED" in line and out in line for line in listed.stdout.splitlines()
    )

    # Every Ray Data task of the job (reads, decode + augment) carried the selector and ran on the
    # labelled node (Ray's State API, as the user's `ray list tasks` shows it). The online kNN's few
    # hundred fixed crops are decoded once inside the trial (sslray.train.online_eval), not by Ray Data.
    tasks = subprocess.run(
        [str(RAY), "list", "tasks", "--address", ray_head.address, "--detail", "--format", "json", "--limit", "10000"],
        env={**ray_head.env, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tasks.returncode == 0, tasks.stderr[-2000:]
    data_tasks = [t for t in json.loads(tasks.stdout) if t["name"].startswith(("MapBatches", "ReadFiles"))]
    assert {t["name"] for t in data_tasks} >= {"MapBatches(row_group_views)"}
    assert all(t["label_selector"] == LABEL for t in data_tasks), [t["label_selector"] for t in data_tasks]


def test_a_job_with_a_typo_fails_with_the_validation_message_in_its_logs(ray_head, project):
    # `sslray submit` validates first: nothing is sent, exit 2, one line naming the key.
    refused = ray_head.sslray("submit", "search_spaces/typo.yaml", "--address", ray_head.address, cwd=project)
    assert refused.returncode == 2 and "method.temprature" in refused.stderr and "submitted" not in refused.stdout
    assert "Traceback" not in refused.stderr

    # The same YAML sent with Ray's own CLI (what a user without sslray installed locally would run):
    # the job fails on the cluster, with the message in its logs and `sslray submit --logs` exiting 2.
    import sslray

    sent = subprocess.run(
        [
            str(RAY),
            "job",
            "submit",
            "--address",
            ray_head.address,
            "--working-dir",
            str(project),
            "--no-wait",
            "--runtime-env-json",
            json.dumps({"py_modules": [str(Path(sslray.__file__).parent)]}),
            "--",
            "python",
            "-m",
            "sslray.cli",
            "sweep",
            "search_spaces/typo.yaml",
        ],
        env={**ray_head.env, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr[-2000:]
    job_id = next(
        word.strip("'") for word in (sent.stdout + sent.stderr).split() if word.strip("'").startswith("raysubmit_")
    )
    followed = ray_head.sslray("submit", "--address", ray_head.address, "--logs", job_id, cwd=project)
    assert followed.returncode == 2, followed.stdout + followed.stderr
    assert "sslray: error: method.temprature" in followed.stdout
    assert f"job {job_id} FAILED" in followed.stderr

    missing = ray_head.sslray("submit", "--address", ray_head.address, "--stop", "raysubmit_nope", cwd=project)
    assert missing.returncode == 2 and "no job raysubmit_nope" in missing.stderr


def test_submit_without_the_token_names_the_fix(ray_head, project, tmp_path):
    env = {**ray_head.env, "HOME": str(tmp_path)}  # a client machine that never got the head's token
    done = subprocess.run(
        [sys.executable, "-m", "sslray.cli", "submit", "--address", ray_head.address, "--list"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "auth_token" in done.stderr and "RAY_AUTH_TOKEN" in done.stderr
