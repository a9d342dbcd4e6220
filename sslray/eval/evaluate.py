"""``sslray eval``: one protocol on a run's best checkpoint, or on every k-th checkpoint (``--every``).

Writes to ``OUT`` (default ``RUN_DIR/eval/<protocol>``, never over an existing one without
``--overwrite``):

- ``results.json`` / ``results.md``: one row per evaluated checkpoint (top-1, top-5, images, options),
  then the baselines on the same protocol and splits (``baseline: true``): the run's architecture at
  random initialisation and raw pixels (fine-tuning: random init only, i.e. training from scratch);
- ``tb/<checkpoint>/``: TensorBoard scalars per probe / fine-tune epoch, and ``tb/series`` with the
  val top-1 against the pretraining epoch (``--every``);
- ``curves.png`` (val top-1 per probe epoch, one line per checkpoint), ``series.png`` (val top-1 vs
  pretraining epoch, as the ImageNet-100 study's curves), and for the linear probe and fine-tuning
  ``per_class.md`` + ``confusion.png`` of the last checkpoint evaluated.

Features are cached in ``RUN_DIR/eval/cache`` (see ``sslray.eval.features``).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from sslray.data.pipeline import open_prepared
from sslray.errors import UserError
from sslray.eval.classes import confusion, markdown_table, per_class_report
from sslray.eval.features import MODEL, Encoder, baseline_encoders, find_encoder, series_encoders
from sslray.eval.plots import plot_confusion, plot_curves
from sslray.eval.protocols import EvalContext, EvalOptions, EvalSplits, Trained
from sslray.eval.registry import PROTOCOLS
from sslray.runs.folders import EVAL, FolderKind, check_out, replace_folder
from sslray.runs.tensorboard import RunLogger

TABLE_COLUMNS = [
    "encoder",
    "method",
    "backbone",
    "protocol",
    "train_top1",
    "val_top1",
    "val_top5",
    "train_images",
    "val_images",
]


def run_dir_of(target: Path) -> Path:
    """The run folder a target belongs to (a checkpoint folder sits in RUN_DIR/checkpoints/)."""
    target = Path(target)
    if (target / MODEL).is_file() and target.parent.name == "checkpoints":
        return target.parent.parent
    return target


@contextmanager
def output_folder(out: Path, overwrite: bool, kind: FolderKind = EVAL, options: object = None) -> Iterator[Path]:
    """Create the output folder (``--overwrite`` replaces only an sslray folder of ``kind``) with its
    marker, options.json; if a user's mistake shows up only while writing (a checkpoint refused on
    load, a missing epoch), the half-made folder is removed again: otherwise the corrected command
    would stop at "already exists" and need --overwrite."""
    check_out(str(out), kind, overwrite)
    existed = out.exists()
    replace_folder(str(out), kind)
    out.mkdir(parents=True, exist_ok=True)
    (out / "options.json").write_text(
        json.dumps(asdict(options) if is_dataclass(options) else options, indent=2, default=str) + "\n"
    )
    try:
        yield out
    except UserError:
        shutil.rmtree(out, ignore_errors=True)
        if existed:  # it was empty (or replaced with --overwrite): leave the folder itself as it was
            out.mkdir(parents=True, exist_ok=True)
        raise


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def evaluate_one(
    encoder: Encoder,
    splits: EvalSplits,
    options: EvalOptions,
    cache_dir: Path | None,
    logger: RunLogger | None,
    device="cpu",
) -> dict | Trained:
    """One protocol on one encoder, printing an epoch line per probe / fine-tune epoch."""
    protocol, name = PROTOCOLS[options.protocol], options.protocol

    def on_epoch(stats: dict) -> None:  # called by the protocols that train, whose options have epochs
        epochs = protocol.options(options).epochs
        sys.stdout.write(
            f"{encoder.name}  {name} epoch {stats['epoch']}/{epochs}  loss {stats['train_loss']:.4f}"
            f"  train top1 {stats['train_top1']:.3f}  val top1 {stats['val_top1']:.3f}\n"
        )
        sys.stdout.flush()
        if logger is not None:
            logger.scalars(
                {k: v for k, v in stats.items() if k != "epoch" and v is not None},
                step=stats["epoch"],
                prefix=f"{name}_{slug(encoder.name)}",
            )

    return protocol.run(encoder, splits, options, EvalContext(device, cache_dir, on_epoch))


def evaluate(
    target: Path, options: EvalOptions, out: Path | None = None, overwrite: bool = False, device="cpu"
) -> list[dict]:
    if options.protocol not in PROTOCOLS:
        raise UserError(f"--protocol: {options.protocol!r} is not allowed; choose one of {', '.join(PROTOCOLS)}")
    target = Path(target)
    if not target.exists():
        raise UserError(f"{target}: no such run folder or checkpoint")
    encoders = series_encoders(target, options.every) if options.every else [find_encoder(target)]
    run_dir = run_dir_of(target)
    splits = EvalSplits.of(encoders[0], options.data, options.train_limit, options.val_limit)
    options.knn = options.knn.resolved(encoders[0].recipe)
    if options.protocol == "knn":  # say which protocol: by default the run's own online one
        print(f"kNN k={options.knn.k} T={options.knn.temperature:g}, {splits.describe()}")
    cache_dir = run_dir / "eval" / "cache"

    rows, curves, last_trained = [], {}, None
    trains = PROTOCOLS[options.protocol].trains
    with output_folder(Path(out) if out else run_dir / "eval" / options.protocol, overwrite, EVAL, options) as out:
        with RunLogger(out / "tb") as logger:
            for encoder in encoders:
                outcome = evaluate_one(encoder, splits, options, cache_dir, logger, device)
                if trains:
                    curves[encoder.name] = [(h["epoch"], h["val_top1"]) for h in outcome.history]
                    last_trained, outcome = outcome, outcome.result
                rows.append({**outcome, "baseline": False})
                print(
                    f"{encoder.name}: {options.protocol} val top1 {outcome['val_top1']:.4f}  "
                    f"top5 {outcome['val_top5']:.4f}"
                )
                if encoder.epoch is not None:
                    logger.scalars(
                        {"val_top1": outcome["val_top1"], "val_top5": outcome["val_top5"]},
                        step=encoder.epoch,
                        prefix=f"series_{options.protocol}",
                    )
            baselines = evaluate_baselines(encoders[0], splits, options, cache_dir, device)
        write_results(out, rows + baselines, curves, options, last_trained, open_prepared(splits.train).classes)
    print(judgement(rows, baselines))
    print(f"results: {out}/results.md")
    return rows + baselines


def evaluate_baselines(encoder: Encoder, splits: EvalSplits, options: EvalOptions, cache_dir: Path, device) -> list:
    """The same protocol, splits and options on the run's architecture at random initialisation and on raw
    pixels: a pretrained encoder is worth something only above both. Fine-tuning has no raw-pixel row (no
    network to tune); its random-init row is training from scratch with the same labels and epochs."""
    rows = []
    for baseline in baseline_encoders(encoder.recipe):
        if baseline.kind == "pixels" and options.protocol == "finetune":
            continue
        outcome = evaluate_one(baseline, splits, options, cache_dir, None, device)
        outcome = outcome.result if PROTOCOLS[options.protocol].trains else outcome
        # No pretraining method behind either, and no network behind raw pixels: say so in the table.
        untrained = {"method": "-", **({"backbone": "-"} if baseline.kind == "pixels" else {})}
        rows.append({**outcome, **untrained, "baseline": True})
        print(f"{baseline.name} (baseline): {options.protocol} val top1 {outcome['val_top1']:.4f}")
    return rows


def judgement(rows: list[dict], baselines: list[dict]) -> str:
    """One line: the best evaluated checkpoint against each baseline, as a sweep's summary says it."""
    best = max(rows, key=lambda r: r["val_top1"])
    gaps = ", ".join(f"{best['val_top1'] - b['val_top1']:+.3f} vs {b['encoder']}" for b in baselines)
    return f"{best['encoder']}: val top1 {best['val_top1']:.4f}: {gaps}"


