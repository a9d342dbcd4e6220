"""The sweep's progress as its user reads it: a Ray Tune callback in the driver that writes sslray's lines.

Tune's own status table (every knob of every method, 17-digit floats, the metric being optimised left
out, a 21-line box per result) is switched off in a quiet sweep; this prints instead, per trial:
``trial i/N``, the metric first, only the knobs the trial's method has (4 significant digits), and its
status (running, stopped early, diverged, error, done), with the sweep's elapsed time and an upper bound
of the time left (ETA: the epochs still possible at the rate so far; schedulers like ASHA stop most
trials sooner, and ``tune.time_budget_s`` caps it).

On a terminal the table is redrawn in place after every event; elsewhere (CI, ``ray job logs``, a
file) each event is one plain line. Errors are always their own line, with the trial's error file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ray.tune import Callback

from sslray.console import console, say
from sslray.interrupts import stop_requested
from sslray.tune.leaderboard import significant
from sslray.tune.space import SearchSpace

TABLE_FINISHED_ROWS = 5  # finished trials kept in the terminal table (the best ones): it must fit a screen


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


@dataclass
class TrialLine:
    """What the progress shows of one trial."""

    index: int  # 1-based, in the order Tune created the trials
    name: str
    knobs: str  # "temperature=0.1544 base_lr=0.001049": only those of the trial's method
    planned: int  # epochs
    epoch: int = 0
    last: float | None = None
    best: float | None = None
    status: str = "running"

    def cells(self) -> list[str]:
        def shown(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        return [
            str(self.index),
            self.name,
            self.status,
            f"{self.epoch}/{self.planned}",
            shown(self.last),
            shown(self.best),
        ]


class SweepProgress(Callback):
    """Tune callback: sslray's progress lines (plain) or table (terminal). Holds only plain data: Tune
    pickles its callbacks with the experiment, and a resumed sweep restores this one."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.trials: dict[str, TrialLine] = {}  # by Tune's trial id
        self.total = space.tune.num_samples
        self.started = time.monotonic()
        self.drawn = 0  # lines of the table now on the terminal

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self.total = total_num_samples or self.space.tune.num_samples
        self.started = time.monotonic()
        self.drawn = 0

    # Tune's hooks -----------------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        line = self._line(trial)
        line.status = "running"
        self._event(line, f"started  {line.knobs}".rstrip())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        line = self._line(trial)
        value = result.get(self.space.tune.metric)
        line.epoch = int(result.get("epoch", line.epoch))
        if isinstance(value, (int, float)) and value == value:
            line.last = float(value)
            better = max if self.space.tune.mode == "max" else min
            line.best = line.last if line.best is None else better(line.best, line.last)
        if "stop_reason" in result:
            line.status = str(result["stop_reason"])
        shown = "-" if line.last is None else f"{line.last:.4f} (best {line.best:.4f})"
        self._event(line, f"epoch {line.epoch}/{line.planned}  {self.space.tune.metric} {shown}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        line = self._line(trial)
        if line.status == "running":  # no stop_reason (diverged, ...) came with the last result
            if line.epoch >= line.planned:
                line.status = "done"
            else:
                line.status = "interrupted" if stop_requested() else "stopped early"
        best = "-" if line.best is None else f"{line.best:.4f}"
        where = "at" if line.status in ("done", "stopped early", "interrupted") else "- stopped at"  # a stop_reason
        what = f"{line.status} {where} epoch {line.epoch}/{line.planned}: best {self.space.tune.metric} {best}"
        self._event(line, f"{what} | {self.summary()}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        line = self._line(trial)
        self._event(line, f"failed at epoch {line.epoch}; Tune restarts it from its last checkpoint", always=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        line = self._line(trial)
        line.status = "error"
        error_file = trial.error_file
        self._event(line, f"error: {_last_line(error_file)} (traceback: {error_file})", always=True)

    # -------------------------------------------------------------------------------------------------
    def _line(self, trial) -> TrialLine:
        if trial.trial_id not in self.trials:
            config = trial.config or {}
            knobs = {k: v for k, v in self.space.applicable(config).items() if k != "method.name"}
            suffix = trial.trial_id.rsplit("_", 1)[-1]
            self.trials[trial.trial_id] = TrialLine(
                index=int(suffix) + 1 if suffix.isdigit() else len(self.trials) + 1,
                name=str(trial),
                knobs=" ".join(f"{_short(k, self.space)}={significant(v)}" for k, v in knobs.items()),
                planned=self.space.planned_epochs(config) if set(config) >= set(self.space.knobs) else 0,
            )
        return self.trials[trial.trial_id]

    def summary(self) -> str:
        """``1:42 elapsed, 3/8 done, 2 running, ETA <= 6 min``."""
        elapsed = time.monotonic() - self.started
        lines = self.trials.values()
        running = sum(line.status == "running" for line in lines)
        done = len(self.trials) - running
        text = f"{_minutes(elapsed)} elapsed, {done}/{self.total} done, {running} running"
        eta = self._eta(elapsed)
        if eta is None:
            return text
        return text + (", ETA < 1 min" if eta < 60 else f", ETA <= {eta / 60:.0f} min")

    def _eta(self, elapsed: float) -> float | None:
        epochs_done = sum(line.epoch for line in self.trials.values())
        if not epochs_done or not self.trials:
            return None
        planned = max(line.planned for line in self.trials.values())
        left = sum(line.planned - line.epoch for line in self.trials.values() if line.status == "running")
        left += max(self.total - len(self.trials), 0) * planned
        eta = left * elapsed / epochs_done
        budget = self.space.tune.time_budget_s
        return min(eta, max(budget - elapsed, 0.0)) if budget else eta

    def _event(self, line: TrialLine, what: str, always: bool = False) -> None:
        shown = console()
        if shown is not None and shown.tty:
            if always:
                self._clear()
                say(f"trial {line.index}/{self.total} {line.name} {what}")
            self._draw()
            return
        say(f"[{_minutes(time.monotonic() - self.started)}] trial {line.index}/{self.total} {line.name} {what}")

    def table(self) -> list[str]:
        """The terminal table: the running trials and the best finished ones."""
        metric, mode = self.space.tune.metric, self.space.tune.mode
        running = [t for t in self.trials.values() if t.status == "running"]
        finished = [t for t in self.trials.values() if t.status != "running" and t.best is not None]
        finished.sort(key=lambda t: -t.best if mode == "max" else t.best)
        rows = sorted(running, key=lambda t: t.index) + finished[:TABLE_FINISHED_ROWS]
        header = ["#", "trial", "status", "epoch", metric, "best", "knobs"]
        cells = [[*t.cells(), t.knobs] for t in rows]
        widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header) - 1)]
        lines = [self.summary()]
        for row in [header, *cells]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        hidden = len(self.trials) - len(rows)
        if hidden > 0:
            lines.append(f"(+{hidden} more finished: the leaderboard lists every trial at the end)")
        return lines

    def _clear(self) -> None:
        if self.drawn:
            console().out.write(f"\x1b[{self.drawn}F\x1b[0J")
            self.drawn = 0

    def _draw(self) -> None:
        self._clear()
        lines = self.table()
        say("\n".join(lines))
        self.drawn = len(lines)


def _short(key: str, space: SearchSpace) -> str:
    """A knob's last part (``temperature``), or its whole key when two knobs share that part."""
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in space.knobs) == 1 else key


def _last_line(error_file: str | None) -> str:
    """The exception line of a trial's traceback."""
    try:
        lines = [line.strip() for line in Path(error_file).read_text().splitlines() if line.strip()]
    except (OSError, TypeError):
        return "(no error file)"
    return lines[-1] if lines else "(empty error file)"
