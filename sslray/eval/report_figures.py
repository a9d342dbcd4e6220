"""The figures of ``sslray report`` and their captions: pretraining curves read back from the runs'
TensorBoard events, linear-probe curves, t-SNE maps and the metrics against each knob.

t-SNE maps the val features the probes already used (``OUT/cache``: no second extraction) of each run's
best checkpoint, or of its checkpoints at ``--tsne-epochs``; at most ``TSNE_POINTS`` points per map, a
stratified subsample (``sslray.eval.plots``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslray.errors import UserError
from sslray.eval.evaluate import slug
from sslray.eval.features import Encoder, checkpoint_encoder, extract_features
from sslray.eval.knobs import knob_points
from sslray.eval.plots import TSNEConfig, plot_curves, plot_knob, plot_tsne
from sslray.eval.protocols import EvalSplits, Trained
from sslray.eval.report_table import BASELINES
from sslray.runs.checkpoint import checkpoint_folders

KNOB_METRICS = {"knn top1": "kNN top-1", "linear val top1": "linear probe val top-1"}
TSNE_POINTS = TSNEConfig().max_points  # per map; the quickstart's 500 queries are all drawn
CACHE = "cache"  # the report's feature cache: OUT/cache/<run>/, OUT/cache/baselines/


@dataclass(frozen=True)
class Compared:
    """What a report compares, and on which images."""

    target: Path  # the run, sweep or folder of runs given
    runs: list[Path]  # in folder order
    encoders: dict[Path, Encoder]  # each run's best checkpoint
    splits: EvalSplits  # --data, else the first run's kNN splits
    knobs: dict[str, dict[Path, Any]] = field(default_factory=dict)  # knob -> run -> value (None: not in its recipe)
    curves: dict[str, dict] = field(default_factory=dict)  # run name -> TensorBoard tag -> (epoch, value)

    def classes(self) -> list[str] | None:
        from sslray.data.pipeline import open_prepared

        return open_prepared(self.splits.train).classes

    def describe(self) -> str:
        """One sentence: what was compared."""
        n, target = len(self.runs), self.target
        if n == 1 and self.runs[0] == target:
            what = f"The run {target} at its best checkpoint (epoch {self.encoders[self.runs[0]].epoch})"
        elif (target / "space.yaml").is_file():
            what = f"The {n} trials of the sweep {target}, each at its best checkpoint,"
        else:
            what = f"The {n} runs in {target}, each at its best checkpoint,"
        return f"{what} next to two baselines of the same architecture on the same images: random init and raw pixels."


@dataclass(frozen=True)
class ReportFigures:
    """Which optional figures a report draws."""

    tsne_epochs: list[int] | None = None  # t-SNE at these pretraining epochs (None: each run's best checkpoint)
    vs: list[str] | None = None  # knobs to plot the metrics against (None: those a sweep's trials differ in)


@dataclass
class Drawn:
    figures: list[tuple[str, str]]  # (file, caption), in page order
    knob_curves: dict[str, list[dict]]


def cache_folder(out: Path, name: str) -> Path:
    """``OUT/cache/<run>`` (``baselines`` for random init and raw pixels)."""
    return out / CACHE / slug(name)


def event_scalars(run: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series of the given TensorBoard tags of a run's own event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    present = set(accumulator.Tags().get("scalars", []))
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags if tag in present}


def pretraining_curves(runs: list[Path]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Each run's loss, online kNN and seconds per epoch, by run name."""
    return {run.name: event_scalars(run, ("train/loss", "eval/knn_top1", "perf/seconds")) for run in runs}


def seconds_per_epoch(curves: dict, name: str) -> float | None:
    seconds = [v for _, v in curves.get(name, {}).get("perf/seconds", [])]
    return sum(seconds) / len(seconds) if seconds else None


