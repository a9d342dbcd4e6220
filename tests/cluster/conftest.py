"""A real 3-node Ray cluster on this machine: one network namespace per node (issue 19).

``netns_cluster`` (session scope: one cluster for all of tests/cluster, since each start costs tens of
seconds on 2 cores) creates, under a prefix unique to the pytest process (``sslrNNNNN-``):

- a switch namespace ``PREFIX-sw`` holding a bridge ``br0``; each node namespace is joined to it by a
  veth pair (``eth0`` inside the node). The bridge lives in its own namespace, not the root one, so the
  host's firewall (``bridge-nf-call-iptables`` with a DROP forward policy, as Docker sets) never sees the
  cluster's packets, and the root namespace has no address on it;
- three node namespaces, ``PREFIX-head`` (198.18.0.1), ``PREFIX-data`` (198.18.0.2, label
  ``sslray-role=data``), ``PREFIX-train`` (198.18.0.3); head and train carry ``sslray-role=train``, so
  a run with ``scaling.label_selector: {sslray-role: train}`` and ``STRICT_SPREAD`` has one worker on
  each. Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking), exist only in these namespaces, and
  there is no default route and no NAT: nothing leaves the cluster;
- a ``ray start`` per node with ``--node-ip-address`` of its namespace, its own ``--temp-dir``, 2
  logical CPUs each (more than the machine's 2 cores in all: Ray only counts them), and token auth: a
  token generated in a temporary HOME (``~/.ray/auth_token``), ``RAY_AUTH_MODE=token`` everywhere.

Every client of the cluster (``sslray`` commands, State API queries) runs inside the head's namespace
(``ip netns exec``): the pytest process stays in the root namespace, where other tests' local Ray on
127.0.0.1 lives and which has no route to 198.18.0.x. Giving the root namespace an address on the bridge
would have let the test process be a driver, but a driver's own ports (its core worker, which nodes call
back) would then listen in the root namespace, on the machine's real network.

Teardown, also after a failed test (fixture finalizer, and ``atexit`` for a killed session): SIGTERM then
SIGKILL to every PID of the node namespaces (``ip netns pids``), ``ip netns del`` (which removes the veth
pairs and the bridge with them), and the temp dirs. Never ``ray stop``: it finds Ray processes by name
machine-wide (the PID namespace is shared), so it would stop other tests' Ray too.

Skipped, with the reason, when not root, without ``ip``/``ss``, when a namespace cannot be created, or
with SSLRAY_CLUSTER_TESTS=0.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..conftest import USER_ENV, tiny_recipe

RAY = Path(sys.executable).with_name("ray")
SUBNET = "198.18.0"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
DATA_LABEL = {"sslray-role": "data"}
TRAIN_LABEL = {"sslray-role": "train"}
START_TIMEOUT_S = 180
OBJECT_STORE = 300_000_000  # bytes per node (Ray's default: 30% of RAM each, in /dev/shm)


def why_no_netns() -> str | None:
    """Why a namespace cluster cannot run here, or None."""
    if os.environ.get("SSLRAY_CLUSTER_TESTS") == "0":
        return "SSLRAY_CLUSTER_TESTS=0"
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add)"
    if not (shutil.which("ip") and shutil.which("ss")):
        return "needs iproute2 (`ip`, `ss`)"
    if not RAY.is_file():
        return "needs the `ray` CLI next to this Python"
    probe = f"sslrprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Node:
    role: str  # head, data, train
    ns: str  # its network namespace
    addr: str
    labels: dict[str, str]
    temp_dir: str
    num_cpus: int = 2


@dataclass
class NetnsCluster:
    prefix: str
    home: Path  # HOME of every node and client: ~/.ray/auth_token
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def head(self) -> Node:
        return self.nodes["head"]

    @property
    def gcs(self) -> str:
        return f"{self.head.addr}:{GCS_PORT}"

    @property
    def dashboard(self) -> str:
        return f"http://{self.head.addr}:{DASHBOARD_PORT}"

    def env(self, **extra: str) -> dict[str, str]:
        """A user's shell on a node: no RAY_/GLOO_ settings of the test process (its loopback switch
        would put the node on 127.0.0.1), the cluster's HOME and token auth on."""
        path = f"{RAY.parent}{os.pathsep}{USER_ENV.get('PATH', '')}"
        env = {**USER_ENV, "HOME": str(self.home), "PATH": path, "RAY_AUTH_MODE": "token"}
        # gloo's default address is what the host name resolves to: the machine's, absent in a namespace.
        return {**env, "GLOO_SOCKET_IFNAME": "eth0", **extra}

    def run(self, role: str, argv: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        """``argv`` inside ``role``'s namespace."""
        kw.setdefault("env", self.env())
        return subprocess.run(
            ["ip", "netns", "exec", self.nodes[role].ns, *argv], capture_output=True, text=True, timeout=timeout, **kw
        )

    def popen(self, role: str, argv: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("env", self.env())
        return subprocess.Popen(["ip", "netns", "exec", self.nodes[role].ns, *argv], **kw)

    def sslray(self, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        """An ``sslray`` command run from the head's namespace."""
        return self.run("head", [sys.executable, "-m", "sslray.cli", *args], cwd=cwd, timeout=timeout)

    def query(self, code: str, timeout: float = 120) -> object:
        """Run ``code`` in a driver connected to the cluster (from the head's namespace); it sets ``out``,
        which comes back through JSON. ``ray`` and ``state`` (``ray.util.state``) are imported."""
        script = (
            textwrap.dedent(
                f"""
            import json, sys, ray
            from ray.util import state
            ray.init(address={self.gcs!r}, logging_level="ERROR", log_to_driver=False)
            out = None
            """
            )
            + textwrap.dedent(code)
            + "\nprint('RESULT ' + json.dumps(out))\n"
        )
        # RAY_ADDRESS for the State API: without it Ray looks for Rays by process (the PID namespace is
        # shared) and finds other tests' local ones too.
        env = self.env(RAY_ADDRESS=self.gcs)
        done = self.run("head", [sys.executable, "-c", script], timeout=timeout, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        line = next(x for x in done.stdout.splitlines()[::-1] if x.startswith("RESULT "))
        return json.loads(line[len("RESULT ") :])

    def start(self, *roles: str) -> None:
        """``ray start`` on the nodes of ``roles``, at once (the head alone, before the others)."""
        starts = {}
        for role in roles:
            node = self.nodes[role]
            argv = [str(RAY), "start", "--node-ip-address", node.addr, "--num-cpus", str(node.num_cpus)]
            argv += ["--temp-dir", node.temp_dir, "--disable-usage-stats", "--object-store-memory", str(OBJECT_STORE)]
            argv += ["--labels", ",".join(f"{k}={v}" for k, v in node.labels.items())]
            if role == "head":
                argv += ["--head", "--port", str(GCS_PORT), "--dashboard-host", node.addr]
                argv += ["--dashboard-port", str(DASHBOARD_PORT)]
            else:
                argv += ["--address", self.gcs]
            starts[role] = self.popen(role, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for role, proc in starts.items():
            output, _ = proc.communicate(timeout=START_TIMEOUT_S)
            assert proc.returncode == 0, f"ray start on {role}: {output[-4000:]}"

    def pids(self, role: str) -> list[int]:
        """Every process of ``role``'s namespace (its node's Ray processes, and any client started there)."""
        done = subprocess.run(["ip", "netns", "pids", self.nodes[role].ns], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split()]

    def kill(self, role: str, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to every process of ``role``'s namespace; wait until they are gone."""
        killed = self.signal([role], sig)
        wait_for(lambda: not self.pids(role), 30, f"the processes of {role} to end", every=0.2)
        return killed

    def signal(self, roles: list[str], sig: int) -> list[int]:
        sent = []
        for role in roles:
            for pid in self.pids(role):
                try:
                    os.kill(pid, sig)
                    sent.append(pid)
                except ProcessLookupError:
                    pass
        return sent

    def alive_nodes(self) -> dict[str, str]:
        """node id -> node address of the nodes the GCS counts alive."""
        out = self.query("out = {n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']}")
        return dict(out)

    def node_ids(self) -> dict[str, str]:
        """role -> node id of the nodes alive now."""
        by_addr = {addr: node_id for node_id, addr in self.alive_nodes().items()}
        return {role: by_addr[node.addr] for role, node in self.nodes.items() if node.addr in by_addr}

    def listening(self, role: str) -> list[tuple[str, int, str, int]]:
        """(address, port, process name, pid) of every listening TCP socket in ``role``'s namespace
        (``ss`` shows Ray's wildcard binds as ``*`` or ``0.0.0.0``)."""
        done = self.run(role, ["ss", "-Hltnp"], timeout=30)
        sockets = []
        for line in done.stdout.splitlines():
            fields = line.split()
            host, _, port = fields[3].rpartition(":")
            users = fields[5] if len(fields) > 5 else ""
            name = users.split('"')[1] if '"' in users else "?"
            pid = int(users.split("pid=")[1].split(",")[0]) if "pid=" in users else 0
            sockets.append((host.strip("[]"), int(port), name, pid))
        return sockets

    def teardown(self) -> None:
        roles = list(self.nodes)
        if self.signal(roles, signal.SIGTERM):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(self.pids(role) for role in roles):
                time.sleep(0.2)
        self.signal(roles, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(self.pids(role) for role in roles):
            time.sleep(0.2)
        for ns in [node.ns for node in self.nodes.values()] + [f"{self.prefix}sw"]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for node in self.nodes.values():
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)


def make_network(cluster: NetnsCluster) -> None:
    """The switch namespace with its bridge, and each node's namespace joined to it."""
    switch = f"{cluster.prefix}sw"
    ip("netns", "add", switch)
    ip("-n", switch, "link", "add", "br0", "type", "bridge")
    ip("-n", switch, "link", "set", "br0", "up")
    for i, node in enumerate(cluster.nodes.values(), start=1):
        ip("netns", "add", node.ns)
        port = f"{cluster.prefix}p{i}"  # the bridge's end of the pair (<= 15 characters)
        ip("link", "add", port, "netns", switch, "type", "veth", "peer", "name", "eth0", "netns", node.ns)
        ip("-n", switch, "link", "set", port, "master", "br0", "up")
        ip("-n", node.ns, "addr", "add", f"{node.addr}/24", "dev", "eth0")
        ip("-n", node.ns, "link", "set", "eth0", "up")
        ip("-n", node.ns, "link", "set", "lo", "up")


def remove_stale_clusters() -> None:
    """The namespaces (and processes) of an earlier session that was killed before its teardown ran."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for ns in listed:
        owner = ns[len("sslr") :].split("-")[0] if ns.startswith("sslr") and "-" in ns else ""
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def new_cluster() -> NetnsCluster:
    prefix = f"sslr{os.getpid()}-"  # the bridge's veth ends, f"{prefix}p1", stay within 15 characters
    home = Path(tempfile.mkdtemp(prefix="sslray-home-", dir="/tmp"))
    cluster = NetnsCluster(prefix, home)
    roles = {"head": TRAIN_LABEL, "data": DATA_LABEL, "train": TRAIN_LABEL}
    for i, (role, labels) in enumerate(roles.items(), start=1):
        temp_dir = tempfile.mkdtemp(prefix=f"sr-{role}-", dir="/tmp")  # short: Ray's unix sockets live here
        cluster.nodes[role] = Node(role, f"{prefix}{role}", f"{SUBNET}.{i}", dict(labels), temp_dir)
    return cluster


@pytest.fixture(scope="session")
def netns_cluster() -> NetnsCluster:
    """The 3-node cluster, started once per session. A test that kills a node starts it again before it
    ends (``NetnsCluster.start``), so the next test finds three nodes."""
    reason = why_no_netns()
    if reason:
        pytest.skip(f"3-node namespace cluster: {reason}")
    remove_stale_clusters()
    cluster = new_cluster()
    atexit.register(cluster.teardown)
    try:
        make_network(cluster)
        done = subprocess.run(
            [str(RAY), "get-auth-token", "--generate"], env=cluster.env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        cluster.start("head")
        cluster.start("data", "train")
        assert sorted(cluster.alive_nodes().values()) == sorted(n.addr for n in cluster.nodes.values())
        yield cluster
    finally:
        cluster.teardown()
        atexit.unregister(cluster.teardown)


def spread_recipe(data: Path, **train) -> dict:
    """``tiny_recipe`` on 2 Train workers, one per ``sslray-role=train`` node (head, train), its Ray Data
    tasks on the ``sslray-role=data`` node; every image (two row groups: one per worker)."""
    recipe = tiny_recipe(data, **train)
    recipe["data"].update(limit=None, label_selector=dict(DATA_LABEL))
    recipe["scaling"] = {
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "placement_strategy": "STRICT_SPREAD",
        "label_selector": dict(TRAIN_LABEL),
    }
    return recipe


def read_progress(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    """Poll ``predicate`` until it returns something true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
