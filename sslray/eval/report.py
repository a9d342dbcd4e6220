"""``sslray report``: one self-contained folder comparing the runs of a run or sweep folder.

For every run (a run folder, each trial of a sweep, or each run in a folder of runs) and two
baselines (the same architecture at random initialisation, and raw pixels):

- ``summary.md`` / ``index.html``: what was compared and the protocol, the comparison table (runs best
  first by linear-probe val top-1, a column per swept knob, the baselines below; ``report_table``),
  the best run's per-class report, then the figures with captions. ``index.html`` is one file: inline
  CSS, figures embedded (``report_html``);
- ``loss.png`` and ``knn.png``: pretraining loss and online kNN per epoch, every run on one axis
  (read back from the runs' TensorBoard event files);
- ``linear_probe.png``: val top-1 per linear-probe epoch of every encoder;
- ``tsne_<run>_epoch<E>.png``: t-SNE of val embeddings at the chosen pretraining epochs, by class;
- ``knob_<knob>.png``: kNN and linear probe against each swept (or ``--vs``) knob;
- ``confusion.png`` and ``per_class.md``: the best run's linear-probe confusion matrix and per-class
  precision / recall / F1;
- ``results.json``: the rows (runs in folder order, then the baselines; ``rank`` gives the table's
  order), the settings and the knob curves.

Features are cached in the report's own folder, ``OUT/cache/<run>/`` and ``OUT/cache/baselines/``
(``sslray.eval.features``): a report never writes into the runs it reads, which may be shared or
read-only. ``--overwrite`` keeps that cache (``kept_cache``), so a second report costs only the probes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from sslray.data.pipeline import PreparedDataset, open_prepared
from sslray.errors import UserError
from sslray.eval.evaluate import output_folder, write_class_report
from sslray.eval.features import Encoder, baseline_encoders, cache_file, find_encoder
from sslray.eval.knobs import knob_values, swept_knobs
from sslray.eval.protocols import EvalContext, EvalOptions, EvalSplits, Trained, run_knn, run_linear
from sslray.eval.report_figures import (
    CACHE,
    Compared,
    ReportFigures,
    cache_folder,
    pretraining_curves,
    seconds_per_epoch,
    tsne_encoders,
    write_figures,
)
from sslray.eval.report_pages import write_pages
from sslray.eval.report_table import columns, markdown, ranked
from sslray.runs.checkpoint import checkpoint_folders
from sslray.runs.folders import REPORT, is_folder_of


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


def params_millions(encoder: Encoder) -> float | None:
    if encoder.kind == "pixels":
        return None
    return sum(p.numel() for p in encoder.build("cpu").parameters()) / 1e6


@contextmanager
def kept_cache(out: Path, overwrite: bool) -> Iterator[Callable[[], None]]:
    """``--overwrite`` replaces a report folder but keeps its feature cache: the cache is moved beside the
    folder (a rename) before it is replaced and back by the function this yields, once the new folder
    exists. If the report fails before that, the cache goes back only into a folder that is still a
    report; otherwise it is dropped with the rest."""
    cache, parked = out / CACHE, None
    if overwrite and cache.is_dir() and is_folder_of(str(out), REPORT):
        parked = Path(tempfile.mkdtemp(prefix=f".{out.name}-cache-", dir=out.parent))
        cache.rename(parked / CACHE)

    def restore() -> None:
        if parked is not None and (parked / CACHE).is_dir() and not cache.exists():
            (parked / CACHE).rename(cache)

    try:
        yield restore
    finally:
        if parked is not None:
            if out.is_dir() and is_folder_of(str(out), REPORT):
                restore()
            shutil.rmtree(parked, ignore_errors=True)


def build_report(
    target: Path,
    out: Path,
    options: EvalOptions,
    figures: ReportFigures | None = None,
    overwrite: bool = False,
    device="cpu",
) -> Path:
    figures = figures or ReportFigures()
    runs = find_runs(target)
    encoders = {run: find_encoder(run) for run in runs}
    recipes = {run: encoders[run].recipe for run in runs}
    # A mistyped --vs fails here, before any evaluation; a knob only some runs have is blank for the others.
    knobs = {knob: knob_values(recipes, knob) for knob in (figures.vs or swept_knobs(runs))}
    for run in runs:  # so does an epoch some run did not keep
        tsne_encoders(run, encoders[run], figures.tsne_epochs)
    splits = EvalSplits.of(encoders[runs[0]], options.data, options.train_limit, options.val_limit)
    options.knn = options.knn.resolved(encoders[runs[0]].recipe)
    print(f"report: kNN k={options.knn.k} T={options.knn.temperature:g} and linear probe, {splits.describe()}")
    compared = Compared(Path(target), runs, encoders, splits, knobs, pretraining_curves(runs))
    with kept_cache(Path(out), overwrite) as restore_cache:
        with output_folder(Path(out), overwrite, REPORT, options) as out:
            restore_cache()
            return _write_report(compared, out, options, figures, device)


def _evaluate(compared: Compared, out: Path, options: EvalOptions, device) -> tuple[list[dict], dict[str, Trained]]:
    """kNN and linear probe of every run's encoder, then of both baselines: the rows (runs in folder order,
    then the baselines) and each one's trained probe."""
    runs, encoders, splits = compared.runs, compared.encoders, compared.splits
    cached = replace(options, augment=False)  # the report probes cached features only
    # Baselines use the first run's architecture and data geometry; runs may differ in method only.
    evaluated = [(run.name, encoders[run], run) for run in runs]
    evaluated += [(e.name, e, None) for e in baseline_encoders(encoders[runs[0]].recipe)]
    prepared = [(open_prepared(splits.train), splits.train_limit), (open_prepared(splits.val), splits.val_limit)]
    rows, trained = [], {}
    for name, encoder, run in evaluated:
        start, cache = time.perf_counter(), cache_folder(out, name if run is not None else "baselines")
        hit = all(
            _from_run_cache(encoder, split, limit, (run or runs[0]) / "eval" / "cache", cache)
            for split, limit in prepared
        )
        knn = run_knn(encoder, splits, cached, EvalContext(device, cache))
        trained[name] = probe = run_linear(encoder, splits, cached, EvalContext(device, cache))
        print(
            f"report: {name} ({encoder.name}): kNN top-1 {knn['val_top1']:.4f}, linear val top-1 "
            f"{probe.result['val_top1']:.4f}; features {'cached' if hit else 'extracted'}, "
            f"{time.perf_counter() - start:.1f} s"
        )
        rows.append(
            {
                "name": name,
                "method": encoder.recipe.method_name if encoder.kind == "checkpoint" else "-",
                "backbone": encoder.recipe.backbone.name if encoder.kind != "pixels" else "-",
                "epoch": encoder.epoch,
                "params (M)": params_millions(encoder),
                "s/epoch": seconds_per_epoch(compared.curves, name) if run is not None else None,
                "knn top1": knn["val_top1"],
                "linear train top1": probe.result["train_top1"],
                "linear val top1": probe.result["val_top1"],
                **{knob: values.get(run) for knob, values in compared.knobs.items()},
            }
        )
    return rows, trained


