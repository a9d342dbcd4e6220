"""Ray Tune schedulers, searchers and loggers by name: what ``tune.scheduler``, ``tune.search`` and
``tune.loggers`` may say.

``SCHEDULERS`` maps each name to a ``SchedulerEntry``: its options (the keys ``tune.scheduler`` may
hold beside ``name``), a function that builds Ray's own scheduler, and the facts the rest of sslray
asks about it (whether it compares trials every epoch, restores trials from each other's
checkpoints, how many checkpoints a trial keeps, what it refuses in a space). ``SEARCHERS`` does the
same for ``tune.search`` (docs/ray.md §10), ``LOGGERS`` for ``tune.loggers`` (docs/ray.md §12). Adding a
scheduler, a searcher or a logger is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sslray.errors import UserError
from sslray.sections import check_range, section_from_dict
from sslray.tune.distributions import keep_inside, tune_domain

# Distributions PBT can perturb: numbers on a scale (it multiplies them by 0.8 / 1.2 or resamples),
# and lists (it moves to a neighbouring value or resamples).
PBT_PERTURBABLE = ("uniform", "loguniform", "quniform", "randint", "choice")


@dataclass(frozen=True)
class SchedulerInputs:
    """What a scheduler is built from besides its options: the searched knobs and the trials' length."""

    knobs: dict[str, dict[str, Any]]  # searched dotted key -> {form: args}
    max_epochs: int  # the longest trial's planned epochs (the time_attr is "epoch")


@dataclass
class AshaOptions:
    grace_period: int = 1  # epochs every trial runs before it can be stopped
    reduction_factor: float = 2.0  # keep the top 1/factor at each rung (Li et al., 2020: 2-4)
    max_t: int | None = None  # None: train.epochs

    def validate(self) -> None:
        check_range("tune.scheduler.grace_period", self.grace_period, 1, None)
        if self.max_t is not None:
            check_range("tune.scheduler.max_t", self.max_t, 1, None)
        check_range("tune.scheduler.reduction_factor", self.reduction_factor, 1.0, None, low_open=True)


@dataclass
class PbtOptions:
    perturbation_interval: int = 2  # epochs between exploit/explore decisions
    quantile_fraction: float = 0.25  # bottom quantile copies the top quantile (Jaderberg et al., 2017)
    resample_probability: float = 0.25  # else the value is multiplied by 0.8 or 1.2
    mutate: list[str] | None = None  # searched keys PBT may change; None: every numeric knob

    def validate(self) -> None:
        check_range("tune.scheduler.perturbation_interval", self.perturbation_interval, 1, None)
        check_range("tune.scheduler.quantile_fraction", self.quantile_fraction, 0.0, 0.5, low_open=True)
        check_range("tune.scheduler.resample_probability", self.resample_probability, 0.0, 1.0)

    def mutated_keys(self, knobs: dict[str, dict[str, Any]]) -> list[str]:
        """The searched keys PBT changes between epochs of a trial."""
        if self.mutate is not None:
            return list(self.mutate)
        return [key for key, spec in knobs.items() if next(iter(spec)) in PBT_PERTURBABLE]


@dataclass
class MedianOptions:
    grace_period: int = 1  # epochs before a trial is compared with the running median
    min_samples_required: int = 3

    def validate(self) -> None:
        check_range("tune.scheduler.grace_period", self.grace_period, 1, None)
        check_range("tune.scheduler.min_samples_required", self.min_samples_required, 1, None)


@dataclass
class FifoOptions:
    def validate(self) -> None:
        pass


def _asha(options: AshaOptions, inputs: SchedulerInputs):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        max_t=options.max_t or inputs.max_epochs,
        grace_period=options.grace_period,
        reduction_factor=options.reduction_factor,
    )


