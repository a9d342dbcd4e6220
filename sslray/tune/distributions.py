"""A search space: the recipe YAML with distributions in place of values, plus a ``tune:`` section.

Any value may be one of (shared/DESIGN.md, "One YAML schema")::

    {choice: [a, b, ...]}      sampled uniformly from the list       tune.choice
    {grid: [a, b, ...]}        every value, each num_samples times    tune.grid_search
    {uniform: [low, high]}     float in [low, high]                   tune.uniform
    {loguniform: [low, high]}  float, uniform in log space (low > 0)  tune.loguniform
    {randint: [low, high]}     integer in low..high, both included    tune.randint(low, high + 1)
    {quniform: [low, high, q]} float in [low, high], a multiple of q  tune.quniform

A sweep may span methods (``method.name: {choice: [simclr, mae]}``): each method knob then applies
only to the methods that have it (``mask_ratio`` to MAE and MACRL, not SimCLR); a knob that none of
the candidate methods has is an error. Every combination is validated before Ray starts, at both
ends of every range and every listed value, so a value out of range fails here naming the key, and
not an hour into the sweep.

The ``tune:`` section (``TuneSection``) says what to optimise and how: metric, mode, num_samples,
max_concurrent_trials, scheduler (asha | pbt | median | fifo, with their options), search (random |
optuna | hyperopt), resources_per_trial and time_budget_s.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslray.errors import UserError
from sslray.methods.registry import METHODS
from sslray.recipe import DISTRIBUTIONS, apply_overrides, find_distributions, read_yaml, recipe_from_dict
from sslray.sections import check_range, section_from_dict

# Metrics every epoch's report carries, and the direction that is better.
METRIC_MODES = {"knn_top1": "max", "knn_top5": "max", "embed_std": "max", "loss": "min", "linear_top1": "max"}
FINAL_METRICS = ("linear_top1",)  # reported once, after a trial's last epoch (train.linear_probe_epochs)
EVAL_METRICS = ("knn_top1", "knn_top5", "embed_std")  # need the online kNN every epoch
SEARCHERS = ("random", "optuna", "hyperopt")
# Distributions PBT can perturb: numbers on a scale (it multiplies them by 0.8 / 1.2 or resamples).
PBT_PERTURBABLE = ("uniform", "loguniform", "quniform", "randint", "choice")


@dataclass
class AshaOptions:
    grace_period: int = 1              # epochs every trial runs before it can be stopped
    reduction_factor: float = 2.0      # keep the top 1/factor at each rung (Li et al., 2020: 2-4)
    max_t: int | None = None           # None: train.epochs


@dataclass
class PbtOptions:
    perturbation_interval: int = 2     # epochs between exploit/explore decisions
    quantile_fraction: float = 0.25    # bottom quantile copies the top quantile (Jaderberg et al., 2017)
    resample_probability: float = 0.25  # else the value is multiplied by 0.8 or 1.2
    mutate: list[str] | None = None    # searched keys PBT may change; None: every numeric knob


@dataclass
class MedianOptions:
    grace_period: int = 1              # epochs before a trial is compared with the running median
    min_samples_required: int = 3


@dataclass
class FifoOptions:
    pass


SCHEDULERS = {"asha": AshaOptions, "pbt": PbtOptions, "median": MedianOptions, "fifo": FifoOptions}


@dataclass
class TuneSection:
    metric: str = "knn_top1"           # reported every epoch; compared across methods
    mode: str | None = None            # max | min; None: the metric's natural direction
    num_samples: int = 1               # trials sampled (with grid: repeats of the whole grid)
    max_concurrent_trials: int | None = None  # None: as many as fit beside Ray Data's reserved CPUs
    scheduler: Any = "asha"            # asha | pbt | median | fifo, or {name: asha, grace_period: 2, ...}
    search: str = "random"             # random | optuna | hyperopt (the last two need their package)
    seed: int | None = None            # seeds the random searcher, so a sweep samples the same trials
    resources_per_trial: dict[str, float] | None = None  # {cpu: 2, gpu: 1}; None: derived from the cluster
    time_budget_s: float | None = None  # stop the whole sweep after this long
    options: Any = field(default=None, repr=False)  # the scheduler's parsed options (set by validate)

    @property
    def scheduler_name(self) -> str:
        return self.scheduler if isinstance(self.scheduler, str) else self.scheduler.get("name", "")

    def validate(self) -> None:
        if self.metric not in METRIC_MODES:
            raise UserError(f"tune.metric: {self.metric!r} is not reported every epoch; choose one of "
                            f"{', '.join(METRIC_MODES)}")
        if self.mode is None:
            self.mode = METRIC_MODES[self.metric]
        if self.mode not in ("max", "min"):
            raise UserError(f"tune.mode: {self.mode!r} is not allowed; choose max or min")
        check_range("tune.num_samples", self.num_samples, 1, None)
        if self.max_concurrent_trials is not None:
            check_range("tune.max_concurrent_trials", self.max_concurrent_trials, 1, None)
        if self.time_budget_s is not None:
            check_range("tune.time_budget_s", self.time_budget_s, 0.0, None, low_open=True)
        if self.search not in SEARCHERS:
            raise UserError(f"tune.search: {self.search!r} is not a searcher; choose one of {', '.join(SEARCHERS)}")
        if self.search != "random" and importlib.util.find_spec(self.search) is None:
            raise UserError(f"tune.search: {self.search} is not installed here; `pip install {self.search}` "
                            "or use search: random")
        options = self.scheduler if isinstance(self.scheduler, dict) else {"name": self.scheduler}
        if not isinstance(options, dict) or not isinstance(options.get("name"), str):
            raise UserError(f"tune.scheduler: expected a name or {{name: ..., options}}, got {self.scheduler!r}")
        options = dict(options)
        name = options.pop("name")
        if name not in SCHEDULERS:
            raise UserError(f"tune.scheduler.name: {name!r} is not a scheduler; choose one of {', '.join(SCHEDULERS)}")
        self.options = section_from_dict(SCHEDULERS[name], options, "tune.scheduler")
        for key in ("grace_period", "perturbation_interval", "min_samples_required", "max_t"):
            if getattr(self.options, key, None) is not None:
                check_range(f"tune.scheduler.{key}", getattr(self.options, key), 1, None)
        if isinstance(self.options, AshaOptions):
            check_range("tune.scheduler.reduction_factor", self.options.reduction_factor, 1.0, None, low_open=True)
        if isinstance(self.options, PbtOptions):
            check_range("tune.scheduler.quantile_fraction", self.options.quantile_fraction, 0.0, 0.5, low_open=True)
            check_range("tune.scheduler.resample_probability", self.options.resample_probability, 0.0, 1.0)
        if self.resources_per_trial is not None:
            if not isinstance(self.resources_per_trial, dict):
                raise UserError(f"tune.resources_per_trial: expected {{cpu: N, gpu: M}}, got {self.resources_per_trial!r}")
            for key, value in self.resources_per_trial.items():
                if key not in ("cpu", "gpu"):
                    raise UserError(f"tune.resources_per_trial.{key}: unknown resource; use cpu and gpu")
                check_range(f"tune.resources_per_trial.{key}", value, 0.0, None)


def _number(key: str, form: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{key}: {{{form}: ...}} needs numbers, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise UserError(f"{key}: {{{form}: ...}} needs finite numbers, got {value!r}")
    return value


def tune_domain(key: str, spec: dict[str, Any]):
    """The Ray Tune search domain for one ``{form: args}`` entry; malformed entries name ``key``."""
    from ray import tune

    (form, args), = spec.items()
    if form in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise UserError(f"{key}: {{{form}: ...}} needs a non-empty list of values, got {args!r}")
        return tune.choice(args) if form == "choice" else tune.grid_search(args)
    wanted = 3 if form == "quniform" else 2
    if not isinstance(args, list) or len(args) != wanted:
        shape = "[low, high, q]" if form == "quniform" else "[low, high]"
        raise UserError(f"{key}: {{{form}: ...}} needs {shape}, got {args!r}")
    low, high = (_number(key, form, v) for v in args[:2])
    if form == "randint":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in args):
            raise UserError(f"{key}: {{randint: [low, high]}} needs integers, got {args!r}")
        if low > high:
            raise UserError(f"{key}: {{randint: {args}}} has low > high")
        if not -2 ** 63 <= low <= high < 2 ** 63 - 1:  # Tune samples with numpy's int64
            raise UserError(f"{key}: {{randint: {args}}} is outside the 64-bit integer range")
        return tune.randint(low, high + 1)  # Tune's upper bound is exclusive; ours is inclusive
    if not low < high:
        raise UserError(f"{key}: {{{form}: {args}}} needs low < high")
    if form == "uniform":
        return tune.uniform(low, high)
    if form == "loguniform":
        if low <= 0:
            raise UserError(f"{key}: {{loguniform: {args}}} needs low > 0 (it samples the logarithm)")
        return tune.loguniform(low, high)
    q = _number(key, form, args[2])
    if q <= 0:
        raise UserError(f"{key}: {{quniform: {args}}} needs q > 0")
    if not all(math.isfinite(bound / q) for bound in (low, high)):  # spec_values rounds low / q
        raise UserError(f"{key}: {{quniform: {args}}} has a q far too small for its range")
    for name, bound in (("low", low), ("high", high)):  # Ray Tune's own condition (a ValueError there)
        if not math.isclose(bound / q, round(bound / q)):
            raise UserError(f"{key}: {{quniform: {args}}} needs {name} to be a multiple of q ({q})")
    return tune.quniform(low, high, q)


def spec_values(spec: dict[str, Any]) -> list[Any]:
    """The values validated before a sweep: every listed value, or both ends of a range."""
    (form, args), = spec.items()
    if form in ("choice", "grid"):
        return list(args)
    if form == "quniform":
        low, high, q = args
        return [round(low / q) * q, round(high / q) * q]
    return [args[0], args[1]]


def _check_unknown_distributions(data: Any, where: str = "") -> None:
    """``{logunifrom: [...]}``: a one-key mapping whose key is a near-miss of a distribution name."""
    if not isinstance(data, dict):
        return
    if len(data) == 1:
        (key, value), = data.items()
        close = difflib.get_close_matches(str(key), DISTRIBUTIONS, n=1, cutoff=0.75)
        if key not in DISTRIBUTIONS and close and isinstance(value, list):
            raise UserError(f"{where or key}: unknown distribution {key!r}; did you mean {close[0]}? "
                            f"(choose from {', '.join(DISTRIBUTIONS)})")
    for key, value in data.items():
        _check_unknown_distributions(value, f"{where}.{key}".strip("."))


def _distribution_keys(data: dict[str, Any]) -> list[str]:
    """The dotted keys of the distributions in ``data`` (as ``find_distributions``), after checking that
    every key on the way to one is a name a dotted key can hold: a string, not empty and without dots
    (``{"a.b": {choice: ...}}`` or ``{1: ...}`` could not be set per trial). The top level is always a
    mapping of sections, never a distribution itself."""
    keys: list[str] = []

    def walk(node: dict, path: list[str]) -> None:
        for key, value in node.items():
            if not find_distributions(value):
                continue
            where = ".".join(path + [str(key)])
            if not isinstance(key, str) or not key or "." in key:
                raise UserError(f"{where}: the key {key!r} holds a search distribution, so it must be a name "
                                "(a string without dots)")
            if len(value) == 1 and next(iter(value)) in DISTRIBUTIONS:
                keys.append(where)
            else:
                walk(value, path + [key])

    walk(data, [])
    return keys


def get_dotted(data: dict, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def method_knobs(name: str) -> set[str]:
    _, config_cls = METHODS[name]
    return {f.name for f in dataclasses.fields(config_cls)}


@dataclass
class SearchSpace:
    """A validated search space. ``base`` is the recipe with distributions left in (the user's paths,
    as written); ``knobs`` maps each searched dotted key to its ``{form: args}``."""

    base: dict[str, Any]
    knobs: dict[str, dict[str, Any]]
    tune: TuneSection
    source: str = "<space>"

    @property
    def methods(self) -> list[str]:
        spec = self.knobs.get("method.name")
        return list(spec_values(spec)) if spec else [self.base["method"]["name"]]

    def first_config(self) -> dict[str, Any]:
        """A trial config with every knob at its first value (the low end of ranges)."""
        return {key: spec_values(spec)[0] for key, spec in self.knobs.items()}

    def param_space(self) -> dict[str, Any]:
        """Tune's param_space: flat dotted keys -> domains (the status table and HParams show them)."""
        return {key: tune_domain(key, spec) for key, spec in self.knobs.items()}

    def perturbed_knobs(self) -> dict[str, Any]:
        """PBT's hyperparam_mutations: the knobs it may change between epochs of a trial."""
        keys = self.tune.options.mutate
        if keys is None:
            keys = [k for k, s in self.knobs.items() if next(iter(s)) in PBT_PERTURBABLE]
        return {key: tune_domain(key, self.knobs[key]) for key in keys}

    def trial_recipe(self, config: dict[str, Any]) -> dict[str, Any]:
        """The fixed recipe dict of one trial: base + the sampled values, and the method section
        trimmed to the knobs of the sampled method."""
        recipe = copy.deepcopy(self.base)
        for key in self.knobs:
            set_dotted(recipe, key, config[key])
        method = recipe["method"]
        allowed = method_knobs(method["name"]) | {"name"}
        recipe["method"] = {k: v for k, v in method.items() if k in allowed}
        return recipe

    def applicable(self, config: dict[str, Any]) -> dict[str, Any]:
        """The sampled values that mean something for this trial's method (HParams, leaderboard)."""
        allowed = method_knobs(config.get("method.name", self.methods[0]))
        return {k: v for k, v in config.items() if k in self.knobs
                and (not k.startswith("method.") or k == "method.name" or k.split(".", 1)[1] in allowed)}

    def to_yaml_dict(self) -> dict[str, Any]:
        """The space as a YAML-able dict (what ``--resume`` reads back from the sweep folder)."""
        tune_section = {f.name: getattr(self.tune, f.name) for f in dataclasses.fields(TuneSection)
                        if f.name != "options"}
        return {**copy.deepcopy(self.base), "tune": tune_section}


