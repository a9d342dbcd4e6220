"""``sslray report``: one self-contained folder comparing the runs of a run or sweep folder.

For every run (a run folder, each trial of a sweep, or each run in a folder of runs) and two
baselines (the same architecture at random initialisation, and raw pixels):

- ``summary.md`` / ``index.html``: the comparison table (method, backbone, params, time/epoch,
  kNN top-1, linear-probe train and val top-1), the shape of the seed study's table, then the figures;
- ``loss.png`` and ``knn.png``: pretraining loss and online kNN per epoch, every run on one axis
  (read back from the runs' TensorBoard event files);
- ``linear_probe.png``: val top-1 per linear-probe epoch of every encoder;
- ``tsne_<run>_epoch<E>.png``: t-SNE of val embeddings at the chosen pretraining epochs, by class;
- ``confusion.png`` and ``per_class.md``: the best run's linear-probe confusion matrix and per-class
  precision / recall / F1.

Evaluations use cached features (``RUN_DIR/eval/cache``), so a second report costs only the probes.
"""

from __future__ import annotations

import html
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sslray.errors import UserError
from sslray.eval.classes import html_table, markdown_table
from sslray.eval.evaluate import output_folder, slug, write_class_report
from sslray.eval.features import Encoder, baseline_encoders, checkpoint_encoder, extract_features, find_encoder
from sslray.eval.knobs import knob_points, knob_value, swept_knobs
from sslray.eval.plots import plot_curves, plot_knob, plot_tsne
from sslray.eval.protocols import EvalContext, EvalOptions, EvalSplits, run_knn, run_linear
from sslray.eval.registry import PROTOCOLS
from sslray.runs.checkpoint import checkpoint_folders
from sslray.runs.folders import REPORT

COLUMNS = ["name", "method", "backbone", "params (M)", "s/epoch", "knn top1", "linear train top1", "linear val top1"]


def find_runs(target: Path) -> list[Path]:
    """The run folders under ``target``: itself if it is one, else its sub-folders that are (a sweep's
    trials, or a folder of runs)."""
    target = Path(target)
    if not target.is_dir():
        raise UserError(f"{target}: no such run or sweep folder")

    def is_run(folder: Path) -> bool:
        return bool(checkpoint_folders(folder))

    if is_run(target):
        return [target]
    runs = sorted(p for p in target.iterdir() if p.is_dir() and is_run(p))
    if not runs:
        raise UserError(
            f"{target}: no run with checkpoints here (expected RUN/checkpoints/checkpoint_*/, "
            "a sweep's TRIAL/checkpoint_*/, or sub-folders that are runs)"
        )
    return runs


def event_scalars(run: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series of the given TensorBoard tags of a run's own event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    present = set(accumulator.Tags().get("scalars", []))
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags if tag in present}


def params_millions(encoder: Encoder) -> float | None:
    if encoder.kind == "pixels":
        return None
    return sum(p.numel() for p in encoder.build("cpu").parameters()) / 1e6


@dataclass(frozen=True)
class Compared:
    """What a report compares, and on which images."""

    runs: list[Path]  # in table order
    encoders: dict[Path, Encoder]  # each run's best checkpoint
    splits: EvalSplits  # --data, else the first run's kNN splits


@dataclass(frozen=True)
class ReportFigures:
    """Which optional figures a report draws."""

    tsne_epochs: list[int] | None = None  # t-SNE at these pretraining epochs (None: each run's best checkpoint)
    vs: list[str] | None = None  # knobs to plot the metrics against (None: those a sweep's trials differ in)


def build_report(
    target: Path,
    out: Path,
    options: EvalOptions,
    figures: ReportFigures = ReportFigures(),
    overwrite: bool = False,
    device="cpu",
) -> Path:
    runs = find_runs(target)
    encoders = {run: find_encoder(run) for run in runs}
    tsne_epochs = figures.tsne_epochs
    knobs = list(figures.vs) if figures.vs else swept_knobs(runs)
    for knob in knobs:  # a mistyped knob fails before any evaluation
        for run in runs:
            knob_value(encoders[run].recipe, knob, run)
    splits = EvalSplits.of(encoders[runs[0]], options.data, options.train_limit, options.val_limit)
    options.knn = options.knn.resolved(encoders[runs[0]].recipe)
    print(f"report: kNN k={options.knn.k} T={options.knn.temperature:g} and linear probe, {splits.describe()}")
    with output_folder(Path(out), overwrite, REPORT, options) as out:
        return _write_report(Compared(runs, encoders, splits), out, options, tsne_epochs, device, knobs)


