"""The package's shape, checked on its source: layers import only downwards (so there is no import
cycle), the math and data readers stay free of Ray, no file grows past 300 lines, and ruff (lint and
format, configured in pyproject.toml) is clean. docs/architecture.md explains the layers."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sslray"

# Bottom to top. A module may import modules of its own layer or of layers below it, never above.
LAYERS = [
    (
        "sslray",
        "sslray.errors",
        "sslray.sections",
        "sslray.locations",
        "sslray.interrupts",
        "sslray.console",
    ),  # the package itself
    ("sslray.nn",),
    ("sslray.losses",),
    ("sslray.methods",),
    ("sslray.data",),
    ("sslray.recipe",),
    ("sslray.runs", "sslray.cluster", "sslray.reaper"),
    ("sslray.eval",),
    ("sslray.train",),
    ("sslray.tune",),
    ("sslray.submit",),
    ("sslray.cli",),
    ("sslray.api",),  # the Python API: the commands as functions (sslray/__init__ reaches it by name)
]
RAY_FREE = (
    "sslray.errors",
    "sslray.sections",
    "sslray.nn",
    "sslray.losses",
    "sslray.methods",
    "sslray.data.readers",
    "sslray.data.augment",
    "sslray.data.batched_transforms",
    "sslray.recipe",
)
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """sslray modules ``path`` imports anywhere in its body (function-level imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def layer_of(name: str) -> int:
    for index in reversed(range(len(LAYERS))):  # the most specific prefix: "sslray" holds them all
        if any(name == p or name.startswith(p + ".") for p in LAYERS[index] if p != "sslray" or name == p):
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def test_every_import_goes_down_the_layers():
    known = modules()
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, path in known.items()
        for target in sorted(imports_of(name, path, known))
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_modules():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_math_and_the_readers_import_no_ray():
    offenders = []
    for name, path in modules().items():
        if not name.startswith(RAY_FREE):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{name} imports {n}" for n in names if n == "ray" or n.startswith("ray.")]
    assert not offenders, "\n".join(offenders)


def test_no_file_over_300_lines():
    long = {
        str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_the_layer_list_names_real_packages():
    known = modules()
    for prefixes in LAYERS:
        for prefix in prefixes:
            assert prefix in known, f"{prefix} is in LAYERS but not a module"


def ruff() -> list[str]:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: `pip install -e '.[dev]'` brings it")
    return [found]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    done = subprocess.run([*ruff(), *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