def write_figures(
    compared: Compared, out: Path, rows: list[dict], trained: dict[str, Trained], figures: ReportFigures, device="cpu"
) -> Drawn:
    """Every figure of the report, drawn into ``out``; returns them with their captions, and the knob curves."""
    drawn = Drawn([], {})
    for tag, file, label in (
        ("train/loss", "loss.png", "pretraining loss"),
        ("eval/knn_top1", "knn.png", "online kNN top-1"),
    ):
        series = {name: values[tag] for name, values in compared.curves.items() if tag in values}
        if series:
            plot_curves(series, out / file, title=f"{label} per epoch", xlabel="pretraining epoch", ylabel=label)
            drawn.figures.append((file, f"{label[0].upper() + label[1:]} per pretraining epoch, every run."))
    plot_curves(
        {name: [(h["epoch"], h["val_top1"]) for h in probe.history] for name, probe in trained.items()},
        out / "linear_probe.png",
        title="linear probe: val top-1 per epoch",
        xlabel="linear-probe epoch",
        ylabel="val top-1",
    )
    drawn.figures.append(
        ("linear_probe.png", "Linear probe: val top-1 after each probe epoch, every run and baseline.")
    )
    if (out / "confusion.png").is_file():
        drawn.figures.append(("confusion.png", "The best run's linear-probe confusion matrix (rows: true class)."))
    drawn.figures += _knob_figures(compared, out, rows, drawn.knob_curves)
    drawn.figures += _tsne_figures(compared, out, figures.tsne_epochs, device)
    return drawn


def _knob_figures(compared: Compared, out: Path, rows: list[dict], curves: dict) -> list[tuple[str, str]]:
    """``knob_<knob>.png`` per knob: each metric against the knob's value, baselines dashed; fills ``curves``."""
    baselines, drawn = {r["name"]: r for r in rows if r["name"] in BASELINES}, []
    for knob, values in compared.knobs.items():
        named = {run.name: value for run, value in values.items()}
        curves[knob] = knob_points(named, rows, tuple(KNOB_METRICS))
        path = out / f"knob_{slug(knob)}.png"
        plot_knob(
            curves[knob],
            baselines,
            path,
            knob=knob,
            metrics=KNOB_METRICS,
            title=f"the metrics against {knob}",
        )
        lacking = sum(value is None for value in values.values())
        drawn.append(
            (
                path.name,
                f"kNN and linear-probe top-1 against {knob}: the mean over the runs sharing a value, +-1 std, each "
                "run a dot; the baselines as horizontal lines"
                + (f"; {lacking} run(s) without {knob} left out." if lacking else "."),
            )
        )
    return drawn


def _tsne_figures(compared: Compared, out: Path, epochs: list[int] | None, device) -> list[tuple[str, str]]:
    """``tsne_<run>_epoch<E>.png`` per run and chosen checkpoint, from the val features in the cache."""
    classes, drawn = compared.classes(), []
    for run in compared.runs:
        for encoder in tsne_encoders(run, compared.encoders[run], epochs):
            features, labels = extract_features(
                encoder,
                compared.splits.val,
                compared.splits.val_limit,
                device,
                cache_folder(out, run.name),
                where="--data (val split)",
            )
            keep = labels >= 0
            path = out / f"tsne_{slug(run.name)}_epoch{encoder.epoch}.png"
            title = f"{run.name}, epoch {encoder.epoch}: t-SNE of val embeddings"
            plot_tsne(
                features[keep],
                labels[keep],
                path,
                class_names=classes,
                title=title,
                tsne=TSNEConfig(max_points=TSNE_POINTS),
            )
            drawn.append(
                (
                    path.name,
                    f"t-SNE of the val features of {run.name} at pretraining epoch {encoder.epoch}, by class "
                    f"(at most {TSNE_POINTS} points, stratified).",
                )
            )
    return drawn


def tsne_encoders(run: Path, best: Encoder, epochs: list[int] | None) -> list[Encoder]:
    """The run's best checkpoint, or its checkpoints at the requested pretraining epochs."""
    if not epochs:
        return [best]
    kept = {e.epoch: e for e in map(checkpoint_encoder, checkpoint_folders(run))}
    missing = [e for e in epochs if e not in kept]
    if missing:
        raise UserError(
            f"--tsne-epochs: {run} kept no checkpoint for epoch(s) {', '.join(map(str, missing))} "
            f"(kept: {', '.join(map(str, sorted(kept)))})"
        )
    return [kept[e] for e in epochs]