def write_results(
    out: Path,
    rows: list[dict],
    curves: dict,
    options: EvalOptions,
    trained: Trained | None,
    classes: list[str] | None = None,
) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    columns = [c for c in TABLE_COLUMNS if any(c in r for r in rows)]
    (out / "results.md").write_text(markdown_table(rows, columns) + "\n")
    name = PROTOCOLS[options.protocol].title(options)
    if curves:
        plot_curves(
            curves, out / "curves.png", title=f"{name}: val top-1 per epoch", xlabel=f"{name} epoch", ylabel="val top-1"
        )
    series = [r for r in rows if not r.get("baseline")]
    if len(series) > 1 and all(r["epoch"] is not None for r in series):
        plot_curves(
            {name: [(r["epoch"], r["val_top1"]) for r in series]},
            out / "series.png",
            title=f"{name} val top-1 vs pretraining epoch",
            xlabel="pretraining epoch",
            ylabel="val top-1",
            baselines={r["encoder"]: r["val_top1"] for r in rows if r.get("baseline")},
        )
    if trained is not None:
        write_class_report(out, trained, title=f"{trained.result['encoder']} ({name})", classes=classes)


def write_class_report(
    out: Path, trained: Trained, title: str, classes: list[str] | None = None, prefix: str = ""
) -> None:
    """Per-class precision / recall / F1 (Markdown) and the confusion matrix (PNG) of val predictions."""
    labels, predictions = trained.val_labels, trained.val_predictions
    report = per_class_report(labels, predictions, trained.num_classes, classes)
    (out / f"{prefix}per_class.md").write_text(f"# Per-class report: {title}\n\n" + markdown_table(report) + "\n")
    plot_confusion(
        confusion(labels, predictions, trained.num_classes),
        out / f"{prefix}confusion.png",
        class_names=classes or [str(c) for c in range(trained.num_classes)],
        title=title,
    )


def device_for(use_gpu: bool | None = None) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and use_gpu is not False else "cpu")
