"""The PNG figures of ``sslray report`` and ``sslray eval``: metric curves, t-SNE maps and confusion matrices.

Figures are drawn on matplotlib's Agg canvas (no display needed) as plain ``Figure`` objects rather than
through ``pyplot``: pyplot keeps every figure in a global registry until it is closed and switching it to
Agg would change the backend of a notebook that imports us, while a ``Figure`` is freed with its last
reference, is private to the caller's thread, and leaves the user's backend alone. ``layout="constrained"``
makes room for titles and outside legends without ``bbox_inches="tight"``, so a PNG is exactly
``figsize * DPI`` pixels. Every ``plot_*`` function creates the parent folders and returns the PNG's path.

t-SNE (van der Maaten & Hinton 2008) is ``sklearn.manifold.TSNE`` with PCA initialisation and the
"auto" learning rate (max(N / 12 / 4, 50), Belkina et al. 2019), both of which make the map stable and
reproducible given the seed; the default perplexity 30 shrinks to (N - 1) / 3 on small sets because
each point needs about 3 * perplexity neighbours. Its gradient runs on one OpenMP thread: the
process holds two OpenMP runtimes (torch's and scikit-learn's), and with a thread per core their
busy-waiting threads fight each other and any other load, so a 500-point map took 1 to 29 s at random
on a 2-core machine (16 s on average inside ``sslray report``), against a steady 1.3 s on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

DPI = 120
CURVES_SIZE = (8.0, 5.0)  # inches; 960 x 600 pixels at DPI
TSNE_SIZE = (8.0, 6.5)
LEGEND_INSIDE_MAX = 8  # more entries than this go beside the axes, where they hide no data


def _numpy(values: Any) -> np.ndarray:
    """A torch tensor (any device or dtype, bfloat16 included) or array-like as a numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        values = values.float() if values.is_floating_point() else values
        values = values.numpy()
    return np.asarray(values)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(path)
    return path


def _legend(fig: Figure, ax, title: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) > LEGEND_INSIDE_MAX:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, title=title, markerscale=2)
    else:
        ax.legend(loc="best", fontsize=8, title=title, markerscale=2)


