"""What listens where on the 3-node cluster, and who may talk to it (issue 19 d).

Each node's namespace has two interfaces, ``lo`` and ``eth0`` (its cluster address), and no route out, so
a socket bound to the wildcard there is reachable on the node's address and loopback only. Checked with
``ip netns exec NS ss -ltnp``. The store of a 2-worker Train run is checked while it trains, in
test_node_loss.py (``test_d_the_process_group_store_listens_on_the_node_address_only``).
"""

from __future__ import annotations

import sys

import pytest

from .conftest import DASHBOARD_PORT, GCS_PORT

pytestmark = pytest.mark.cluster
WILDCARD = {"*", "0.0.0.0", "::"}
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_d_each_node_has_only_its_address_and_no_route_out(netns_cluster):
    for role, node in netns_cluster.nodes.items():
        addresses = netns_cluster.run(role, ["ip", "-o", "-4", "addr", "show"]).stdout
        assert sorted(line.split()[3] for line in addresses.splitlines()) == ["127.0.0.1/8", f"{node.addr}/24"]
        routes = netns_cluster.run(role, ["ip", "route", "show"]).stdout.strip().splitlines()
        assert routes == [f"198.18.0.0/24 dev eth0 proto kernel scope link src {node.addr}"], routes


def test_d_the_dashboard_and_job_server_listen_on_the_heads_address_only(netns_cluster):
    for role, node in netns_cluster.nodes.items():
        sockets = netns_cluster.listening(role)
        print(role, sorted(sockets))
        assert {"raylet"} <= {name for *_, name, _ in sockets}
        assert {host for host, *_ in sockets} <= {node.addr, "::ffff:" + node.addr} | WILDCARD | LOOPBACK
    head = netns_cluster.head
    # The dashboard's HTTP server is also the job server (/api/jobs/) and the State API's.
    assert [host for host, port, *_ in netns_cluster.listening("head") if port == DASHBOARD_PORT] == [head.addr]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "Ray 2.60's gRPC servers (GCS, raylet, every core worker) bind 0.0.0.0 unless the node's address is "
        "127.0.0.1 (listen_to_localhost_only); Ray has no bind-address setting. In a node's namespace that "
        "is its cluster address plus loopback; on a real host every interface: firewall the Ray ports."
    ),
)
def test_d_the_gcs_listens_on_the_heads_address_only(netns_cluster):
    hosts = [host for host, port, *_ in netns_cluster.listening("head") if port == GCS_PORT]
    assert hosts == [netns_cluster.head.addr]


def test_d_a_client_without_the_token_is_refused(netns_cluster, tmp_path):
    cluster = netns_cluster
    no_token = cluster.env(HOME=str(tmp_path))  # a client machine that never got the cluster's token
    # The job server (sslray submit): refused, one line naming where a token goes.
    listed = cluster.run(
        "head", [sys.executable, "-m", "sslray.cli", "submit", "--address", cluster.dashboard, "--list"], env=no_token
    )
    assert listed.returncode == 2 and "Traceback" not in listed.stderr, listed.stdout + listed.stderr
    assert "auth_token" in listed.stderr
    # The same HTTP request with and without the token: only the first is answered.
    probe = (
        "import sys, urllib.request, urllib.error\n"
        "request = urllib.request.Request(sys.argv[1])\n"
        "if len(sys.argv) > 2: request.add_header('Authorization', 'Bearer ' + open(sys.argv[2]).read().strip())\n"
        "try: print(urllib.request.urlopen(request, timeout=30).status)\n"
        "except urllib.error.HTTPError as err: print(err.code)\n"
    )
    url, token = f"{cluster.dashboard}/api/jobs/", str(cluster.home / ".ray" / "auth_token")
    assert cluster.run("head", [sys.executable, "-c", probe, url, token]).stdout.split() == ["200"]
    refused = cluster.run("data", [sys.executable, "-c", probe, url], env=no_token).stdout.split()
    assert refused in (["401"], ["403"]), refused
    # A driver (the GCS): Ray's client will not connect without a token, and the GCS refuses a wrong one.
    init = "import ray; ray.init(address=__import__('sys').argv[1]); print('connected')"
    for env in (no_token, {**no_token, "RAY_AUTH_TOKEN": "0" * 32}):
        joined = cluster.run("train", [sys.executable, "-c", init, cluster.gcs], env=env, timeout=180)
        assert joined.returncode != 0 and "connected" not in joined.stdout
        print("ray.init:", (joined.stderr.strip().splitlines() or ["?"])[-1])