def space_from_dict(data: dict[str, Any], source: str = "<space>") -> SearchSpace:
    data = copy.deepcopy(data)
    tune_section = section_from_dict(TuneSection, data.pop("tune", None), "tune")
    tune_section.validate()
    _check_unknown_distributions(data)
    keys = _distribution_keys(data)
    knobs = {key: get_dotted(data, key) for key in keys}
    for key, spec in knobs.items():
        tune_domain(key, spec)  # the form itself: lists, numbers, low < high
    if not isinstance(data.get("method"), dict):
        raise UserError(f"method: expected a mapping with at least 'name', got {data.get('method')!r}")
    if "name" not in data["method"]:
        raise UserError(f"method.name: missing; choose from {', '.join(METHODS)} (or {{choice: [...]}} of them)")
    space = SearchSpace(base=data, knobs=knobs, tune=tune_section, source=source)
    for name in space.methods:
        if not isinstance(name, str) or name not in METHODS:  # a list is unhashable: no `in` test
            raise UserError(f"method.name: unknown method {name!r}; choose from {', '.join(METHODS)}")
    _check_method_knobs(space)
    _check_scheduler(space)
    _check_every_corner(space)
    return space


def _check_method_knobs(space: SearchSpace) -> None:
    methods = space.methods
    for knob in space.base["method"]:
        if knob != "name" and not any(knob in method_knobs(m) for m in methods):
            raise UserError(f"method.{knob}: not a knob of {' or '.join(methods)} (the methods this space "
                            "trains); remove it or add a method that has it")


