"""A sweep's baselines: its metric for the searched backbone at random initialisation and for raw pixels,
on the trials' own online protocol (``sslray.train.online_eval``), so every leaderboard shows what a
trial must beat.

Computed once per sweep by the driver before the first trial, written to ``baselines.json`` in the
sweep folder (read back on ``--resume``), and as TensorBoard runs ``baseline-random-init`` and
``baseline-raw-pixels`` whose ``eval/<metric>`` is a flat line over the sweep's epochs, next to the
trials' curves. Only evaluation metrics have baselines (a loss has none).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from sslray.runs import storage
from sslray.runs.tensorboard import RunLogger
from sslray.train.online_eval import BASELINES, OnlineEval, baselines
from sslray.tune.space import SearchSpace

BASELINES_FILE = "baselines.json"
EVAL_METRICS = ("knn_top1", "knn_top5", "linear_top1")


def sweep_baselines(space: SearchSpace, sweep_dir: str) -> dict:
    """``{"protocol": str, "metric": str, "values": {name: value}}`` for the sweep's metric, from
    ``baselines.json`` when the sweep has one, else computed and written there (on the driver's GPU if
    it has one); ``{}`` when the metric has no baseline, the recipe turns the online kNN off or
    ``tune.baselines`` is false."""
    metric = space.tune.metric
    location = storage.join(sweep_dir, BASELINES_FILE)
    if storage.has_files(location):
        return json.loads(storage.read_text(location, BASELINES_FILE))
    recipe = space.first_recipe()
    online = OnlineEval(recipe, "cuda" if torch.cuda.is_available() else "cpu")
    if metric not in EVAL_METRICS or not online.enabled or not space.tune.baselines:
        return {}
    found = baselines(online, linear_probe=metric == "linear_top1")  # the splits, decoded once, serve both
    result = {
        "protocol": online.describe(),
        "metric": metric,
        "backbone": recipe.backbone.name,
        "values": {name: found[name].get(metric) for name in BASELINES},
    }
    _write(space, result, sweep_dir)
    return result


def describe(result: dict) -> str:
    """One line: "baselines (kNN k=200 T=0.1, bank 1000 x queries 500): random-init 0.298, raw-pixels 0.716"."""
    values = ", ".join(f"{name} {value:.4g}" for name, value in result["values"].items() if value is not None)
    return f"baselines of {result['metric']} ({result['backbone']}; {result['protocol']}): {values}"


def _write(space: SearchSpace, result: dict, sweep_dir: str) -> None:
    """baselines.json and the two TensorBoard runs, written locally and uploaded when the sweep is at a URI."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(sweep_dir) if not storage.is_uri(sweep_dir) else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        (root / BASELINES_FILE).write_text(json.dumps(result, indent=2) + "\n")
        epochs = space.first_recipe().train.epochs
        for name, value in result["values"].items():
            if value is not None:
                with RunLogger(root / f"baseline-{name}") as logger:
                    for epoch in sorted({1, epochs}):
                        logger.scalars({result["metric"]: value}, step=epoch, prefix="eval")
        if storage.is_uri(sweep_dir):
            storage.upload_folder(root, sweep_dir)
