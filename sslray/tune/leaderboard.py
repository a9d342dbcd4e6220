"""A sweep's leaderboard: one row per trial, best first, printed and written next to the trials.

``leaderboard.csv`` (for analysis: every number at full precision, an empty cell where a knob does not
apply or a value is missing, and each trial's folder), ``leaderboard.md`` (what is printed: 4 significant
digits, "-" for the empty cells), ``leaderboard.png`` (the metric per epoch of every trial: a colour per
method, a line style and marker per trial, its rank) and ``best.yaml``: the recipe of the best trial with
every value fixed, which ``sslray train best.yaml`` runs as it is.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from sslray.console import say
from sslray.recipe import recipe_from_dict
from sslray.train.trainer import plain


def significant(value: Any) -> str:
    """A value as sslray prints it, here and in the sweep's progress lines: a float to 4 significant
    digits, anything else as ``str``."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _format(value: Any) -> str:
    """A displayed cell: ``significant``, or "-" where the value is missing."""
    return "-" if value is None else significant(value)


def _exact(value: Any) -> str:
    """A CSV cell: the value as Python reads it back exactly (``float(repr(x)) == x``), empty for None."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def ranked(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Best metric first; trials without a metric (errored before an epoch) last."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: (r["best"] is None, sign * (r["best"] or 0.0), r["trial"]))


def table(space, rows: list[dict[str, Any]], cell=_format) -> tuple[list[str], list[list[str]]]:
    """Header and string cells, each value written by ``cell`` (``_format`` for display, where a knob
    that does not apply to a trial's method shows as '-'; ``_exact`` for the CSV)."""
    knobs = [k for k in space.knobs if k != "method.name"]
    metric = space.tune.metric
    header = ["#", "trial", "method", *knobs, f"best {metric}", "best epoch", f"last {metric}", "epochs", "minutes"]
    header += ["overhead_s", "status"]
    cells = []
    for rank, row in enumerate(rows, start=1):
        method = row["config"].get("method.name", space.methods[0])
        cells.append(
            [
                str(rank),
                row["trial"],
                method,
                *(cell(row["applicable"].get(k)) for k in knobs),
                cell(row["best"]),
                cell(row.get("best_epoch")),
                cell(row.get("last")),
                str(row["epochs"]),
                f"{row['minutes']:.1f}" if cell is _format else _exact(row["minutes"]),
                cell(row["overhead_s"]),
                row["status"],
            ]
        )
    return header, cells


def baseline_cells(space, header: list[str], baselines: dict, cell=_format) -> list[list[str]]:
    """Rows ``random-init`` and ``raw-pixels`` under the trials: their value in the metric's column,
    ``cell(None)`` elsewhere, status "baseline"."""
    metric_column = header.index(f"best {space.tune.metric}")
    cells = []
    for name, value in (baselines.get("values") or {}).items():
        row = [cell(None)] * len(header)
        row[1], row[2], row[metric_column], row[-1] = name, cell(None), cell(value), "baseline"
        cells.append(row)
    return cells


def versus_baselines(best: float | None, baselines: dict) -> str:
    """ ", +0.19 over random-init, -0.01 vs raw-pixels" for a best value (empty without baselines)."""
    if best is None:
        return ""
    words = {"random-init": "over random init", "raw-pixels": "vs raw pixels"}
    parts = [
        f"{best - value:+.3f} {words.get(name, 'vs ' + name)}"
        for name, value in (baselines.get("values") or {}).items()
        if value is not None
    ]
    return (": " + ", ".join(parts)) if parts else ""


def markdown(header: list[str], cells: list[list[str]]) -> str:
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)]) + "\n"


LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_curves(space, rows: list[dict[str, Any]], path: Path, baselines: dict | None = None) -> None:
    """``curves_figure`` saved as a PNG."""
    import matplotlib.pyplot as plt

    fig = curves_figure(space, rows, baselines)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def curves_figure(space, rows: list[dict[str, Any]], baselines: dict | None = None):
    """The metric per epoch for every trial: a colour per method and, within a method, a line style and
    marker per trial, so that no two trials look alike; each curve ends in its rank (``#1`` is the best,
    drawn thicker) and the legend names the rank, method and knob values. Stopped trials end early; the
    baselines are grey dashed horizontal lines. ``rows`` are ranked, best first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(space.methods)}
    seen_of_method: dict[str, int] = {}
    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    for rank, row in enumerate(rows, start=1):
        if not row["curve"]:
            continue
        epochs, values = zip(*row["curve"])
        method = row["config"].get("method.name", space.methods[0])
        nth = seen_of_method[method] = seen_of_method.get(method, -1) + 1
        knobs = " ".join(
            f"{k.rsplit('.', 1)[-1]}={_format(v)}" for k, v in row["applicable"].items() if k != "method.name"
        )
        ax.plot(
            epochs,
            values,
            color=colours[method],
            linestyle=LINE_STYLES[nth % len(LINE_STYLES)],
            marker=MARKERS[nth % len(MARKERS)],
            markersize=4,
            linewidth=2.5 if rank == 1 else 1.2,
            alpha=0.9,
            label=f"#{rank} {method} {knobs}".rstrip(),
        )
        ax.annotate(
            f"#{rank}",
            (epochs[-1], values[-1]),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=7,
            color=colours[method],
            va="center",
        )
    for index, (name, value) in enumerate(((baselines or {}).get("values") or {}).items()):
        if value is not None:
            ax.axhline(
                value, linestyle="--", linewidth=1.2, color=("0.35", "0.65")[index % 2], label=f"{name} (baseline)"
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(space.tune.metric)
    ax.set_title(f"{Path(space.source).name}: {space.tune.metric} per trial (#rank at each curve's end)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def write_best(space, row: dict[str, Any], path: Path) -> None:
    recipe = space.trial_recipe(row["config"])
    recipe_from_dict(recipe)  # it is a valid fixed recipe, or this raises before anything is written
    knobs = ", ".join(f"{k}={_format(v)}" for k, v in row["applicable"].items())
    header = (
        f"# Best trial of the sweep {space.source}: {row['trial']} ({space.tune.metric} "
        f"{_format(row['best'])} at epoch {_format(row.get('best_epoch'))} of {row['epochs']}; "
        f"last {_format(row.get('last'))})\n# searched: {knobs or 'nothing'}\n"
        f"# run it: sslray train {path}\n"
    )
    path.write_text(header + yaml.safe_dump(plain(recipe), sort_keys=False))


def write_leaderboard(
    space, rows: list[dict[str, Any]], sweep_dir: Path, shown_as: str | None = None, baselines: dict | None = None
) -> list[dict[str, Any]]:
    """Write leaderboard.md/.csv/.png and best.yaml into ``sweep_dir``, with the ``baselines`` (see
    ``sslray.tune.baselines``) as rows and lines; the printed lines name the sweep as ``shown_as`` (its
    URI when these files are uploaded there afterwards)."""
    baselines = baselines or {}
    rows = ranked(rows, space.tune.mode)
    header, cells = table(space, rows)
    cells += baseline_cells(space, header, baselines)
    text = markdown(header, cells)
    (sweep_dir / "leaderboard.md").write_text(text)
    header, exact = table(space, rows, cell=_exact)
    exact += baseline_cells(space, header, baselines, cell=_exact)
    paths = [row.get("path", "") for row in rows] + [""] * (len(exact) - len(rows))
    with open(sweep_dir / "leaderboard.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "path"])
        writer.writerows([*row, path] for row, path in zip(exact, paths))
    plot_curves(space, rows, sweep_dir / "leaderboard.png", baselines)
    say("\n" + text)
    shown = shown_as or str(sweep_dir)
    if rows and rows[0]["best"] is not None:
        write_best(space, rows[0], sweep_dir / "best.yaml")
        best = rows[0]
        say(
            f"best: {best['trial']} {space.tune.metric} {_format(best['best'])}"
            f"{versus_baselines(best['best'], baselines)} -> {shown}/best.yaml  (sslray train {shown}/best.yaml)"
        )
    say(f"leaderboard: {shown}/leaderboard.md  (.csv, .png)\ncurves:      tensorboard --logdir {shown}")
    return rows
