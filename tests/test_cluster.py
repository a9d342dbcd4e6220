"""sslray.cluster against the session's real local Ray."""

import os
import socket
import subprocess
import sys

import pytest
import yaml

from sslray.cluster import ray_session, warn_if_no_node_matches

from .conftest import assert_one_line_error, tiny_recipe
from .tune.conftest import tiny_space


def test_a_label_selector_that_no_node_satisfies_is_announced(ray_local, capsys):
    warn_if_no_node_matches({"sslray-role": "data"})
    err = capsys.readouterr().err
    assert "data.label_selector {'sslray-role': 'data'}: no node of this cluster has these labels" in err
    warn_if_no_node_matches(None)
    warn_if_no_node_matches({"sslray-role": "!data"})  # Ray's negation: satisfied by unlabelled nodes
    node_id = ray_local.nodes()[0]["Labels"]["ray.io/node-id"]
    warn_if_no_node_matches({"ray.io/node-id": node_id})
    assert capsys.readouterr().err == ""


def test_a_ray_session_stops_the_ray_it_started_and_leaves_the_callers(ray_local):
    with ray_session() as ray:  # the session's Ray is connected: used, and left running
        assert ray is ray_local and ray.is_initialized()
    assert ray_local.is_initialized()
    # In a process of its own (as the Python API runs it): a local Ray for the block, stopped after it.
    script = (
        "from sslray.cluster import ray_session\n"
        "with ray_session() as ray:\n    inside = ray.is_initialized()\n"
        "print(inside, ray.is_initialized())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # not the session's Ray: a new one
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.split()[-2:] == ["True", "False"], done.stdout + done.stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


@pytest.mark.parametrize("command", ["sweep", "train"])
def test_an_address_where_no_ray_answers_is_one_line_and_writes_nothing(command, tiny_fmnist, tmp_path):
    # Ray retries such an address for minutes, with warnings, then fails with a traceback (issue 18 #12).
    # Given as --address to sweep and as RAY_ADDRESS to train; in a process of its own, as a user runs it.
    recipe = tiny_space(tiny_fmnist) if command == "sweep" else tiny_recipe(tiny_fmnist)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    address = f"127.0.0.1:{_closed_port()}"
    argv = [sys.executable, "-m", "sslray.cli", command, str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out")]
    env = dict(os.environ)
    if command == "sweep":
        argv += ["--address", address]
    else:
        env["RAY_ADDRESS"] = address
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    where = "--address" if command == "sweep" else "RAY_ADDRESS"
    assert done.returncode == 2, done.stdout + done.stderr
    assert_one_line_error(done.stderr, f"{where} {address}: no Ray cluster answers there", "ray start --head")
    assert not (tmp_path / "out").exists()
