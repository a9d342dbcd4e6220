"""sslray: self-supervised pretraining and hyperparameter sweeps on Ray.

The Python API (``sslray.api``) is reached from here without importing it up front, so that
``import sslray`` (and every ``sslray.*`` import, which runs this file first) stays free of Ray, torch
and pandas until a function is used: ``sslray.sweep``, ``sslray.train``, ``sslray.evaluate``,
``sslray.load_sweep``, their results ``sslray.SweepResult`` / ``sslray.Best``, and ``sslray.UserError``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {"sweep", "train", "evaluate", "load_sweep", "SweepResult", "Best"}


def __getattr__(name: str):
    # importlib by name: the API is the package's top layer, imported on first use (docs/architecture.md).
    if name in _API:
        return getattr(importlib.import_module("sslray.api"), name)
    if name == "UserError":
        return importlib.import_module("sslray.errors").UserError
    raise AttributeError(f"module 'sslray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "UserError"])