def curves_figure(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    baselines: dict[str, float] | None = None,
) -> Figure:
    """The figure ``plot_curves`` saves: one line with markers per series (a 1-point series shows as a
    dot), one dashed horizontal line per baseline, integer x ticks when every x is a whole number."""
    fig = Figure(figsize=CURVES_SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    xs = []
    for index, (name, points) in enumerate(series.items()):
        if not points:
            continue
        x, y = zip(*sorted(points))
        xs += x
        # Colours repeat after 10 series; the marker changes with them, so no two series look alike.
        ax.plot(x, y, marker="os^Dv"[index // 10 % 5], markersize=4, color=f"C{index % 10}", label=name)
    for index, (name, value) in enumerate((baselines or {}).items(), start=len(series)):
        ax.axhline(value, linestyle="--", linewidth=1.2, color=f"C{index % 10}", label=f"{name} ({value:.3g})")
    if xs and all(float(x).is_integer() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no tick at 2.5
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    return fig


def plot_curves(
    series: dict[str, list[tuple[float, float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    baselines: dict[str, float] | None = None,
) -> Path:
    """``series`` maps a name to its (x, y) points, e.g. ``{"simclr": [(1, 0.61), (2, 0.68)]}``;
    ``baselines`` maps a name to a constant, e.g. ``{"raw pixels kNN": 0.855}``."""
    return _save(curves_figure(series, title=title, xlabel=xlabel, ylabel=ylabel, baselines=baselines), path)


def stratified_indices(labels: Any, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` rows, each class keeping its share of the rows.

    Quotas are the largest-remainder rounding of ``max_points * class_count / N``, so they sum to exactly
    ``max_points``; which rows a class keeps is a seeded permutation, so the same seed gives the same rows.
    """
    labels = _numpy(labels)
    if len(labels) <= max_points:
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = max_points * counts / len(labels)
    quotas = np.floor(exact).astype(int)
    quotas[np.argsort(quotas - exact, kind="stable")[: max_points - quotas.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas)]
    return np.sort(np.concatenate(chosen))


def tsne_embedding(features: Any, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """2-D t-SNE coordinates ``[N, 2]`` of ``features`` ``[N, D]``; the same seed gives the same map."""
    from sklearn.manifold import TSNE  # imported here: it costs a second and only reports need it
    from threadpoolctl import threadpool_limits

    features = _numpy(features).astype(np.float32)
    if features.ndim != 2 or len(features) < 4:
        raise ValueError(f"t-SNE needs features [N, D] with N >= 4, got shape {features.shape}")
    perplexity = min(30.0, (len(features) - 1) / 3) if perplexity is None else perplexity
    tsne = TSNE(n_components=2, init="pca", learning_rate="auto", perplexity=perplexity, random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):  # one thread: see the module docstring
        return tsne.fit_transform(features)


@dataclass(frozen=True)
class TSNEConfig:
    seed: int = 0  # the subsample and the map: the same seed gives the same figure
    max_points: int = 2000  # a stratified subsample beyond this (sklearn's t-SNE takes minutes at 10^4)


def plot_tsne(
    features: Any,
    labels: Any,
    path: str | Path,
    *,
    class_names: list[str] | None = None,
    title: str = "t-SNE",
    tsne: TSNEConfig = TSNEConfig(),
) -> Path:
    """t-SNE of ``features`` ``[N, D]`` (a stratified subsample of at most ``tsne.max_points``), one colour
    per class of ``labels`` ``[N]`` (tab10, or tab20 above 10 classes; colours repeat above 20)."""
    features, labels = _numpy(features), _numpy(labels).astype(np.int64)
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} features but {len(labels)} labels")
    if class_names is not None and labels.size and labels.max() >= len(class_names):
        raise ValueError(f"label {labels.max()} has no name among {len(class_names)} class names")
    keep = stratified_indices(labels, tsne.max_points, tsne.seed)
    points, labels = tsne_embedding(features[keep], tsne.seed), labels[keep]

    classes = np.unique(labels)
    num_colours = 10 if max(len(class_names or ()), len(classes), int(classes.max()) + 1) <= 10 else 20
    colours = matplotlib.colormaps[f"tab{num_colours}"]
    fig = Figure(figsize=TSNE_SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for c in classes:
        on = labels == c
        name = class_names[c] if class_names is not None else str(c)
        ax.scatter(points[on, 0], points[on, 1], s=6, alpha=0.8, color=colours(c % num_colours), label=name)
    ax.set(title=f"{title} ({len(labels)} points)", xticks=[], yticks=[])  # t-SNE axes have no units
    _legend(fig, ax, title="class")
    return _save(fig, path)


def row_normalized(matrix: Any) -> np.ndarray:
    """Each row divided by its sum (a row is a true class, so entry [i, j] becomes P(predicted j | true i));
    a class with no examples keeps a row of zeros instead of 0/0."""
    matrix = _numpy(matrix).astype(np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_figure(matrix: Any, *, class_names: list[str], title: str, normalize: bool = True) -> Figure:
    """The figure ``plot_confusion`` saves: a heatmap with true classes as rows, predictions as columns,
    and each cell's value written in it when there are at most 20 classes (beyond that it is unreadable)."""
    counts = _numpy(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix is square [C, C], got shape {counts.shape}")
    num_classes = counts.shape[0]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class confusion matrix")
    values = row_normalized(counts) if normalize else counts.astype(np.float64)
    side = float(np.clip(3.0 + 0.5 * num_classes, 5.0, 16.0))
    fig = Figure(figsize=(side + 1.0, side), dpi=DPI, layout="constrained")  # + 1 inch for the colour bar
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(values.max(), 1.0))
    fig.colorbar(image, ax=ax, label="share of the true class" if normalize else "count")
    if num_classes <= 20:
        dark = 0.5 * image.norm.vmax  # white text on dark cells, black on light ones
        for (i, j), value in np.ndenumerate(values):
            ax.text(
                j,
                i,
                f"{value:.2f}" if normalize else f"{int(value)}",
                ha="center",
                va="center",
                fontsize=8 if num_classes <= 10 else 6,
                color="white" if value > dark else "black",
            )
    ticks = np.arange(num_classes)
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    return fig


def plot_confusion(
    matrix: Any, path: str | Path, *, class_names: list[str], title: str, normalize: bool = True
) -> Path:
    """Heatmap of a ``[C, C]`` confusion matrix of counts (rows true, columns predicted), row-normalised
    unless ``normalize=False``."""
    return _save(confusion_figure(matrix, class_names=class_names, title=title, normalize=normalize), path)


def knob_axis(values: list) -> str:
    """How ``plot_knob`` lays out a knob's values: "categories" for text; "1 - value, log" for values in
    [0, 1) crowding at 1 (EMA momenta 0.9 / 0.99 / 0.999 would share one pixel on a linear axis); "log"
    for positive values spanning 20x or more (learning rates); else "linear"."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "categories"
    low, high = min(values), max(values)
    if 0 <= low and high < 1 and high >= 0.99:
        return "1 - value, log"
    if low > 0 and high / low >= 20:
        return "log"
    return "linear"


def plot_knob(
    points: list[dict],
    baselines: dict[str, dict[str, float]],
    path: str | Path,
    *,
    knob: str,
    metrics: dict[str, str],
    title: str,
) -> Path:
    """``knob_figure`` saved as a PNG at ``path``."""
    return _save(knob_figure(points, baselines, knob=knob, metrics=metrics, title=title), path)


def knob_figure(
    points: list[dict], baselines: dict[str, dict[str, float]], *, knob: str, metrics: dict[str, str], title: str
) -> Figure:
    """One panel per metric (``metrics`` maps its key in ``points`` to a label): the mean over the runs
    at each knob value with +-1 std bars (``sslray.eval.knobs.knob_points``), each run as a small dot,
    each baseline (name -> metric -> value) as a dashed line; the x axis as ``knob_axis`` says."""
    fig = Figure(figsize=(5.0 * len(metrics), 4.2), dpi=DPI, layout="constrained")
    values = [p["value"] for p in points]
    axis = knob_axis(values)
    numeric = axis != "categories"
    xs = [float(v) for v in values] if numeric else list(range(len(values)))
    if axis == "1 - value, log":
        xs = [1.0 - x for x in xs]
    for index, (metric, label) in enumerate(metrics.items()):
        ax = fig.add_subplot(1, len(metrics), index + 1)
        for x, point in zip(xs, points):
            ax.plot([x] * len(point[metric]["values"]), point[metric]["values"], "o", color="C0", alpha=0.35, ms=3)
        means = [p[metric]["mean"] for p in points]
        spread = [p[metric]["std"] for p in points]
        ax.errorbar(xs, means, yerr=spread, marker="o", color="C0", capsize=3, label="mean +- std over runs")
        for style, (name, value) in zip(("--", ":", "-."), ((n, b[metric]) for n, b in baselines.items())):
            ax.axhline(value, linestyle=style, color="grey", linewidth=1.2, label=f"{name} ({value:.3g})")
        if axis == "categories":
            ax.set_xticks(xs, [str(v) for v in values])
        elif axis != "linear":
            ax.set_xscale("log")
        if axis == "1 - value, log":  # ticks read as the knob's own values, growing to the right
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{1 - x:.4g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.invert_xaxis()
        ax.set(xlabel=knob if axis in ("linear", "categories") else f"{knob} ({axis} axis)", ylabel=label, title=label)
        ax.grid(alpha=0.3)
        _legend(fig, ax)
    fig.suptitle(title)
    return fig
