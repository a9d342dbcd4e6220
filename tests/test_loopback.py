"""Every TCP socket the session's local Ray listens on (GCS, raylet, dashboard + job server, agents,
workers, the driver) is bound to loopback, and a connection to the machine's other addresses is refused;
``use_loopback`` sets its defaults without overriding what the user set. (The Ray that ``sslray train`` /
``sweep`` start is checked in tests/cli/test_footprint.py.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import psutil
import pytest

from .conftest import USER_ENV, is_loopback


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
    worker_pids = {
        ray_local.get(ray_local.remote(num_cpus=0)(pid_of_worker).remote()),
        ray_local.get(actor.pid.remote()),
    }

    processes = session_processes(info["session_dir"])
    assert worker_pids <= set(processes)
    listening = [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in processes
    ]
    report = "\n".join(f"{processes[pid]} (pid {pid}) {ip}:{port}" for pid, ip, port in sorted(listening))
    print(f"listening sockets of the session's Ray:\n{report}")

    dashboard_host, dashboard_port = info["webui_url"].rsplit(":", 1)
    assert dashboard_host == "127.0.0.1"
    gcs_port = int(info["gcs_address"].rsplit(":", 1)[1])
    expected = {
        "gcs_server": gcs_port,
        "dashboard + job server": int(dashboard_port),
        "raylet": node.node_manager_port,
        "dashboard agent": info["dashboard_agent_listen_port"],
        "metrics agent": info["metrics_export_port"],
    }
    ports = {port for _, _, port in listening}
    # A port Ray chose not to open (-1, e.g. the agent's HTTP port when its default is taken) is left out.
    assert {name: port for name, port in expected.items() if port > 0 and port not in ports} == {}, report
    assert [entry for entry in listening if not is_loopback(entry[1])] == [], report

    # What someone on the network would try: every port, at every address of this machine but loopback.
    outside = [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
        and not is_loopback(a.address)
        and not a.address.startswith("fe80")
    ]
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


@pytest.mark.parametrize(
    "given, local_only, gloo_interface",
    [
        ({}, "0", "lo"),
        ({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}, "1", None),  # the user opened the node: gloo left alone
        ({"GLOO_SOCKET_IFNAME": "eth1"}, "0", "eth1"),
    ],
)
def test_loopback_defaults_never_override_the_users_settings(given, local_only, gloo_interface):
    code = (
        "import json, os; from sslray.cluster import use_loopback; use_loopback(); print(json.dumps("
        "[os.environ.get('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'), os.environ.get('GLOO_SOCKET_IFNAME')]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**USER_ENV, **given}, capture_output=True, text=True, timeout=60
    )
    assert json.loads(result.stdout) == [local_only, gloo_interface], result.stderr
