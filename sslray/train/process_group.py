"""The process group of a multi-worker run, with its rendezvous store bound to rank 0's node address.

Ray Train's own set-up (``init_method="env"``) has torch create rank 0's ``TCPStore``, which listens on
every interface (``::``) for the whole run, unauthenticated; torch takes no bind address. Here rank 0
binds a socket to its node's address (127.0.0.1 on a local loopback-only Ray, the node's cluster address
on a cluster) and hands it to ``TCPStore(master_listen_fd=...)``; every rank then joins the group through
that store (``init_process_group(store=...)``). Tested in tests/cli/test_footprint.py (local) and
tests/cluster/test_listening.py (3 nodes).

It replaces ``ray.train.torch.config._TorchBackend.on_start``, a private class of Ray (pinned: Ray 2.60);
``on_shutdown`` and the rest stay Ray's.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

_STORE: list[Any] = []  # rank 0's store server, kept alive as long as its worker process


def _open_store(host: str) -> int:
    """Rank 0: a TCPStore server on ``host`` (an ephemeral port); returns the port."""
    import torch.distributed as dist

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    store = dist.TCPStore(
        host, sock.getsockname()[1], None, True, master_listen_fd=sock.fileno(), wait_for_workers=False
    )
    _STORE[:] = [store, sock]
    return store.port


def _join(backend: str, host: str, port: int, rank: int, world_size: int, timeout_s: int) -> None:
    import os

    import torch.distributed as dist

    if backend == "nccl":  # as Ray's set-up: a timed-out collective fails instead of hanging
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    timeout = timedelta(seconds=timeout_s)
    store = _STORE[0] if rank == 0 else dist.TCPStore(host, port, None, False, timeout=timeout)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def _set_env(host: str, port: int) -> None:
    import os

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = host, str(port)  # read by some libraries


def bound_torch_config():
    """A ``TorchConfig`` whose process group (gloo on CPU, NCCL on GPU) rendezvouses through a store bound to
    rank 0's node address instead of every interface."""
    import ray
    from ray.train._internal.worker_group import WorkerGroup as V1WorkerGroup
    from ray.train.torch.config import TorchConfig, _set_torch_distributed_env_vars, _TorchBackend

    class BoundTorchBackend(_TorchBackend):
        def on_start(self, worker_group, backend_config) -> None:
            resources = worker_group.get_resources_per_worker()
            backend = backend_config.backend or ("nccl" if resources.get("GPU", 0) > 0 else "gloo")
            host = worker_group.execute_single(0, ray.util.get_node_ip_address)
            port = worker_group.execute_single(0, _open_store, host)
            worker_group.execute(_set_env, host=host, port=port)
            if not isinstance(worker_group, V1WorkerGroup):  # as Ray's on_start
                worker_group.execute(_set_torch_distributed_env_vars)
            ray.get(
                [
                    worker_group.execute_single_async(
                        rank, _join, backend, host, port, rank, len(worker_group), backend_config.timeout_s
                    )
                    for rank in range(len(worker_group))
                ]
            )

    class BoundTorchConfig(TorchConfig):
        @property
        def backend_cls(self):
            return BoundTorchBackend

    return BoundTorchConfig()
