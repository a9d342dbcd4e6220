"""A metric against one knob of the runs in a report (``sslray report SWEEP --vs KNOB``): the curve a
one-knob ablation is run for, e.g. SimCLR's kNN against its temperature.

A knob is a dotted recipe key (``method.temperature``, ``optim.base_lr``); each run's value is read from
its own recipe, so a sweep's trials and a folder of separate runs work alike. Runs that share a value
(repeated seeds: ``train.seed: {grid: [0, 1]}``) are one point: their mean, with the standard deviation
and the individual runs shown. Without ``--vs``, a sweep report draws every knob its trials differ in
(Tune's ``params.json``), the seed excepted.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from sslray.errors import UserError
from sslray.recipe import Recipe

NOT_A_CURVE = ("train.seed",)  # what repeats a point, not what moves it


def _lookup(recipe: Recipe, knob: str) -> tuple[bool, Any]:
    """(True, value) of dotted ``knob`` in the recipe, else (False, the keys where the lookup stopped)."""
    node: Any = recipe.to_dict()
    for part in knob.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, sorted(node) if isinstance(node, dict) else []
        node = node[part]
    return True, node


def knob_value(recipe: Recipe, knob: str, run: Path) -> Any:
    """The value of dotted ``knob`` in ``run``'s recipe; a UserError naming the keys there if absent."""
    found, node = _lookup(recipe, knob)
    if not found:
        raise UserError(
            f"--vs {knob}: {run} has no {knob} in its recipe"
            + (f" (keys there: {', '.join(map(str, node))})" if node else "")
        )
    if isinstance(node, (dict, list)):
        raise UserError(f"--vs {knob}: a section, not a knob; name one of its keys, e.g. {knob}.{next(iter(node), '')}")
    return node


def knob_values(recipes: dict[Path, Recipe], knob: str) -> dict[Path, Any]:
    """Each run's value of ``knob``, None where its recipe has no such key (in a sweep over methods, BYOL
    has no temperature); a knob that no run has, or a section, is ``knob_value``'s UserError."""
    values = {
        run: knob_value(recipe, knob, run) if _lookup(recipe, knob)[0] else None for run, recipe in recipes.items()
    }
    if recipes and all(value is None for value in values.values()):
        run, recipe = next(iter(recipes.items()))
        knob_value(recipe, knob, run)  # raises, naming the keys of the first run
    return values


def swept_knobs(runs: list[Path]) -> list[str]:
    """The knobs a sweep's trials differ in (from Tune's ``params.json``), seed excepted, sorted."""
    values: dict[str, set] = {}
    for run in runs:
        params = run / "params.json"
        if params.is_file():
            for key, value in json.loads(params.read_text()).items():
                values.setdefault(key, set()).add(json.dumps(value))
    return sorted(k for k, v in values.items() if len(v) > 1 and k not in NOT_A_CURVE)


def knob_points(values: dict[str, Any], rows: list[dict], metrics: tuple[str, ...]) -> list[dict]:
    """One point per distinct knob value: ``{"value", "n", "runs", metric: {"mean", "std", "values"}}``,
    in order of value (numbers numerically, anything else as text); runs whose value is None are left out."""
    by_name = {row["name"]: row for row in rows}
    groups: dict[Any, list[str]] = {}
    for name, value in values.items():
        if value is not None:  # a run without the knob is no point on its curve
            groups.setdefault(value, []).append(name)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in groups)
    points = []
    for value in sorted(groups, key=(lambda v: v) if numeric else str):
        names = groups[value]
        point: dict[str, Any] = {"value": value, "n": len(names), "runs": names}
        for metric in metrics:
            got = [by_name[n][metric] for n in names if by_name[n].get(metric) is not None]
            point[metric] = {
                "mean": statistics.fmean(got) if got else None,
                "std": statistics.stdev(got) if len(got) > 1 else 0.0,
                "values": got,
            }
        points.append(point)
    return points
