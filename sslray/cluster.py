"""Connecting to Ray: a given cluster address, or a local single-node Ray kept on 127.0.0.1.

By default a local Ray binds its node, GCS and object manager to the machine's interface address.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's own switch for a local-only node: every endpoint
then uses 127.0.0.1 (nothing else can join, which is what the embedded default and the tests want).
Ray reads it when ``ray`` is first imported, so ``use_loopback()`` must run before that import;
``sslray`` does it in its test configuration and before starting a local cluster.

Ray Train's gloo process group listens on the address the host name resolves to, which on many machines
is the network interface; ``GLOO_SOCKET_IFNAME`` pins it to the loopback interface. The workers inherit
it from the driver's environment when ``ray.init`` starts the local Ray. A value the user set is kept.
torch's TCPStore, the process group's rendezvous, is bound to rank 0's node address by
``sslray.train.process_group`` (torch itself would listen on every interface).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sslray import reaper
from sslray.console import say
from sslray.errors import UserError

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_INTERFACE = "lo0" if sys.platform == "darwin" else "lo"
CONNECT_TIMEOUT_S = 10  # a cluster's GCS answers in milliseconds; a firewall that drops packets takes this long
PROGRESS_BARS_ENV = "RAY_DATA_DISABLE_PROGRESS_BARS"


def use_loopback() -> None:
    """Keep a local Ray on 127.0.0.1 (a no-op once ``ray`` is imported) and, on such a node, its gloo process
    groups on the loopback interface; each only where the user has not set it."""
    if "ray" not in sys.modules:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    if os.environ.get(LOCAL_ONLY_ENV) == "0" and sys.platform != "win32":  # not where the user opened the node
        os.environ.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK_INTERFACE)
    os.environ.setdefault(PROGRESS_BARS_ENV, "1")


def no_progress_bars() -> None:
    """Ray Data's progress bars off in this process, unless its environment says
    ``RAY_DATA_DISABLE_PROGRESS_BARS=0``. Ray Data reads that variable once, when ``ray.data`` is imported,
    and only ``use_loopback()`` (a local Ray) sets it; with ``--address`` the driver's bars were on, and Ray
    Train V2 hands the driver's ``DataContext`` to its workers, whose datasets then drew tqdm bars that Ray
    forwarded into the run's output (docs/ray.md §18). So the setting is made where datasets run: here on
    the driver (``init_ray``) and in each worker loop (``sslray.train.worker.run_worker``: Train workers and
    in-process trials, whose node's environment is not the driver's)."""
    if os.environ.get(PROGRESS_BARS_ENV) == "0":
        return
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False


def init_ray(address: str | None = None, num_cpus: int | None = None, checked: bool = False) -> bool:
    """Connect to ``address`` (or ``RAY_ADDRESS``), or start a local Ray on 127.0.0.1 with
    ``num_cpus`` CPUs (default: all). A second call while connected is a no-op. An address where no
    Ray answers is a ``UserError`` naming it (``checked``: the caller has run ``check_address`` already).
    Returns whether this call connected (False: already was)."""
    given, where = address, "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        use_loopback()
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        # "local" always starts a new Ray: a plain ray.init() would join a cluster that `ray start`
        # left on this machine (/tmp/ray/ray_current_cluster), or refuse num_cpus because of it.
        ray.init(address="local", num_cpus=num_cpus)
        reaper.watch(os.getpid())  # Ray's agents would outlive a killed driver by a minute or more
        no_progress_bars()
        return True
    if not checked:
        check_address(given)
    try:
        ray.init(address=address)
    except ConnectionError as err:  # e.g. "auto" with no cluster on this machine
        raise UserError(f"{where} {address}: {str(err).strip().splitlines()[0]}") from None
    no_progress_bars()
    return True


@contextmanager
def ray_session(address: str | None = None, checked: bool = False) -> Iterator[Any]:
    """Ray for one command, yielded as the ``ray`` module: the process's own if it is connected (left
    running), else ``init_ray(address, checked=checked)``'s, shut down on leaving."""
    started = init_ray(address, checked=checked)
    import ray

    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def ray_connected() -> bool:
    """This process is connected to a Ray (the caller's own, which ``init_ray`` leaves as it is)."""
    import ray

    return ray.is_initialized()


def check_address(address: str | None) -> None:
    """``address`` (else ``RAY_ADDRESS``), when a ``HOST:PORT`` (a cluster's GCS), must accept a connection:
    Ray itself retries an address where nothing listens for minutes, printing warnings, before it fails
    with a traceback. Other forms (``auto``, ``ray://...``, ``local``) are left to Ray."""
    where = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"{where} {address}: no Ray cluster answers there ({reason}); start one with `ray start --head` "
            "or give the address `ray start` printed"
        ) from None


def warn_if_no_node_matches(label_selector: dict[str, str] | None, where: str = "data.label_selector") -> None:
    """A selector no node satisfies leaves Ray Data's tasks pending forever (an autoscaler may still add
    such a node): say so up front. Plain ``key: value`` selectors only (Ray also has ``!v``, ``in(...)``):
    the rule is ``alive_nodes_with_labels``'s, which the run's ``DataWait`` also uses."""
    if not label_selector or alive_nodes_with_labels([], label_selector) is None:  # Ray's operators: not judged
        return
    import ray

    nodes = ray.nodes()
    if not alive_nodes_with_labels(nodes, label_selector):
        nodes = [node for node in nodes if node.get("Alive")]
        seen = sorted(
            {f"{k}={v}" for node in nodes for k, v in node.get("Labels", {}).items() if not k.startswith("ray.io/")}
        )
        say(
            f"warning: {where} {label_selector}: no node of this cluster has these labels "
            f"(labels present: {', '.join(seen) or 'none'}); decode/augment tasks wait until such a node "
            "joins (ray start --labels k=v, or an autoscaled node type with them)",
            err=True,
        )


def alive_nodes_with_labels(nodes: list[dict], label_selector: dict[str, str]) -> list[dict] | None:
    """The alive nodes among ``nodes`` (``ray.nodes()``'s dicts) that carry every ``key: value`` of
    ``label_selector``; None for a selector with Ray's operators (``!v``, ``in(...)``), which this does not
    evaluate. Pure, so that a watcher can ask the GCS once and decide here."""
    if any(v.startswith("!") or "(" in v for v in label_selector.values()):
        return None
    return [
        node
        for node in nodes
        if node.get("Alive") and all(node.get("Labels", {}).get(k) == v for k, v in label_selector.items())
    ]