def _from_run_cache(encoder: Encoder, split: PreparedDataset, limit: int | None, run_cache: Path, cache: Path) -> bool:
    """Whether these features are in the report's cache, after linking them there from ``RUN/eval/cache``
    if ``sslray eval`` (or a report before issue 17) extracted them: read, never written, in the run."""
    ours, theirs = cache_file(encoder, split, limit, cache), cache_file(encoder, split, limit, run_cache)
    if not ours.is_file() and theirs.is_file():
        ours.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(theirs, ours)  # safe: a cache file is replaced by a rename, never rewritten in place
        except OSError:
            shutil.copyfile(theirs, ours)
    return ours.is_file()


def _write_report(compared: Compared, out: Path, options: EvalOptions, figures: ReportFigures, device) -> Path:
    rows, trained = _evaluate(compared, out, options, device)
    table = ranked(rows)
    ranks = {r["name"]: r["#"] for r in table}
    for row in rows:
        row["rank"] = ranks[row["name"]] if isinstance(ranks[row["name"]], int) else None  # None: a baseline
    best = table[0]["name"]
    write_class_report(out, trained[best], title=f"{best}, linear probe", classes=compared.classes())
    drawn = write_figures(compared, out, rows, trained, figures, device)
    settings = {"splits": asdict(compared.splits), "knn": asdict(options.knn), "linear probe": asdict(options.probe)}
    results = {"rows": rows, "settings": settings, "knobs": drawn.knob_curves}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_pages(compared, out, table, drawn, options, (best, trained[best]))
    print(markdown(table, columns(list(compared.knobs))))
    print(f"report: {out / 'summary.md'} (open {out / 'index.html'} in a browser)")
    return out
