"""Connecting to Ray: a given cluster address, or a local single-node Ray kept on 127.0.0.1.

By default a local Ray binds its node, GCS and object manager to the machine's interface address.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's own switch for a local-only node: every endpoint
then uses 127.0.0.1 (nothing else can join, which is what the embedded default and the tests want).
Ray reads it when ``ray`` is first imported, so ``use_loopback()`` must run before that import;
``sslray`` does it in its test configuration and before starting a local cluster.
"""

from __future__ import annotations

import os
import sys

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def use_loopback() -> None:
    """Keep a local Ray on 127.0.0.1; a no-op once ``ray`` is imported or if the user set it."""
    if "ray" not in sys.modules:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
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
        ray.init(num_cpus=num_cpus)
    else:
        ray.init(address=address)
