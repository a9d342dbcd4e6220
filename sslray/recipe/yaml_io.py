"""Recipe YAML in: ``yaml.SafeLoader`` only (reading YAML 1.2 floats such as ``2e-3``), with limits on
what validation will walk, ``key.path=value`` overrides from the command line, and the search
distributions a sweep explores.

Every failure is a one-line ``UserError`` that names the file (or override) and, where the parser
knows it, the line and column.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from sslray.errors import UserError

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")

MAX_DEPTH = 32  # a recipe nests 4 levels; deeper is a mistake, and validation walks it recursively
MAX_VALUES = 100_000  # values once YAML aliases are expanded: "billion laughs" is refused, not walked


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads YAML 1.2's floats (PyYAML follows YAML 1.1, where ``2e-3`` and
    ``1e5`` are strings, so ``optim.base_lr=2e-3`` failed as "expected a number") and refuses a key
    given twice in one mapping (YAML says keys are unique; PyYAML silently keeps the last, so a second
    ``train:`` section dropped the first one's settings)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key!r} (first on line {seen}, again on line "
                        f"{key_node.start_mark.line + 1}); give each key once",
                        problem_mark=key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


RecipeLoader.add_implicit_resolver(  # YAML 1.2 core schema's float, plus 1.1's underscores
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def check_tree(data: Any, where: str, depth: int = 0) -> None:
    """Refuse YAML that validation could not walk: an alias inside itself (``&a [*a]``), nesting
    deeper than ``MAX_DEPTH``, or aliases that expand to more than ``MAX_VALUES`` values."""
    count = 0
    active: set[int] = set()  # containers on the current path: meeting one again is a cycle

    def walk(node: Any, level: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise UserError(
                f"{where}: more than {MAX_VALUES:,} values once YAML aliases (*name) are expanded; "
                "a recipe is far smaller"
            )
        if not isinstance(node, (dict, list)):
            return
        if id(node) in active:
            raise UserError(
                f"{where}: a YAML alias (*name) points to a value that contains it; a recipe cannot be recursive"
            )
        if level >= MAX_DEPTH:
            raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep; a recipe has sections of keys")
        active.add(id(node))
        for child in node.values() if isinstance(node, dict) else node:
            walk(child, level + 1)
        active.discard(id(node))

    walk(data, depth)


def parse_yaml(text: str | bytes, where: str) -> Any:
    """``yaml.safe_load`` whose every failure is a one-line UserError starting with ``where`` (and the
    line:column when the parser knows it)."""
    try:
        data = yaml.load(text, Loader=RecipeLoader)  # a SafeLoader: no Python tags
    except yaml.reader.ReaderError as err:  # bytes that are not UTF-8, or characters YAML forbids
        if err.encoding == "unicode":  # decoded fine, but a control character YAML does not allow
            problem = (
                f"character U+{err.character:04X} at offset {err.position} is not allowed in YAML "
                "(control characters other than tab and newline)"
            )
        else:
            problem = (
                f"not {err.encoding.upper()} text (byte {err.character:#04x} at offset {err.position}); "
                "save it as UTF-8"
            )
        raise UserError(f"{where}: {problem}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(err, "problem", None) or str(err)
        if "constructor for the tag" in problem:
            problem += " (sslray reads YAML with safe_load: no Python tags)"
        raise UserError(f"{at}: {problem}") from None
    except RecursionError:  # the parser recurses per nesting level
        raise UserError(f"{where}: nested far too deeply (more than {MAX_DEPTH} levels)") from None
    check_tree(data, where)
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file with ``safe_load``; syntax errors and unsafe tags name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        raw = path.read_bytes()  # bytes: the YAML reader detects UTF-8/16 and reports bad bytes
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror or err})") from None
    data = parse_yaml(raw, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections (method:, data:, ...), got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=1", "method.temperature=0.2"]`` applied to a copy of ``data``; values are YAML."""
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"override {override!r}: expected key.path=value, e.g. train.epochs=1")
        parts = key.split(".")
        if len(parts) > MAX_DEPTH:
            raise UserError(f"override {override!r}: more than {MAX_DEPTH} parts in the key")
        value = parse_yaml(text, f"override {override!r}: the value")
        check_tree(value, f"override {override!r}: the value", depth=len(parts))
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {override!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def find_distributions(data: Any, where: str = "") -> list[str]:
    """Dotted keys whose value is a search distribution (``{choice: [...]}`` and friends)."""
    if isinstance(data, dict):
        if len(data) == 1 and next(iter(data)) in DISTRIBUTIONS:
            return [where]
        return [k for key, value in data.items() for k in find_distributions(value, f"{where}.{key}".strip("."))]
    return []
