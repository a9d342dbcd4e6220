"""The data-wait report's logic, on node dicts as ``ray.nodes()`` returns them (no Ray started: fast).

The three nodes are tests/cluster's (head and train labelled ``sslray-role=train``, data ``=data``) as
the GCS listed them once the data node was lost: it stays in the list, ``Alive`` false, its labels kept.
The whole report on a real cluster is tests/cluster/test_node_loss.py's test_c.
"""

from __future__ import annotations

import copy
import time

from sslray.cluster import alive_nodes_with_labels
from sslray.train.data_wait import DataWait

DATA = {"sslray-role": "data"}


# ray.nodes() on tests/cluster's cluster once its data node was killed (test_c printed it).
HEAD = {
    "NodeID": "7905e9135da4f9ab1ffc5684c47a896b1b0ba75bf0d85d0f2cda4393",
    "Alive": True,
    "NodeManagerAddress": "198.18.0.1",
    "NodeManagerHostname": "vm",
    "NodeManagerPort": 40505,
    "ObjectManagerPort": 32839,
    "ObjectStoreSocketName": "/tmp/sr-head-8kmvo3mb/session_2026-12-01_00-02-13_319114_27976/sockets/plasma_store",
    "RayletSocketName": "/tmp/sr-head-8kmvo3mb/session_2026-12-01_00-02-13_319114_27976/sockets/raylet",
    "MetricsExportPort": 38467,
    "MetricsAgentPort": 45277,
    "DashboardAgentListenPort": 52365,
    "NodeName": "198.18.0.1",
    "RuntimeEnvAgentPort": 45837,
    "DeathReason": 0,
    "DeathReasonMessage": "",
    "alive": True,
    "Resources": {
        "CPU": 2.0,
        "node:198.18.0.1": 1.0,
        "node:__internal_head__": 1.0,
        "object_store_memory": 300000000.0,
        "memory": 19940068608.0,
    },
    "Labels": {"sslray-role": "train", "ray.io/node-id": "7905e9135da4f9ab1ffc5684c47a896b1b0ba75bf0d85d0f2cda4393"},
}
TRAIN = {
    "NodeID": "46d7f67fc8444cfa45ae8386c107417ad33ab24dc78b6217d351300f",
    "Alive": True,
    "NodeManagerAddress": "198.18.0.3",
    "NodeManagerHostname": "vm",
    "NodeManagerPort": 42769,
    "ObjectManagerPort": 45625,
    "ObjectStoreSocketName": "/tmp/sr-train-22dh1hsl/session_2026-12-01_00-02-13_319114_27976/sockets/plasma_store",
    "RayletSocketName": "/tmp/sr-train-22dh1hsl/session_2026-12-01_00-02-13_319114_27976/sockets/raylet",
    "MetricsExportPort": 36299,
    "MetricsAgentPort": 34849,
    "DashboardAgentListenPort": 52365,
    "NodeName": "198.18.0.3",
    "RuntimeEnvAgentPort": 33179,
    "DeathReason": 0,
    "DeathReasonMessage": "",
    "alive": True,
    "Resources": {"CPU": 2.0, "object_store_memory": 300000000.0, "node:198.18.0.3": 1.0, "memory": 18399558912.0},
    "Labels": {"sslray-role": "train", "ray.io/node-id": "46d7f67fc8444cfa45ae8386c107417ad33ab24dc78b6217d351300f"},
}
DATA_DEAD = {
    "NodeID": "13364c67c080667c04e28f3f634e56c0602708084af066d27ba907b5",
    "Alive": False,
    "NodeManagerAddress": "198.18.0.2",
    "NodeManagerHostname": "vm",
    "NodeManagerPort": 45301,
    "ObjectManagerPort": 37785,
    "ObjectStoreSocketName": "/tmp/sr-data-ufht4n4y/session_2026-12-01_00-02-13_319114_27976/sockets/plasma_store",
    "RayletSocketName": "/tmp/sr-data-ufht4n4y/session_2026-12-01_00-02-13_319114_27976/sockets/raylet",
    "MetricsExportPort": 45663,
    "MetricsAgentPort": 35369,
    "DashboardAgentListenPort": 52365,
    "NodeName": "198.18.0.2",
    "RuntimeEnvAgentPort": 36375,
    "DeathReason": 2,
    "DeathReasonMessage": "health check failed due to missing too many heartbeats",
    "alive": False,
    "Resources": {},
    "Labels": {"sslray-role": "data", "ray.io/node-id": "13364c67c080667c04e28f3f634e56c0602708084af066d27ba907b5"},
}
# `ray start` on the data node again: a new node at the same address, with the same labels.
DATA_BACK = {
    **DATA_DEAD,
    "NodeID": "d4" * 28,
    "Alive": True,
    "alive": True,
    "DeathReason": 0,
    "DeathReasonMessage": "",
    "Resources": {"CPU": 2.0, "node:198.18.0.2": 1.0, "object_store_memory": 300000000.0, "memory": 1.8e10},
    "Labels": {"sslray-role": "data", "ray.io/node-id": "d4" * 28},
}
LOST = [HEAD, DATA_DEAD, TRAIN]