def _write_report(
    compared: Compared, out: Path, options: EvalOptions, tsne_epochs: list[int] | None, device, knobs: list[str]
) -> Path:
    runs, encoders, splits = compared.runs, compared.encoders, compared.splits
    first = encoders[runs[0]]
    classes = _class_names(splits.train)

    curves = {run.name: event_scalars(run, ("train/loss", "eval/knn_top1", "perf/seconds")) for run in runs}
    for tag, file, label in (
        ("train/loss", "loss.png", "pretraining loss"),
        ("eval/knn_top1", "knn.png", "online kNN top-1"),
    ):
        series = {name: values[tag] for name, values in curves.items() if tag in values}
        if series:
            plot_curves(series, out / file, title=f"{label} per epoch", xlabel="pretraining epoch", ylabel=label)

    # Baselines use the first run's architecture and data geometry; runs may differ in method only.
    rows, probe_curves, best = [], {}, None
    cached = replace(options, augment=False)  # the report probes cached features only
    evaluated = [(run.name, encoders[run], run / "eval" / "cache") for run in runs]
    evaluated += [(encoder.name, encoder, runs[0] / "eval" / "cache") for encoder in baseline_encoders(first.recipe)]
    for name, encoder, cache in evaluated:
        sys.stdout.write(f"report: {name} ({encoder.name})\n")
        knn = run_knn(encoder, splits, cached, EvalContext(device, cache))
        probe = run_linear(encoder, splits, cached, EvalContext(device, cache))
        probe_curves[name] = [(h["epoch"], h["val_top1"]) for h in probe.history]
        seconds = [v for _, v in curves.get(name, {}).get("perf/seconds", [])]
        rows.append(
            {
                "name": name,
                "method": encoder.recipe.method_name if encoder.kind == "checkpoint" else "-",
                "backbone": encoder.recipe.backbone.name if encoder.kind != "pixels" else "-",
                "params (M)": params_millions(encoder),
                "s/epoch": sum(seconds) / len(seconds) if seconds else None,
                "knn top1": knn["val_top1"],
                "linear train top1": probe.result["train_top1"],
                "linear val top1": probe.result["val_top1"],
                "epoch": encoder.epoch,
            }
        )
        if encoder.kind == "checkpoint" and (best is None or probe.result["val_top1"] > best[1].result["val_top1"]):
            best = (name, probe)
    linear = PROTOCOLS["linear"].title(options)
    plot_curves(
        probe_curves,
        out / "linear_probe.png",
        title=f"{linear}: val top-1 per epoch",
        xlabel="linear-probe epoch",
        ylabel="val top-1",
    )
    write_class_report(out, best[1], title=f"{best[0]}, {linear}", classes=classes)

    tsne_files = []
    for run in runs:
        chosen = _tsne_encoders(run, encoders[run], tsne_epochs)
        for encoder in chosen:
            features, labels = extract_features(
                encoder, splits.val, splits.val_limit, device, run / "eval" / "cache", where="--data (val split)"
            )
            keep = labels >= 0
            path = out / f"tsne_{slug(run.name)}_epoch{encoder.epoch}.png"
            plot_tsne(
                features[keep],
                labels[keep],
                path,
                class_names=classes,
                title=f"{run.name}, epoch {encoder.epoch}: t-SNE of val embeddings",
            )
            tsne_files.append(path.name)

    knob_curves, knob_files = _knob_figures(compared, rows, knobs, out)
    settings = {"splits": asdict(splits), "knn": asdict(options.knn), "linear probe": asdict(options.probe)}
    results = {"rows": rows, "settings": settings, "knobs": knob_curves}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    figures = [f for f in ("loss.png", "knn.png", "linear_probe.png", "confusion.png") if (out / f).is_file()]
    figures += knob_files
    _write_summary(out, rows, figures + tsne_files, settings, best[0])
    print(markdown_table(rows, COLUMNS))
    print(f"report: {out / 'summary.md'} (open {out / 'index.html'} in a browser)")
    return out


KNOB_METRICS = {"knn top1": "kNN top-1", "linear val top1": "linear probe val top-1"}


def _knob_figures(compared: Compared, rows: list[dict], knobs: list[str], out: Path) -> tuple[dict, list[str]]:
    """``knob_<knob>.png`` per knob: each metric against the knob's value, baselines dashed."""
    baselines = {r["name"]: r for r in rows if r["name"] in ("random init", "raw pixels")}
    curves, files = {}, []
    for knob in knobs:
        values = {run.name: knob_value(compared.encoders[run].recipe, knob, run) for run in compared.runs}
        curves[knob] = knob_points(values, rows, tuple(KNOB_METRICS))
        path = out / f"knob_{slug(knob)}.png"
        plot_knob(curves[knob], baselines, path, knob=knob, metrics=KNOB_METRICS, title=f"the metrics against {knob}")
        files.append(path.name)
    return curves, files


def _tsne_encoders(run: Path, best: Encoder, epochs: list[int] | None) -> list[Encoder]:
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


def _class_names(split: str) -> list[str] | None:
    from sslray.data.pipeline import open_prepared

    return open_prepared(split).classes


def _write_summary(out: Path, rows: list[dict], figures: list[str], settings: dict, best: str) -> None:
    lines = [
        "# sslray report",
        "",
        markdown_table(rows, COLUMNS),
        "",
        f"kNN: weighted vote, k={settings['knn']['k']}, T={settings['knn']['temperature']}, cosine similarity. "
        f"Linear probe: BatchNorm (no affine) + linear on frozen features, {settings['linear probe']['epochs']} "
        f"epochs, {settings['linear probe']['optimizer']}. Train split {settings['splits']['train']} "
        f"(limit {settings['splits']['train_limit']}), val split {settings['splits']['val']} "
        f"(limit {settings['splits']['val_limit']}).",
        "",
        f"## Per-class precision / recall / F1 of the best run ({best}), linear probe",
        "",
        (out / "per_class.md").read_text().split("\n", 2)[2].strip(),
        "",
    ]
    lines += [f"![{f}]({f})" for f in figures]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    body = [
        "<h1>sslray report</h1>",
        html_table(rows, COLUMNS),
        f"<p>{html.escape(lines[4])}</p>",
        f'<p><a href="per_class.md">per-class report of {html.escape(best)}</a></p>',
    ]
    body += [
        f'<figure><img src="{html.escape(f)}" style="max-width:48%"><figcaption>{html.escape(f)}</figcaption></figure>'
        for f in figures
    ]
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>sslray report</title>"
        "</head><body>" + "\n".join(body) + "</body></html>\n"
    )
