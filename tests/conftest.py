"""Shared fixtures and builders:

- ``ray_local``: one small local Ray (2 CPUs, 127.0.0.1) per test session, started on first use;
- ``tiny_fmnist``: a few hundred real Fashion-MNIST images, prepared once per test session;
- ``tiny_recipe``: a recipe that trains on them in seconds on one CPU; ``tiny_grid`` the same as a
  two-trial search space;
- ``assert_one_line_error``: what a user's mistake prints (docs/architecture.md: one line, exit code 2);
- ``USER_ENV`` and ``is_loopback`` for the tests that check that Ray stays on loopback.

Modules import the plain functions (``from ..conftest import tiny_recipe``); fixtures come by name.
"""

import ipaddress
import os
from pathlib import Path

from sslray.cluster import use_loopback

# A user's shell: without what use_loopback() (just below) and the session's Ray put into this process.
USER_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GLOO_"))}

use_loopback()  # before anything imports ray

import pytest  # noqa: E402

from sslray.data.shards import ShardOptions, prepare  # noqa: E402

# SimCLR with small heads on a one-block ViT at 16 px: the cheapest model that is still a real one.
TINY_SIMCLR = {"name": "simclr", "temperature": 0.2, "proj_hidden_dim": 32, "proj_dim": 16}
TINY_VIT = {"name": "vit_tiny", "img_size": 16, "patch_size": 4, "in_chans": 1, "depth": 1}


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from sslray.cluster import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory) -> Path:
    """A prepared folder of real Fashion-MNIST: ``train/`` (256 images, two shards) and ``test/`` (128)."""
    root = tmp_path_factory.mktemp("fmnist")
    prepare("fashion-mnist", root, split="train", limit=256, options=ShardOptions(rows_per_shard=128, workers=1))
    prepare("fashion-mnist", root, split="test", limit=128, options=ShardOptions(workers=1))
    return root


def tiny_recipe(data: Path, method: dict = TINY_SIMCLR, backbone: dict = TINY_VIT, **train) -> dict:
    """A recipe on ``tiny_fmnist`` (``data``): 128 images at 16 px, one epoch on one worker, online kNN
    on the whole prepared folder; seconds per epoch on one CPU. ``train`` updates the train section."""
    return {
        "method": dict(method),
        "backbone": dict(backbone),
        "data": {
            "path": str(data / "train"),
            "knn_bank": str(data / "train"),
            "knn_query": str(data / "test"),
            "limit": 128,
            "knn_bank_limit": 256,
            "knn_query_limit": 128,
            "augment": {"size": 16},
        },
        "optim": {"name": "adamw", "base_lr": 1e-3},
        "train": {"epochs": 1, "batch_size": 32, "warmup_epochs": 0, **train},
        "scaling": {"num_workers": 1},
    }


def tiny_grid(data: Path, **train) -> dict:
    """``tiny_recipe`` as a search space: two one-epoch trials (a grid over the temperature), run one after
    the other."""
    space = tiny_recipe(data, **train)
    space["method"]["temperature"] = {"grid": [0.1, 0.2]}
    space["tune"] = {"seed": 0, "scheduler": {"name": "fifo"}, "metric": "loss"}
    return space


def assert_one_line_error(err: str, *needles: str) -> None:
    """``err`` (stderr) is one ``sslray: error: ...`` line, no traceback, naming every one of ``needles``."""
    assert err.count("\n") == 1 and err.startswith("sslray: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv6 socket bound to 127.0.0.1
    return (mapped or address).is_loopback


def read_leaderboard(sweep_dir: Path) -> tuple[list[dict], dict[str, dict]]:
    """leaderboard.csv of a sweep: the trials' rows, and the baseline rows (status "baseline") by name."""
    import csv

    with open(Path(sweep_dir) / "leaderboard.csv") as handle:
        rows = list(csv.DictReader(handle))
    return [r for r in rows if r["status"] != "baseline"], {r["trial"]: r for r in rows if r["status"] == "baseline"}
