"""What a restart cost: which epoch a run was in when it stopped, and how much of it is trained again.

Rank 0 keeps ``RUN_DIR/progress.json`` up to date: ``{"epochs_done": 3, "epoch_running": 4}`` while epoch 4
trains, ``{"epochs_done": 4, "epoch_running": null}`` once it is finished. When the loop starts from a
checkpoint (Ray Train's worker-group restart after a failure, a Tune trial restored after its process or
node died, ``--resume``) or finds a progress file from an earlier start, it appends one line to
``RUN_DIR/restarts.jsonl``::

    {"restored_epoch": 2, "epochs_done": 3, "epochs_redone": 1, "partial_epoch": 4, "time": ...}

``epochs_redone`` finished epochs came after the checkpoint and are trained again, plus the part of
``partial_epoch`` that was under way: together less than ``train.checkpoint_every`` epochs of work.
Both files are written with temp + rename (a kill never leaves half a line of JSON to trip over).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sslray.runs.checkpoint import write_text_atomically

PROGRESS, RESTARTS = "progress.json", "restarts.jsonl"


class EpochProgress:
    """Rank 0's progress file; every method is a no-op for ``run_dir=None`` (other ranks)."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir

    def _write(self, done: int, running: int | None) -> None:
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomically(self.run_dir / PROGRESS,
                                  json.dumps({"epochs_done": done, "epoch_running": running}) + "\n")

    def started(self, epoch: int) -> None:
        """Epoch ``epoch`` (1-based) is under way."""
        self._write(epoch - 1, epoch)

    def finished(self, epoch: int) -> None:
        self._write(epoch, None)

    def record_start(self, restored_epoch: int, restored: bool) -> dict | None:
        """Log the start of this attempt if it follows an earlier one (a progress file exists) or a
        checkpoint was restored; returns the record (None for a first start) and prints what is redone."""
        if self.run_dir is None:
            return None
        try:
            before = json.loads((self.run_dir / PROGRESS).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            before = None
        if before is None and not restored:
            return None
        done = before["epochs_done"] if before else None
        record = {"restored_epoch": restored_epoch, "epochs_done": done,
                  "epochs_redone": max(0, done - restored_epoch) if done is not None else None,
                  "partial_epoch": before.get("epoch_running") if before else None, "time": time.time()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / RESTARTS, "a") as handle:  # one short line: appended whole or not at all
            handle.write(json.dumps(record) + "\n")
        redone = [f"{record['epochs_redone']} finished epoch(s) after it"] if record["epochs_redone"] else []
        if record["partial_epoch"]:
            redone.append(f"the part of epoch {record['partial_epoch']} that was under way")
        source = f"the checkpoint of epoch {restored_epoch}" if restored else "scratch (no checkpoint yet)"
        sys.stdout.write(f"restarted from {source}" + (f"; trained again: {' and '.join(redone)}" if redone else "")
                         + "\n")
        return record


def read_restarts(run_dir: Path) -> list[dict]:
    """Every record of ``RUN_DIR/restarts.jsonl``, oldest first (empty for a run that never restarted)."""
    path = Path(run_dir) / RESTARTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
