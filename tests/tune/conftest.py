"""``tiny_space``: sweeps of tiny trials on ``tiny_fmnist`` (tests/conftest.py, prepared once per session)."""

from __future__ import annotations

from pathlib import Path

from ..conftest import tiny_recipe


def tiny_space(data: Path, **tune_section) -> dict:
    """``tiny_recipe`` (tests/conftest.py) for 3 epochs plus a ``tune:`` section: a space of tiny ViT
    SimCLR trials on 128 images at 16 px, a few seconds per epoch on one CPU."""
    return {**tiny_recipe(data, epochs=3), "tune": {"seed": 0, **tune_section}}
