"""Run a function on 2 CPU processes joined by a real gloo process group (127.0.0.1), for tests of
code that gathers or reduces across ranks."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, body: Callable[[int], dict], out_dir: str) -> None:
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.save(body(rank), f"{out_dir}/rank{rank}.pt")
    finally:
        # Both ranks done with every collective before either tears gloo down: without this barrier a
        # rank that exits first intermittently aborted the other at exit ("terminate called without an
        # active exception", SIGABRT).
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def on_two_ranks(body: Callable[[int], dict], out_dir: Path) -> list[dict]:
    """``body(rank)`` (a module-level function: it is pickled to the processes) on each of 2 gloo ranks;
    returns what each rank's call returned (tensors and plain values), in rank order."""
    mp.spawn(_entry, args=(free_port(), body, str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(WORLD)]
