"""Where a sweep's work runs on the 3-node cluster (issue 19 a): ``sslray sweep --address`` from the
head's namespace, one trial on 2 Train workers with ``scaling.placement_strategy: STRICT_SPREAD`` and
``scaling.label_selector: {sslray-role: train}`` (one worker on the head, one on the train node), and
``data.label_selector: {sslray-role: data}``: every Ray Data task ran on the data node. Asserted by node
id through Ray's State API, queried from a driver in the head's namespace."""

from __future__ import annotations

import pytest
import yaml

from ..conftest import read_leaderboard
from .conftest import spread_recipe

pytestmark = pytest.mark.cluster

# Ray Data's tasks are named after the operators they run (fused: "ReadParquet->MapBatches(decode)").
DATA_OPERATORS = ("ReadParquet", "MapBatches", "Map(", "Read", "Limit")


def is_data_task(name: str) -> bool:
    return any(op in name for op in DATA_OPERATORS)


def test_a_sweeps_workers_spread_over_the_train_nodes_and_its_data_tasks_run_on_the_data_node(
    netns_cluster, tiny_fmnist, tmp_path
):
    cluster = netns_cluster
    space = {**spread_recipe(tiny_fmnist, epochs=1), "tune": {"seed": 0, "num_samples": 1, "metric": "loss"}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    done = cluster.sslray("sweep", "space.yaml", "--address", cluster.gcs, "--out", "sweep", cwd=tmp_path)
    assert done.returncode == 0, (
        done.stdout[-4000:]
        + done.stderr[-4000:]
        + (
            (tmp_path / "sweep/logs/driver.log").read_text()[-6000:]
            if (tmp_path / "sweep/logs/driver.log").exists()
            else ""
        )
    )
    rows, _ = read_leaderboard(tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["done"]

    nodes = cluster.node_ids()
    # Only the jobs of `sslray sweep` (the one sweep of the session; its driver connects more than once):
    # earlier tests' runs left tasks on nodes that are gone now.
    seen = cluster.query(
        """
        jobs = [j.job_id for j in state.list_jobs(raise_on_missing_output=False) if " sweep " in (j.entrypoint or "")]
        tasks = state.list_tasks(detail=True, limit=10000, raise_on_missing_output=False)
        actors = state.list_actors(detail=True, limit=10000, raise_on_missing_output=False)
        out = {
            "jobs": jobs,
            "tasks": [[t.name, t.node_id, t.type] for t in tasks if t.job_id in jobs],
            "actors": [[a.class_name, a.node_id, a.state] for a in actors if a.job_id in jobs],
        }
        """
    )
    assert seen["jobs"]
    where = {node_id: role for role, node_id in nodes.items()}
    data_tasks = [
        (name, where.get(node_id, node_id))
        for name, node_id, kind in seen["tasks"]
        if kind == "NORMAL_TASK" and is_data_task(name)
    ]
    print("Ray Data tasks (name, node):", sorted(set(data_tasks)))
    workers = [where.get(node_id, node_id) for name, node_id, _ in seen["actors"] if name == "RayTrainWorker"]
    print("RayTrainWorker actors on:", workers)
    others = sorted({(name, where.get(node_id, node_id)) for name, node_id, _ in seen["actors"]})
    print("all actors (class, node):", others)
    assert data_tasks, seen["tasks"]
    assert {role for _, role in data_tasks} == {"data"}
    assert sorted(workers) == ["head", "train"]  # one worker group of 2, one worker on each train node
