"""Search distributions: the ``{form: args}`` values of a search-space YAML, as Ray Tune domains.

Any value of a recipe may be one of (docs/architecture.md, the YAML schema)::

    {choice: [a, b, ...]}      sampled uniformly from the list       tune.choice
    {grid: [a, b, ...]}        every value, each num_samples times    tune.grid_search
    {uniform: [low, high]}     float in [low, high]                   tune.uniform
    {loguniform: [low, high]}  float, uniform in log space (low > 0)  tune.loguniform
    {randint: [low, high]}     integer in low..high, both included    tune.randint(low, high + 1)
    {quniform: [low, high, q]} float in [low, high], a multiple of q  tune.quniform

This module owns one distribution at a time: its Tune domain (``tune_domain``), the values validated
before a sweep (``spec_values``), a value brought back inside it (``keep_inside``), and finding the
distributions of a recipe dict by dotted key (``distribution_keys``, ``get_dotted``, ``set_dotted``).
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any

from sslray.errors import UserError
from sslray.recipe import DISTRIBUTIONS, find_distributions


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

    ((form, args),) = spec.items()
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
        return _randint(key, args)
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


def _randint(key: str, args: list) -> Any:
    from ray import tune

    if not all(isinstance(v, int) and not isinstance(v, bool) for v in args):
        raise UserError(f"{key}: {{randint: [low, high]}} needs integers, got {args!r}")
    low, high = args
    if low > high:
        raise UserError(f"{key}: {{randint: {args}}} has low > high")
    if not -(2**63) <= low <= high < 2**63 - 1:  # Tune samples with numpy's int64
        raise UserError(f"{key}: {{randint: {args}}} is outside the 64-bit integer range")
    return tune.randint(low, high + 1)  # Tune's upper bound is exclusive; ours is inclusive


def spec_values(spec: dict[str, Any]) -> list[Any]:
    """The values validated before a sweep: every listed value, or both ends of a range."""
    ((form, args),) = spec.items()
    if form in ("choice", "grid"):
        return list(args)
    if form == "quniform":
        low, high, q = args
        return [round(low / q) * q, round(high / q) * q]
    return [args[0], args[1]]


def keep_inside(spec: dict[str, Any], value: Any) -> Any:
    """``value`` brought back inside the distribution ``spec``: clamped to [low, high] (rounded to a
    multiple of q, or to an integer), or, for a list, the listed value nearest to it. PBT perturbs a
    value by a factor (0.99 * 1.2 = 1.19), which knows nothing of the range the space validated."""
    ((form, args),) = spec.items()
    if form in ("choice", "grid"):
        if value in args:
            return value
        numeric = [v for v in args if isinstance(v, numbers.Real) and not isinstance(v, bool)]
        if not numeric or isinstance(value, bool) or not isinstance(value, numbers.Real):
            return args[0]
        return min(numeric, key=lambda v: abs(v - value))
    low, high = args[0], args[1]
    if form == "quniform":
        value = round(value / args[2]) * args[2]
    elif form == "randint":
        value = int(round(value))
    return min(max(value, low), high)


# Weights & Biases sweep distributions (``{distribution: log_uniform_values, min: ..., max: ...}``) and
# the sslray form each one is written as.
WANDB_FORMS = {
    "uniform": "uniform", "log_uniform_values": "loguniform", "q_uniform": "quniform", "int_uniform": "randint",
    "categorical": "choice",
}  # fmt: skip


def _wandb_hint(data: dict) -> str | None:
    """The sslray spelling of a W&B-style distribution mapping, or None when ``data`` is not one."""
    form = WANDB_FORMS.get(str(data.get("distribution", "")))
    if form is None and "values" in data and set(data) <= {"values", "distribution"}:
        form = "choice"
    if form is None:
        return None
    if form == "choice":
        return f"{{choice: {list(data.get('values', []))}}}"
    args = [data.get("min", "LOW"), data.get("max", "HIGH")] + ([data.get("q", "Q")] if form == "quniform" else [])
    return f"{{{form}: [{', '.join(map(str, args))}]}}"


def check_unknown_distributions(data: Any, where: str = "") -> None:
    """``{logunifrom: [...]}``: a one-key mapping whose key is a near-miss of a distribution name; a
    Weights & Biases distribution (``{distribution: ..., min, max}``, ``{values: [...]}``), with its
    sslray spelling."""
    if not isinstance(data, dict):
        return
    hint = _wandb_hint(data) if where else None
    if hint is not None:
        raise UserError(f"{where}: a Weights & Biases-style distribution; in sslray write {where}: {hint}")
    if len(data) == 1:
        ((key, value),) = data.items()
        close = difflib.get_close_matches(str(key), DISTRIBUTIONS, n=1, cutoff=0.75)
        if key not in DISTRIBUTIONS and close and isinstance(value, list):
            raise UserError(
                f"{where or key}: unknown distribution {key!r}; did you mean {close[0]}? "
                f"(choose from {', '.join(DISTRIBUTIONS)})"
            )
    for key, value in data.items():
        check_unknown_distributions(value, f"{where}.{key}".strip("."))


def distribution_keys(data: dict[str, Any]) -> list[str]:
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
                raise UserError(
                    f"{where}: the key {key!r} holds a search distribution, so it must be a name "
                    "(a string without dots)"
                )
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
