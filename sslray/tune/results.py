"""A finished sweep's results: one leaderboard row per trial from Tune's ``ResultGrid``, written to the
sweep folder (``finish``; the files themselves are ``leaderboard.py``'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sslray.runs import storage
from sslray.train.reporting import best_of
from sslray.tune.space import SearchSpace


def finish(
    space: SearchSpace, results, sweep_dir: str | Path, baselines: dict | None = None, interrupted: bool = False
) -> list[dict[str, Any]]:
    """Leaderboard (printed, .csv, .md, .png) and best.yaml from Tune's results, with the sweep's
    ``baselines``, in the sweep folder (written locally, then uploaded when the sweep lives at a URI).
    ``interrupted``: the sweep was stopped by Ctrl-C / SIGTERM, so a trial short of its epochs was cut by
    that, not by the scheduler."""
    import tempfile

    from sslray.tune.leaderboard import write_leaderboard

    rows = [_row(space, result, interrupted) for result in results]
    for row in rows:
        _write_hparams_status(row)
    if not storage.is_uri(sweep_dir):
        return write_leaderboard(space, rows, Path(sweep_dir), baselines=baselines)
    with tempfile.TemporaryDirectory() as tmp:
        board = write_leaderboard(space, rows, Path(tmp), shown_as=str(sweep_dir), baselines=baselines)
        storage.upload_folder(Path(tmp), str(sweep_dir))
    return board


def _row(space: SearchSpace, result, interrupted: bool = False) -> dict[str, Any]:
    metric, mode = space.tune.metric, space.tune.mode
    config = {k: v for k, v in (result.config or {}).items() if k in space.knobs}
    metrics = result.metrics or {}
    frame = result.metrics_dataframe
    # Tune's rows first, each epoch once (a trial restarted from a checkpoint older than its last report
    # repeats epochs: the rerun counts). Epochs Tune lost are taken from the trial's own history: on a
    # restart Tune restores result.json from the storage copy, which may lag a report behind.
    by_epoch = {
        epoch: float(m[metric])
        for epoch, m in _checkpointed_history(result.path).items()
        if isinstance(m.get(metric), (int, float)) and m[metric] == m[metric]
    }
    if frame is not None and metric in frame and "epoch" in frame:
        by_epoch.update({int(e): float(v) for e, v in zip(frame["epoch"], frame[metric]) if v == v})
    curve = sorted(by_epoch.items())
    best, best_epoch = best_of(curve, mode)
    epochs = metrics.get("epoch", 0)
    planned = space.planned_epochs(config) if set(config) == set(space.knobs) else None
    if result.error is not None:
        lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
        status = "error: " + (lines[-1].strip() if lines else type(result.error).__name__)
    elif "stop_reason" in metrics:
        status = str(metrics["stop_reason"])
    elif planned and epochs < planned:
        status = f"{'interrupted' if interrupted else 'stopped early'} at epoch {epochs}/{planned}"
    else:
        status = "done"
    return {
        "trial": Path(result.path).name,
        "config": config,
        "applicable": space.applicable(config),
        "best": best,
        "best_epoch": best_epoch,  # best and last are both shown: a trial may peak before its last epoch
        "last": curve[-1][1] if curve else None,
        "epochs": epochs,
        "minutes": metrics.get("time_total_s", 0.0) / 60,
        "overhead_s": _overhead_seconds(frame),
        "status": status,
        "curve": curve,
        "path": result.path,
    }


def _checkpointed_history(trial_path: str) -> dict[int, dict]:
    """Every epoch's metrics as the trial's latest checkpoint recorded them (history survives restarts);
    empty when the trial has no checkpoint or lives in object storage."""
    from sslray.runs.checkpoint import checkpoint_folders, read_state

    folders = checkpoint_folders(Path(trial_path)) if not storage.is_uri(trial_path) else []
    if not folders:
        return {}
    return {int(m["epoch"]): m for m in read_state(folders[-1]).get("history", []) if "epoch" in m}


def _overhead_seconds(frame) -> float | None:
    """Trial wall time outside its epochs' training and evaluation: Ray start-up of the trial, model
    build, checkpoints and reports."""
    if frame is None or "time_total_s" not in frame or "seconds" not in frame or not len(frame):
        return None
    inside = frame["seconds"].sum() + (frame["eval_seconds"].sum() if "eval_seconds" in frame else 0.0)
    return float(frame["time_total_s"].iloc[-1] - inside)


def _write_hparams_status(row: dict[str, Any]) -> None:
    """The trial's status in TensorBoard's HParams table. Its loop writes it when it ends, but a trial that
    a scheduler stops (ASHA at its last rung too) or that fails never gets there; TensorBoard keeps a
    run's first status, so one the trial wrote stays. Trials in object storage keep none."""
    status = row["status"]
    if storage.is_uri(str(row["path"])) or not Path(row["path"]).is_dir():
        return
    from sslray.runs.tensorboard import RunLogger

    key = "done" if status == "done" else "failed" if status.startswith(("error", "diverged")) else "stopped"
    # A small event file of its own (one per trial each time a sweep finishes or is resumed), not a record
    # added to the trial's: the trial's writer is gone (its process ended, maybe on another node), a
    # SummaryWriter only ever opens a new file, and appending to the trial's last file is unsafe: a trial
    # killed mid-write (a scheduler's stop) leaves a truncated record there, after which TensorBoard's
    # reader stops (it waits for the record to be completed), so the status would be lost. One writer at
    # the sweep root cannot do it either: TensorBoard's run is the folder that holds the event file.
    with RunLogger(row["path"]) as logger:
        logger.session_end(key, step=int(row["epochs"] or 0))
