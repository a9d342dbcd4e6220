"""The ``tune:`` section of a search space: what a sweep optimises and how (``TuneSection``).

Metric and mode, num_samples, max_concurrent_trials, the scheduler (a name of ``SCHEDULERS``, with
its options), the searcher (a name of ``SEARCHERS``), the loggers (names of ``LOGGERS``), seed,
resources_per_trial and time_budget_s.
Validated on its own here; what it requires of the recipes a space trains is checked in ``space.py``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from sslray.errors import UserError
from sslray.sections import check_range, section_from_dict
from sslray.tune.registry import LOGGERS, SCHEDULERS, SEARCHERS, SchedulerEntry, parse_logger

# Metrics every epoch's report carries, and the direction that is better.
METRIC_MODES = {"knn_top1": "max", "knn_top5": "max", "embed_std": "max", "loss": "min", "linear_top1": "max"}
FINAL_METRICS = ("linear_top1",)  # reported once, after a trial's last epoch (train.linear_probe_epochs)
EVAL_METRICS = ("knn_top1", "knn_top5", "embed_std")  # need the online kNN every epoch


@dataclass
class TuneSection:
    metric: str = "knn_top1"  # reported every epoch; compared across methods
    mode: str | None = None  # max | min; None: the metric's natural direction
    num_samples: int = 1  # trials sampled (with grid: repeats of the whole grid)
    max_concurrent_trials: int | None = None  # None: as many as fit beside Ray Data's reserved CPUs
    scheduler: Any = "asha"  # asha | pbt | median | fifo, or {name: asha, grace_period: 2, ...}
    search: str = "random"  # random | optuna | hyperopt (the last two need their package)
    seed: int | None = None  # seeds the random searcher, so a sweep samples the same trials
    resources_per_trial: dict[str, float] | None = None  # {cpu: 2, gpu: 1}; None: derived from the cluster
    time_budget_s: float | None = None  # stop the whole sweep after this long
    # Rows random-init and raw-pixels in the leaderboard: the driver runs the trials' online protocol on
    # both before the first trial (seconds at 28 px; minutes for a ResNet-50 at 224 px on a CPU head).
    baselines: bool = True
    # Where each trial's knobs and per-epoch metrics also go: [mlflow], or [{name: mlflow, tracking_uri:
    # ..., experiment: ...}]. Tune's JSON and CSV logs and the trials' TensorBoard files are always written.
    loggers: list[Any] = field(default_factory=list)
    options: Any = field(default=None, repr=False)  # the scheduler's parsed options (set by validate)

    @property
    def scheduler_name(self) -> str:
        return self.scheduler if isinstance(self.scheduler, str) else self.scheduler.get("name", "")

    @property
    def scheduler_entry(self) -> SchedulerEntry:
        """The registry entry of the (validated) scheduler."""
        return SCHEDULERS[self.scheduler_name]

    def logger_callbacks(self, sweep_dir: str) -> list[Any]:
        """Ray Tune callbacks of ``loggers`` for the sweep in ``sweep_dir`` (the RunConfig's callbacks)."""
        parsed = [parse_logger(item, "tune.loggers") for item in self.loggers]
        return [LOGGERS[name].build(options, sweep_dir) for name, options in parsed]

    def validate(self) -> None:
        if self.metric not in METRIC_MODES:
            raise UserError(
                f"tune.metric: {self.metric!r} is not reported every epoch; choose one of {', '.join(METRIC_MODES)}"
            )
        if self.mode is None:
            self.mode = METRIC_MODES[self.metric]
        if self.mode not in ("max", "min"):
            raise UserError(f"tune.mode: {self.mode!r} is not allowed; choose max or min")
        check_range("tune.num_samples", self.num_samples, 1, None)
        if self.seed is not None:
            check_range("tune.seed", self.seed, 0, 2**32 - 1)  # numpy's RandomState takes 32 bits
        if self.max_concurrent_trials is not None:
            check_range("tune.max_concurrent_trials", self.max_concurrent_trials, 1, None)
        if self.time_budget_s is not None:
            check_range("tune.time_budget_s", self.time_budget_s, 0.0, None, low_open=True)
        self._validate_search()
        self._validate_loggers()
        self._validate_scheduler()
        self._validate_resources()

    def _validate_search(self) -> None:
        if not isinstance(self.search, str) or self.search not in SEARCHERS:
            raise UserError(f"tune.search: {self.search!r} is not a searcher; choose one of {', '.join(SEARCHERS)}")
        package = SEARCHERS[self.search].package
        if package is not None and importlib.util.find_spec(package) is None:
            raise UserError(
                f"tune.search: {self.search} is not installed here; `pip install {package}` or use search: random"
            )

    def _validate_loggers(self) -> None:
        names = [parse_logger(item, "tune.loggers")[0] for item in self.loggers]
        for name in names:
            if names.count(name) > 1:
                raise UserError(f"tune.loggers: {name} is listed twice; list each logger once")
            if any(importlib.util.find_spec(package) is None for package in LOGGERS[name].packages):
                raise UserError(
                    f"tune.loggers: {name} is not installed here; `pip install 'sslray[{LOGGERS[name].extra}]'` "
                    f"or leave {name} out"
                )

    def _validate_scheduler(self) -> None:
        options = self.scheduler if isinstance(self.scheduler, dict) else {"name": self.scheduler}
        if not isinstance(options.get("name"), str):
            raise UserError(f"tune.scheduler: expected a name or {{name: ..., options}}, got {self.scheduler!r}")
        options = dict(options)
        name = options.pop("name")
        if name not in SCHEDULERS:
            raise UserError(f"tune.scheduler.name: {name!r} is not a scheduler; choose one of {', '.join(SCHEDULERS)}")
        self.options = section_from_dict(SCHEDULERS[name].options, options, "tune.scheduler")
        self.options.validate()

    def _validate_resources(self) -> None:
        if self.resources_per_trial is None:
            return
        if not isinstance(self.resources_per_trial, dict):
            raise UserError(f"tune.resources_per_trial: expected {{cpu: N, gpu: M}}, got {self.resources_per_trial!r}")
        for key, value in self.resources_per_trial.items():
            if key not in ("cpu", "gpu"):
                raise UserError(f"tune.resources_per_trial.{key}: unknown resource; use cpu and gpu")
            check_range(f"tune.resources_per_trial.{key}", value, 0.0, None)
