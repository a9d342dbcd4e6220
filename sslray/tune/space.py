"""A search space: the recipe YAML with distributions in place of values, plus a ``tune:`` section.

The distributions (``{choice: [...]}``, ``{loguniform: [low, high]}``, ...) are in ``distributions.py``,
the ``tune:`` section (metric, scheduler, searcher, ...) in ``section.py``. This module reads a space
(``load_space``, ``space_from_dict``), validates it as a whole and turns a trial's sampled values
into its recipe (``SearchSpace``).

A sweep may span methods (``method.name: {choice: [simclr, mae]}``): each method knob then applies
only to the methods that have it (``mask_ratio`` to MAE and MACRL, not SimCLR); a knob that none of
the candidate methods has is an error. Every combination is validated before Ray starts, at both
ends of every range and every listed value, so a value out of range fails here naming the key, and
not an hour into the sweep.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslray.errors import UserError
from sslray.methods.registry import METHODS
from sslray.recipe import Recipe, apply_overrides, read_yaml, recipe_from_dict
from sslray.sections import section_from_dict
from sslray.tune.distributions import (
    check_unknown_distributions,
    distribution_keys,
    get_dotted,
    set_dotted,
    spec_values,
    tune_domain,
)
from sslray.tune.registry import SCHEDULERS, SEARCHERS, SchedulerInputs
from sslray.tune.section import EVAL_METRICS, FINAL_METRICS, TuneSection

# Imported from here elsewhere (tests, the CLI): the registry and the one-distribution helpers.
__all__ = [
    "SCHEDULERS",
    "SearchSpace",
    "TuneSection",
    "load_space",
    "method_knobs",
    "space_from_dict",
    "trials_per_sample",
    "tune_domain",
]


def method_knobs(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(METHODS[name].config)}


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

    def first_recipe(self) -> Recipe:
        """The recipe of ``first_config``: what every trial shares (data, scaling, train settings the
        space does not search) read from one place."""
        return recipe_from_dict(self.trial_recipe(self.first_config()))

    def corner_recipes(self) -> list[tuple[str, Recipe]]:
        """The recipe of every method at every listed value and both ends of every range (one knob off
        its first value at a time), each with where it comes from: ``SPACE (key=value, ...)``. A mistake
        in any value of a distribution fails here, before a trial is spent on it."""
        others = [k for k in self.knobs if k != "method.name"]
        first = {k: spec_values(self.knobs[k])[0] for k in others}
        corners = [({}, first)]
        for key in others:
            corners += [({key: value}, {**first, key: value}) for value in spec_values(self.knobs[key])[1:]]
        out = []
        for method in self.methods:
            for changed, config in corners:
                named = ({"method.name": method} if len(self.methods) > 1 else {}) | changed
                where = self.source + (f" ({', '.join(f'{k}={v}' for k, v in named.items())})" if named else "")
                try:
                    recipe = recipe_from_dict(self.trial_recipe({**config, "method.name": method}))
                except UserError as err:
                    raise UserError(f"{where}: {err}") from None
                out.append((where, recipe))
        return out

    def param_space(self) -> dict[str, Any]:
        """Tune's param_space: flat dotted keys -> domains (the status table and HParams show them)."""
        return {key: tune_domain(key, spec) for key, spec in self.knobs.items()}

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

    def planned_epochs(self, config: dict[str, Any]) -> int:
        """Epochs the trial of ``config`` is to train (``train.stop_at_epoch`` or ``train.epochs``)."""
        train = recipe_from_dict(self.trial_recipe(config)).train
        return train.stop_at_epoch or train.epochs

    def scheduler_inputs(self) -> SchedulerInputs:
        """What the scheduler is built from: the knobs, and the longest trial at any listed value or
        either end of any range (one knob away from the first config)."""
        first = self.first_config()
        corners = [first] + [{**first, key: value} for key, spec in self.knobs.items() for value in spec_values(spec)]
        return SchedulerInputs(knobs=self.knobs, max_epochs=max(self.planned_epochs(c) for c in corners))

    def build_scheduler(self):
        """Ray's scheduler for this space's ``tune.scheduler``."""
        return self.tune.scheduler_entry.build(self.tune.options, self.scheduler_inputs())

    def applicable(self, config: dict[str, Any]) -> dict[str, Any]:
        """The sampled values that mean something for this trial's method (HParams, leaderboard)."""
        allowed = method_knobs(config.get("method.name", self.methods[0]))
        return {
            k: v
            for k, v in config.items()
            if k in self.knobs and (not k.startswith("method.") or k == "method.name" or k.split(".", 1)[1] in allowed)
        }

    def to_yaml_dict(self) -> dict[str, Any]:
        """The space as a YAML-able dict (what ``--resume`` reads back from the sweep folder)."""
        tune_section = {
            f.name: getattr(self.tune, f.name) for f in dataclasses.fields(TuneSection) if f.name != "options"
        }
        return {**copy.deepcopy(self.base), "tune": tune_section}