def test_only_alive_nodes_with_every_label_count():
    assert alive_nodes_with_labels(LOST, DATA) == []  # the dead node keeps its labels in the list
    assert alive_nodes_with_labels([*LOST, DATA_BACK], DATA) == [DATA_BACK]
    assert alive_nodes_with_labels(LOST, {"sslray-role": "train"}) == [HEAD, TRAIN]
    assert alive_nodes_with_labels(LOST, {"sslray-role": "train", "zone": "a"}) == []  # every label, not any
    assert alive_nodes_with_labels([{"NodeID": "x", "Alive": True}], DATA) == []  # a node without labels
    # Ray's operators are Ray's to evaluate: not judged here.
    assert alive_nodes_with_labels(LOST, {"sslray-role": "!data"}) is None
    assert alive_nodes_with_labels(LOST, {"sslray-role": "in(data,cpu)"}) is None


class Gcs:
    """What ``check`` gets as ``ray.nodes``: the cluster's nodes now, and how often it was asked."""

    def __init__(self, nodes: list[dict]):
        self.nodes, self.calls = nodes, 0

    def __call__(self) -> list[dict]:
        self.calls += 1
        return copy.deepcopy(self.nodes)


def test_one_line_per_outage_and_one_when_data_flows_again(capsys):
    wait = DataWait(DATA, quiet_s=10, every_s=5)
    assert wait.active
    gcs = Gcs([HEAD, DATA_BACK, TRAIN])
    t0 = time.monotonic()
    wait.batch()
    assert wait.check(t0 + 5, gcs) is None and gcs.calls == 0  # batches flow: the GCS is not even asked
    assert wait.check(t0 + 12, gcs) is None and gcs.calls == 1  # a long step, the data node alive: silent
    gcs.nodes = LOST
    waiting = wait.check(t0 + 17, gcs)
    assert waiting == (
        "waiting for data: no live node has the labels {'sslray-role': 'data'} (data.label_selector); "
        "the run goes on when one joins"
    )
    calls = gcs.calls
    assert wait.check(t0 + 22, gcs) is None and wait.check(t0 + 60, gcs) is None  # once per outage
    assert gcs.calls == calls  # no batch since the line: nothing new to ask
    wait.batch()  # computed before the node was lost: no sign that it is back
    assert wait.check(t0 + 65, gcs) is None
    gcs.nodes = [*LOST, DATA_BACK]
    wait.batch()
    back = wait.check(time.monotonic() + 40, gcs)
    assert back is not None and back.startswith("data: a node with {'sslray-role': 'data'} is back after ")
    assert int(back.split("after ")[1].removesuffix(" s")) >= 40  # since the last batch before the outage
    assert wait.check(time.monotonic() + 45, gcs) is None  # said once
    assert capsys.readouterr().out.splitlines() == [waiting, back]  # the run's output: rank 0's stdout


def test_a_second_outage_is_reported_again(capsys):
    wait = DataWait(DATA, quiet_s=10, every_s=5)
    gcs = Gcs(LOST)
    wait.batch()
    assert wait.check(time.monotonic() + 11, gcs).startswith("waiting for data")
    gcs.nodes = [*LOST, DATA_BACK]
    wait.batch()
    assert wait.check(time.monotonic() + 1, gcs).startswith("data: a node with")
    gcs.nodes = [HEAD, {**DATA_BACK, "Alive": False, "alive": False}, TRAIN]
    assert wait.check(time.monotonic() + 11, gcs).startswith("waiting for data")
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_nothing_to_watch_without_plain_data_labels():
    for selector in (None, {}, {"sslray-role": "!data"}):
        wait = DataWait(selector)
        assert not wait.active
        with wait.watching():  # no thread
            wait.batch()


def test_the_watching_thread_asks_the_real_gcs(ray_local, capsys):
    """The thread itself, on the session's local Ray (one node, no ``sslray-role`` label)."""
    node_id = ray_local.nodes()[0]["Labels"]["ray.io/node-id"]
    present, missing = DataWait({"ray.io/node-id": node_id}, 0.2, 0.1), DataWait(DATA, 0.2, 0.1)
    out, deadline = "", time.monotonic() + 10
    with present.watching(), missing.watching():  # an epoch's batch loop that gets no batch
        while "waiting for data" not in out and time.monotonic() < deadline:
            time.sleep(0.1)
            out += capsys.readouterr().out
        time.sleep(0.5)  # a few more looks of both
    assert (out + capsys.readouterr().out).splitlines() == [
        "waiting for data: no live node has the labels {'sslray-role': 'data'} (data.label_selector); "
        "the run goes on when one joins"
    ]