def _check_scheduler(space: SearchSpace) -> None:
    options = space.tune.options
    grids = [k for k, s in space.knobs.items() if "grid" in s]
    if grids and space.tune.search != "random":
        raise UserError(f"{grids[0]}: {{grid: ...}} needs tune.search: random ({space.tune.search} samples "
                        "its own points; use choice or a range)")
    if not isinstance(options, PbtOptions):
        return
    fixed = [k for k in space.knobs if k == "method.name" or k.startswith(("backbone.", "scaling."))]
    if fixed:
        raise UserError(f"{fixed[0]}: PBT copies weights between trials, so the method, backbone and "
                        "scaling must be the same in every trial; fix this value or use scheduler asha")
    for key in options.mutate or []:
        if key not in space.knobs:
            raise UserError(f"tune.scheduler.mutate: {key!r} is not a searched key; searched: "
                            f"{', '.join(space.knobs) or 'none'}")
    if not space.perturbed_knobs():
        raise UserError("tune.scheduler: PBT needs at least one searched numeric knob to perturb "
                        "(e.g. method.temperature: {loguniform: [0.05, 0.5]})")


def _check_every_corner(space: SearchSpace) -> None:
    """Validate the recipe of every method at every listed value and both ends of every range."""
    others = [k for k in space.knobs if k != "method.name"]
    for method in space.methods:
        low = {k: spec_values(space.knobs[k])[0] for k in others}
        configs = [dict(low)]
        for key in others:
            for value in spec_values(space.knobs[key])[1:]:
                configs.append({**low, key: value})
        for config in configs:
            config["method.name"] = method
            where = f"{space.source}" + (f" (method.name={method})" if len(space.methods) > 1 else "")
            try:
                recipe = recipe_from_dict(space.trial_recipe(config))
            except UserError as err:
                raise UserError(f"{where}: {err}") from None
            _check_recipe_for_sweep(recipe, space.tune, where)