def pbt_mutations(options: PbtOptions, knobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """PBT's hyperparam_mutations: a list's values (PBT then moves to a neighbour, staying in the
    list), a range's Tune domain (PBT multiplies the value or resamples)."""
    mutations = {}
    for key in options.mutated_keys(knobs):
        ((form, args),) = knobs[key].items()
        mutations[key] = list(args) if form in ("choice", "grid") else tune_domain(key, knobs[key])
    return mutations


def pbt_explore(knobs: dict[str, dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """PBT's custom_explore_fn: after Ray's own perturbation, every searched value back inside its
    distribution (0.99 * 1.2 would otherwise leave a momentum range and fail the trial)."""
    return {key: keep_inside(knobs[key], value) if key in knobs else value for key, value in config.items()}


def _pbt(options: PbtOptions, inputs: SchedulerInputs):
    import functools

    from ray.tune.schedulers import PopulationBasedTraining

    return PopulationBasedTraining(
        time_attr="epoch",
        perturbation_interval=options.perturbation_interval,
        hyperparam_mutations=pbt_mutations(options, inputs.knobs),
        custom_explore_fn=functools.partial(pbt_explore, inputs.knobs),
        quantile_fraction=options.quantile_fraction,
        resample_probability=options.resample_probability,
    )


def _check_pbt_space(options: PbtOptions, knobs: dict[str, dict[str, Any]]) -> None:
    fixed = [k for k in knobs if k == "method.name" or k.startswith(("backbone.", "scaling."))]
    if fixed:
        raise UserError(
            f"{fixed[0]}: PBT copies weights between trials, so the method, backbone and "
            "scaling must be the same in every trial; fix this value or use scheduler asha"
        )
    for key in options.mutate or []:
        if key not in knobs:
            raise UserError(
                f"tune.scheduler.mutate: {key!r} is not a searched key; searched: {', '.join(knobs) or 'none'}"
            )
    if not options.mutated_keys(knobs):
        raise UserError(
            "tune.scheduler: PBT needs at least one searched numeric knob to perturb "
            "(e.g. method.temperature: {loguniform: [0.05, 0.5]})"
        )


def _median(options: MedianOptions, inputs: SchedulerInputs):
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(
        time_attr="epoch", grace_period=options.grace_period, min_samples_required=options.min_samples_required
    )


def _fifo(options: FifoOptions, inputs: SchedulerInputs):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _no_check(options: Any, knobs: dict[str, dict[str, Any]]) -> None:
    pass


@dataclass(frozen=True)
class SchedulerEntry:
    options: type  # the dataclass of tune.scheduler's other keys (with validate())
    build: Callable[[Any, SchedulerInputs], Any]  # (options, inputs) -> Ray's TrialScheduler
    # True: it ranks trials on every epoch's report, so a metric reported only after the last epoch
    # (linear_top1) leaves it nothing to compare; False: it lets every trial finish (fifo).
    compares_every_epoch: bool = True
    # True: it restores trials from each other's checkpoints, which only single-worker trials report
    # to Tune (docs/ray.md §5), and it keeps more of them (it restores some a while after the report).
    restores_checkpoints: bool = False
    checkpoints_kept: Callable[[Any], int] = lambda options: 2  # per trial, from the options
    check_space: Callable[[Any, dict[str, dict[str, Any]]], None] = _no_check  # (options, knobs); UserError


SCHEDULERS = {
    "asha": SchedulerEntry(AshaOptions, _asha),
    # Tune warns that keeping <= 2 checkpoints loses some PBT restores (it did here): every
    # perturbation interval's, at least 5.
    "pbt": SchedulerEntry(
        PbtOptions,
        _pbt,
        restores_checkpoints=True,
        check_space=_check_pbt_space,
        checkpoints_kept=lambda options: max(5, 2 * options.perturbation_interval),
    ),
    "median": SchedulerEntry(MedianOptions, _median),
    "fifo": SchedulerEntry(FifoOptions, _fifo, compares_every_epoch=False),
}


def _random(seed: int | None, max_concurrent: int):
    from ray.tune.search import BasicVariantGenerator

    # Tune's max_concurrent_trials does not reach a BasicVariantGenerator passed in: it takes its own.
    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


def _optuna(seed: int | None, max_concurrent: int):
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=seed)


def _hyperopt(seed: int | None, max_concurrent: int):
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(random_state_seed=seed)


@dataclass(frozen=True)
class SearcherEntry:
    build: Callable[[int | None, int], Any]  # (tune.seed, max concurrent trials) -> Ray's Searcher
    package: str | None = None  # the module it needs installed (None: part of Ray Tune)
    # True: it takes the concurrency limit itself (Tune ignores max_concurrent_trials with it, with a
    # warning) and expands {grid: ...}; the others sample their own points (docs/ray.md §10).
    basic_variants: bool = False


SEARCHERS = {
    "random": SearcherEntry(_random, basic_variants=True),
    "optuna": SearcherEntry(_optuna, package="optuna"),
    "hyperopt": SearcherEntry(_hyperopt, package="hyperopt"),
}


@dataclass
class MlflowOptions:
    # None: sqlite:///<sweep>/mlflow.db (MLflow 3 refuses its ./mlruns file store unless told to, docs/ray.md
    # §12); or a server, http://host:5000, that the driver reaches.
    tracking_uri: str | None = None
    experiment: str | None = None  # None: the sweep folder's name

    def validate(self) -> None:
        for key in ("tracking_uri", "experiment"):
            if getattr(self, key) == "":
                raise UserError(f"tune.loggers.mlflow.{key}: empty; leave it out for the default")


def _mlflow(options: MlflowOptions, sweep_dir: str):
    from sslray.tune.mlflow_logger import mlflow_callback  # imports Ray's MLflow integration and mlflow

    return mlflow_callback(options.tracking_uri, options.experiment, sweep_dir)


@dataclass(frozen=True)
class LoggerEntry:
    options: type  # the dataclass of the keys beside ``name`` in {name: ..., ...} (with validate())
    build: Callable[[Any, str], Any]  # (options, sweep folder) -> a Ray Tune LoggerCallback
    packages: tuple[str, ...]  # the modules it needs installed
    extra: str  # sslray's install extra that brings it: pip install 'sslray[<extra>]'


LOGGERS = {
    # sqlalchemy and alembic: the default SQLite store (mlflow-skinny does not bring them).
    "mlflow": LoggerEntry(MlflowOptions, _mlflow, packages=("mlflow", "sqlalchemy", "alembic"), extra="mlflow"),
}


def parse_logger(item: Any, where: str) -> tuple[str, Any]:
    """One item of ``tune.loggers`` (a name, or ``{name: ..., options}``) -> (name, validated options)."""
    options = dict(item) if isinstance(item, dict) else {"name": item}
    name = options.pop("name", None)
    if not isinstance(name, str) or name not in LOGGERS:
        raise UserError(f"{where}: {item!r} is not a logger; choose one of {', '.join(LOGGERS)}")
    parsed = section_from_dict(LOGGERS[name].options, options, f"tune.loggers.{name}")
    parsed.validate()
    return name, parsed
