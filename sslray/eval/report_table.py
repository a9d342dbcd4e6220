"""The comparison table of ``sslray report``, as ``summary.md``, the terminal and ``index.html`` show it.

Runs are ranked by ``SORT_BY`` (linear-probe val top-1; ties by kNN top-1, then name), best first; the
two baselines follow, unranked ("baseline" in the ``#`` column), so they stay in view however many runs
there are. A column per knob (a swept hyperparameter, or a ``--vs`` key) sits beside the method; a run
whose recipe lacks the knob (BYOL has no temperature) leaves its cell empty. Numbers show 4 significant
digits: metrics with trailing zeros kept (0.6880), so a column lines up, knob values without (0.001).
"""

from __future__ import annotations

import numbers
from typing import Any

BASELINES = ("random init", "raw pixels")
SORT_BY = ("linear val top1", "knn top1")  # the table's order: the first, then the second on ties
HEAD = ["#", "name", "method"]  # then the knobs
TAIL = ["backbone", "epoch", "params (M)", "s/epoch", "knn top1", "linear train top1", "linear val top1"]
# The method column already names the method; a knob that is the method's name would repeat it.
SHOWN_AS_COLUMN = {"method.name": "method"}


def is_baseline(row: dict) -> bool:
    return row.get("name") in BASELINES


def ranked(rows: list[dict]) -> list[dict]:
    """The rows in table order, each with its ``#``: runs best first (1, 2, ...), then the baselines."""

    def key(row: dict) -> tuple:
        return (*(-(row[m] if row.get(m) is not None else float("-inf")) for m in SORT_BY), row["name"])

    runs = sorted((r for r in rows if not is_baseline(r)), key=key)
    baselines = [r for r in rows if is_baseline(r)]
    return [{**r, "#": i + 1} for i, r in enumerate(runs)] + [{**r, "#": "baseline"} for r in baselines]


def knob_columns(knobs: list[str]) -> list[str]:
    return [k for k in knobs if k not in SHOWN_AS_COLUMN]


def columns(knobs: list[str]) -> list[str]:
    return HEAD + knob_columns(knobs) + TAIL


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_knob(column: str) -> bool:
    return "." in column  # knobs are dotted recipe keys; no other column has a dot


def cell(row: dict, column: str) -> str:
    """A cell's text: 4 significant digits, "-" for a value that does not apply, "" for a missing knob."""
    value = row.get(column)
    if value is None:
        return "" if is_knob(column) else "-"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    if is_number(value):
        return (f"{value:.4g}" if is_knob(column) else f"{value:#.4g}").rstrip(".")
    return str(value)


def is_numeric_column(rows: list[dict], column: str) -> bool:
    """Right-aligned: every value the column holds is a number (the ``#`` column included)."""
    present = [r.get(column) for r in rows if r.get(column) is not None and r.get(column) != "baseline"]
    return bool(present) and all(is_number(v) for v in present)


def markdown(rows: list[dict], header: list[str]) -> str:
    """The rows' ``header`` columns as a GitHub Markdown table, numbers right-aligned, padded so it reads
    as a table in a terminal too."""
    cells = [[cell(row, c).replace("|", "\\|") for c in header] for row in rows]
    widths = [max([len(h), *(len(line[i]) for line in cells)]) for i, h in enumerate(header)]
    right = [is_numeric_column(rows, c) for c in header]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)) + " |"

    separator = "|" + "|".join("-" * (w + 1) + (":" if r else "-") for w, r in zip(widths, right)) + "|"
    return "\n".join([line(header), separator, *map(line, cells)])