def _check_recipe_for_sweep(recipe, tune_section: TuneSection, where: str) -> None:
    if tune_section.metric in EVAL_METRICS:
        if recipe.train.knn_every != 1:
            raise UserError(f"{where}: train.knn_every: {recipe.train.knn_every}, but tune.metric "
                            f"{tune_section.metric} must be measured every epoch; set train.knn_every: 1")
        if recipe.data.knn_bank is None or recipe.data.knn_query is None:
            raise UserError(f"{where}: data.knn_bank / data.knn_query: tune.metric {tune_section.metric} "
                            "needs both labeled splits")
    if tune_section.metric in FINAL_METRICS:
        if recipe.train.linear_probe_epochs < 1:
            raise UserError(f"{where}: train.linear_probe_epochs: {recipe.train.linear_probe_epochs}, but tune.metric "
                            f"{tune_section.metric} needs a probe at the end of each trial; set it to e.g. 20")
        if recipe.data.knn_bank is None or recipe.data.knn_query is None:
            raise UserError(f"{where}: data.knn_bank / data.knn_query: tune.metric {tune_section.metric} "
                            "needs both labeled splits")
        if tune_section.scheduler_name != "fifo":
            raise UserError(f"{where}: tune.scheduler: {tune_section.scheduler_name} compares trials every epoch, but "
                            f"tune.metric {tune_section.metric} exists only after the last one; use scheduler: fifo "
                            "(or metric: knn_top1)")
    if isinstance(tune_section.options, PbtOptions) and recipe.scaling.num_workers != 1:
        raise UserError(f"{where}: scaling.num_workers: {recipe.scaling.num_workers}; PBT needs single-worker "
                        "trials (they report checkpoints to Tune; TorchTrainer trials cannot, RAY_NOTES §5)")


def load_space(path: str | Path, overrides: list[str] = ()) -> SearchSpace:
    """Read a search-space YAML, apply ``key.path=value`` overrides (a value may be a distribution,
    e.g. ``'method.temperature={choice: [0.1, 0.2]}'``) and validate it."""
    data = apply_overrides(read_yaml(path), list(overrides))
    return space_from_dict(data, source=str(path))


def trials_per_sample(space: SearchSpace) -> int:
    """Trials one sample expands to: the product of the grid sizes (1 without grids)."""
    return math.prod(len(s["grid"]) for s in space.knobs.values() if "grid" in s)
