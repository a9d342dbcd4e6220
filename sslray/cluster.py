"""Connecting to Ray: a given cluster address, or a local single-node Ray kept on 127.0.0.1.

By default a local Ray binds its node, GCS and object manager to the machine's interface address.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's own switch for a local-only node: every endpoint
then uses 127.0.0.1 (nothing else can join, which is what the embedded default and the tests want).
Ray reads it when ``ray`` is first imported, so ``use_loopback()`` must run before that import;
``sslray`` does it in its test configuration and before starting a local cluster.

Ray Train's gloo process group listens on the address the host name resolves to, which on many machines
is the network interface; ``GLOO_SOCKET_IFNAME`` pins it to the loopback interface. The workers inherit
it from the driver's environment when ``ray.init`` starts the local Ray. A value the user set is kept.
(torch's TCPStore, the process group's rendezvous, still listens on every interface while a Ray Train run
trains: torch has no setting for its address; a strict xfail test in tests/ tracks it.)
"""

from __future__ import annotations

import os
import sys

from sslray.console import say

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_INTERFACE = "lo0" if sys.platform == "darwin" else "lo"


def use_loopback() -> None:
    """Keep a local Ray on 127.0.0.1 (a no-op once ``ray`` is imported) and, on such a node, its gloo process
    groups on the loopback interface; each only where the user has not set it."""
    if "ray" not in sys.modules:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    if os.environ.get(LOCAL_ONLY_ENV) == "0" and sys.platform != "win32":  # not where the user opened the node
        os.environ.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK_INTERFACE)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), or start a local Ray on 127.0.0.1 with
    ``num_cpus`` CPUs (default: all). A second call while connected is a no-op."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        use_loopback()
    import ray

    if ray.is_initialized():
        return
    if address is None:
        # "local" always starts a new Ray: a plain ray.init() would join a cluster that `ray start`
        # left on this machine (/tmp/ray/ray_current_cluster), or refuse num_cpus because of it.
        ray.init(address="local", num_cpus=num_cpus)
    else:
        ray.init(address=address)


def warn_if_no_node_matches(label_selector: dict[str, str] | None, where: str = "data.label_selector") -> None:
    """A selector no node satisfies leaves Ray Data's tasks pending forever (an autoscaler may still add
    such a node): say so up front. Plain ``key: value`` selectors only (Ray also has ``!v``, ``in(...)``)."""
    if not label_selector or any(v.startswith("!") or "(" in v for v in label_selector.values()):
        return
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if not any(all(node.get("Labels", {}).get(k) == v for k, v in label_selector.items()) for node in nodes):
        seen = sorted(
            {f"{k}={v}" for node in nodes for k, v in node.get("Labels", {}).items() if not k.startswith("ray.io/")}
        )
        say(
            f"warning: {where} {label_selector}: no node of this cluster has these labels "
            f"(labels present: {', '.join(seen) or 'none'}); decode/augment tasks wait until such a node "
            "joins (ray start --labels k=v, or an autoscaled node type with them)",
            err=True,
        )