def space_from_dict(data: dict[str, Any], source: str = "<space>") -> SearchSpace:
    data = copy.deepcopy(data)
    tune_section = section_from_dict(TuneSection, data.pop("tune", None), "tune")
    tune_section.validate()
    check_unknown_distributions(data)
    keys = distribution_keys(data)
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
            raise UserError(
                f"method.{knob}: not a knob of {' or '.join(methods)} (the methods this space "
                "trains); remove it or add a method that has it"
            )


def _check_scheduler(space: SearchSpace) -> None:
    grids = [k for k, s in space.knobs.items() if "grid" in s]
    if grids and not SEARCHERS[space.tune.search].basic_variants:
        raise UserError(
            f"{grids[0]}: {{grid: ...}} needs tune.search: random ({space.tune.search} samples "
            "its own points; use choice or a range)"
        )
    space.tune.scheduler_entry.check_space(space.tune.options, space.knobs)


def _check_every_corner(space: SearchSpace) -> None:
    for where, recipe in space.corner_recipes():
        _check_recipe_for_sweep(recipe, space.tune, where)


def _check_recipe_for_sweep(recipe: Recipe, tune_section: TuneSection, where: str) -> None:
    metric, scheduler = tune_section.metric, tune_section.scheduler_entry
    unlabeled = recipe.data.knn_bank is None or recipe.data.knn_query is None
    if metric in EVAL_METRICS:
        if recipe.train.knn_every != 1:
            raise UserError(
                f"{where}: train.knn_every: {recipe.train.knn_every}, but tune.metric "
                f"{metric} must be measured every epoch; set train.knn_every: 1"
            )
        if unlabeled:
            raise UserError(f"{where}: data.knn_bank / data.knn_query: tune.metric {metric} needs both labeled splits")
    if metric in FINAL_METRICS:
        if recipe.train.linear_probe_epochs < 1:
            raise UserError(
                f"{where}: train.linear_probe_epochs: {recipe.train.linear_probe_epochs}, but "
                f"tune.metric {metric} needs a probe at the end of each trial; set it to e.g. 20"
            )
        if unlabeled:
            raise UserError(f"{where}: data.knn_bank / data.knn_query: tune.metric {metric} needs both labeled splits")
        if scheduler.compares_every_epoch:
            raise UserError(
                f"{where}: tune.scheduler: {tune_section.scheduler_name} compares trials every epoch, "
                f"but tune.metric {metric} exists only after the last one; use scheduler: fifo "
                "(or metric: knn_top1)"
            )
    if scheduler.restores_checkpoints and recipe.scaling.num_workers != 1:
        raise UserError(
            f"{where}: scaling.num_workers: {recipe.scaling.num_workers}; tune.scheduler "
            f"{tune_section.scheduler_name} restores trials from each other's checkpoints, which only "
            "single-worker trials hand to Tune; set scaling.num_workers: 1"
        )


def load_space(path: str | Path, overrides: list[str] = ()) -> SearchSpace:
    """Read a search-space YAML, apply ``key.path=value`` overrides (a value may be a distribution,
    e.g. ``'method.temperature={choice: [0.1, 0.2]}'``) and validate it."""
    data = apply_overrides(read_yaml(path), list(overrides))
    return space_from_dict(data, source=str(path))


def trials_per_sample(space: SearchSpace) -> int:
    """Trials one sample expands to: the product of the grid sizes (1 without grids)."""
    return math.prod(len(s["grid"]) for s in space.knobs.values() if "grid" in s)
