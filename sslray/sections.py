"""Typed sections built from plain dicts (YAML), with errors that name the key: the machinery every
config dataclass (a recipe section, a method's knobs) is read with.

Each section of a recipe is a dataclass with commented defaults (nanoGPT style), declared next to the
code it configures (a method's knobs live in its method file, view recipes in ``data/augment.py``).
``section_from_dict`` turns a dict into one of them and refuses unknown keys and wrong types, naming the
dotted key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, TypeVar

from sslray.errors import UserError

T = TypeVar("T")


def section_from_dict(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; ``where`` is the dotted path used in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys to values, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{where}.{key}: unknown key{hint}; allowed: {', '.join(sorted(fields))}")
        values[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError as err:
                errors.append(str(err))
        raise UserError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {hint}")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise UserError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        coerced = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(coerced) if origin is tuple else coerced
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping of keys to values, got {value!r}")
        key_hint, value_hint = args or (Any, Any)
        return {_coerce(k, key_hint, f"{where} key"): _coerce(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return section_from_dict(hint, value, where)
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int with hundreds of digits
            raise UserError(f"{where}: {value} is too large for a number") from None
        if not math.isfinite(number):  # .nan passes every range check, .inf most of them
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return number
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise UserError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def check_range(
    where: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise a UserError naming ``where`` if ``value`` is outside [low, high] (open ends optional)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        allowed = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise UserError(f"{where}: {value!r} is out of range; allowed {allowed}")
