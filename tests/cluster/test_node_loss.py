"""Losing a node mid-epoch on the 3-node cluster (issue 19 b, c), and where a 2-worker run listens (d).

``killed_run``: ``sslray train --address`` from the head's namespace, 2 Train workers (one on the head,
one on the train node), a checkpoint every epoch. While epochs 1-2 train, the listening sockets of every
node are sampled (``ss``); when rank 0's ``progress.json`` says epoch 3 is under way, every process of the
train node's namespace gets SIGKILL (by PID: ``ip netns pids``), and ``ray start`` brings the node back.

``data_node_lost``: the same run; its data node (every Ray Data task runs there) is killed the same way
when epoch 2 is under way, and started again. What sslray does about it is docs/reliability.md's
"a node is lost": the run waits for a node with the label, says so (``sslray.train.data_wait``), and goes on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sslray.cluster import alive_nodes_with_labels

from .conftest import DATA_LABEL, NetnsCluster, read_progress, spread_recipe, wait_for

pytestmark = pytest.mark.cluster
EPOCHS = 4
TRAIN_WORKER = "RayTrainWo"  # ss shows the first 15 characters of "ray::RayTrainWorker"
RUN_TIMEOUT_S = 500
WAITING = "waiting for data: no live node has the labels {'sslray-role': 'data'} (data.label_selector)"
BACK = "data: a node with {'sslray-role': 'data'} is back after "


def start_run(cluster: NetnsCluster, data: Path, folder: Path) -> subprocess.Popen:
    recipe = spread_recipe(data, epochs=EPOCHS, checkpoint_every=1, max_failures=3)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    log = open(folder / "sslray.log", "w")  # noqa: SIM115 (the child writes it)
    argv = [sys.executable, "-m", "sslray.cli", "train", "recipe.yaml", "--address", cluster.gcs, "--out", "run"]
    return cluster.popen("head", argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, folder: Path) -> dict:
    try:
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    log = (folder / "sslray.log").read_text()
    assert proc.returncode == 0, log[-6000:]
    print(log[-1500:])
    return json.loads((folder / "run" / "result.json").read_text())


def history(run_dir: Path) -> list[int]:
    from sslray.runs.checkpoint import checkpoint_folders, read_state

    return [m["epoch"] for m in read_state(checkpoint_folders(run_dir)[-1])["history"]]


@pytest.fixture(scope="module")
def killed_run(netns_cluster, tiny_fmnist, tmp_path_factory):
    cluster, folder = netns_cluster, tmp_path_factory.mktemp("train-node-loss")
    proc = start_run(cluster, tiny_fmnist, folder)
    sockets: dict[str, set] = {role: set() for role in cluster.nodes}
    try:
        wait_for(lambda: read_progress(folder / "run").get("epoch_running") or proc.poll() is not None, 300, "epoch 1")
        while proc.poll() is None and (read_progress(folder / "run").get("epoch_running") or 0) < 3:
            for role in cluster.nodes:
                sockets[role] |= set(cluster.listening(role))
        assert proc.poll() is None, (folder / "sslray.log").read_text()[-4000:]
        killed = cluster.kill("train")
        cluster.start("train")
        summary = finish(proc, folder)
    finally:
        if proc.poll() is None:
            proc.kill()
        if len(cluster.node_ids()) < 3:
            cluster.start("train")
    return {"summary": summary, "run": folder / "run", "sockets": sockets, "killed": killed}


def test_b_a_lost_train_node_comes_back_and_the_run_finishes_from_its_last_checkpoint(killed_run):
    summary, run = killed_run["summary"], killed_run["run"]
    assert killed_run["killed"]  # the node had processes (its raylet, the rank-1 worker, ...)
    assert summary["metrics"]["epoch"] == EPOCHS
    assert history(run) == list(range(1, EPOCHS + 1))  # each epoch once
    restarts = summary["restarts"]
    print("restart records:", restarts)
    assert restarts, "no restart recorded"
    # Killed while epoch 3 ran: restored from the last checkpoint Ray Train had registered (epoch 2's, or
    # epoch 1's when rank 0's report of epoch 2 had not reached the controller yet), never from scratch.
    first = restarts[0]
    assert first["partial_epoch"] == 3 and first["epochs_done"] == 2
    assert first["restored_epoch"] in (1, 2) and first["epochs_redone"] == 2 - first["restored_epoch"]


def test_d_the_process_group_store_listens_on_the_node_address_only(killed_run, netns_cluster):
    """While 2 workers trained: every socket of a Train worker on its node's address, but one per worker
    process on the wildcard (its Ray core worker's gRPC server, as every Ray worker has: Ray 2.60 binds
    gRPC servers to 0.0.0.0 unless the node's address is 127.0.0.1). Ray Train's env:// set-up gave rank 0
    a second one: torch's TCPStore."""
    wildcard = {"*", "0.0.0.0", "::"}
    for role in ("head", "train"):
        node = netns_cluster.nodes[role]
        workers = [s for s in killed_run["sockets"][role] if TRAIN_WORKER in s[2]]
        print(role, "Train worker sockets (address, port, name, pid):", sorted(workers))
        assert workers, f"no Train worker seen listening on {role}: {sorted(killed_run['sockets'][role])}"
        assert {host for host, *_ in workers} <= {node.addr, *wildcard}
        for pid in {s[3] for s in workers}:
            assert len({s for s in workers if s[3] == pid and s[0] in wildcard}) <= 1, (role, pid, workers)
    both = killed_run["sockets"]["head"] | killed_run["sockets"]["train"]
    assert [s for s in both if TRAIN_WORKER in s[2] and s[0].startswith("198.18.0.")]  # the store, gloo's pairs


def test_c_a_lost_data_node_is_waited_for_and_the_run_finishes(netns_cluster, tiny_fmnist, tmp_path):
    """Every Ray Data task of the run is pinned to ``sslray-role=data``; with that node gone they cannot
    run anywhere else. sslray waits for a node with the label (docs/reliability.md): the node comes back
    (as an autoscaler or an operator would bring one) and the run ends with each epoch once. While it waits,
    the run's output says so once, and once more when the data flows again."""
    cluster = netns_cluster
    proc = start_run(cluster, tiny_fmnist, tmp_path)

    def log() -> str:  # the run's console output (the workers' lines come through Ray's log forwarding)
        return (tmp_path / "sslray.log").read_text()

    try:
        wait_for(
            lambda: (read_progress(tmp_path / "run").get("epoch_running") or 0) >= 2 or proc.poll() is not None,
            300,
            "epoch 2",
        )
        assert proc.poll() is None, (tmp_path / "sslray.log").read_text()[-4000:]
        assert cluster.kill("data")
        wait_for(lambda: "data" not in cluster.node_ids(), 120, "the GCS to count the data node dead")
        nodes = cluster.query("out = ray.nodes()")  # what the run's watcher sees now, from the same GCS
        print("ray.nodes() without the data node:", json.dumps(nodes))
        assert alive_nodes_with_labels(nodes, DATA_LABEL) == [] and len(alive_nodes_with_labels(nodes, {})) == 2
        # Rank 0 says why it stands still: no batch for QUIET_S s, then a look at the GCS every EVERY_S s.
        wait_for(lambda: WAITING in log() or proc.poll() is not None, 120, "the run to say it waits for data")
        assert proc.poll() is None, log()[-4000:]  # not failed: waiting, and saying so
        cluster.start("data")
        summary = finish(proc, tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        if "data" not in cluster.node_ids():
            cluster.start("data")
    print("restart records:", summary["restarts"])
    assert summary["metrics"]["epoch"] == EPOCHS
    assert history(tmp_path / "run") == list(range(1, EPOCHS + 1))
    assert all(r["restored_epoch"] >= 1 for r in summary["restarts"])
    # One line for the outage (each restarted worker group's rank 0 could say it once more), then one
    # when batches flow again, after it.
    output = log()
    waiting = [line for line in output.splitlines() if WAITING in line]
    print("data wait lines:", [line for line in output.splitlines() if WAITING in line or BACK in line])
    assert 1 <= len(waiting) <= 1 + len(summary["restarts"]), waiting
    assert output.count(BACK) == 1 and output.index(BACK) > output.index(WAITING)
