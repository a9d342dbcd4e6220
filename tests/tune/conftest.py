"""``tiny_space``: sweeps of tiny trials on ``tiny_fmnist`` (tests/conftest.py, prepared once per session)."""

from __future__ import annotations

from pathlib import Path


def tiny_space(data: Path, **tune_section) -> dict:
    """A space of tiny ViT SimCLR trials on 128 images at 16 px: a few seconds per epoch on one CPU."""
    return {
        "method": {"name": "simclr", "temperature": 0.2, "proj_hidden_dim": 32, "proj_dim": 16},
        "backbone": {"name": "vit_tiny", "img_size": 16, "patch_size": 4, "in_chans": 1, "depth": 1},
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
        "train": {"epochs": 3, "batch_size": 32, "warmup_epochs": 0},
        "tune": {"seed": 0, **tune_section},
    }
