"""sslray from Python: the commands as functions, their results as objects.

    import sslray

    result = sslray.sweep("search_spaces/quickstart.yaml", overrides=["train.epochs=2"], out="sweeps/qs")
    result.dataframe()        # pandas: one row per trial, full precision, NaN where a knob does not apply
    result.best.checkpoint    # the best trial's best checkpoint folder; .recipe, .metric, .value, .trial
    sslray.load_sweep("sweeps/qs").best.recipe
    sslray.train("search_spaces/simclr_fmnist.yaml", overrides=["train.epochs=1"], out="runs/s1")
    sslray.evaluate("runs/s1", protocol="knn")   # the best checkpoint's row, then random init and raw pixels

Every function validates what the command line validates, before Ray starts, and a user's mistake raises
``sslray.UserError`` with the same one-line message. Without a cluster (``address=`` or RAY_ADDRESS) a
local Ray is started for the call and stopped after it; a Ray the caller already started is used and
left running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslray.cluster import ray_session
from sslray.errors import UserError
from sslray.recipe import Recipe, load_recipe
from sslray.runs.checkpoint import find_checkpoint
from sslray.runs.folders import RUN, SWEEP, check_out, default_out

__all__ = ["Best", "SweepResult", "evaluate", "load_sweep", "sweep", "train"]


@dataclass(frozen=True)
class Best:
    """A sweep's best trial: its name, the metric it was ranked by and its best value, the folder of its
    best checkpoint, and its recipe with every value fixed (``best.yaml``: what ``sslray train`` reruns)."""

    trial: str
    metric: str
    value: float
    checkpoint: Path
    recipe: Recipe


@dataclass(frozen=True)
class SweepResult:
    """A finished (or interrupted) sweep folder, read back from its ``leaderboard.csv`` and ``best.yaml``."""

    path: Path

    def dataframe(self, baselines: bool = False):
        """The leaderboard as a pandas DataFrame, best first; ``baselines=True`` keeps the rows
        ``random-init`` and ``raw-pixels`` (status "baseline")."""
        import pandas as pd

        frame = pd.read_csv(self.path / "leaderboard.csv")
        return frame if baselines else frame[frame["status"] != "baseline"].reset_index(drop=True)

    @property
    def best(self) -> Best:
        frame = self.dataframe()
        metric = next(c for c in frame.columns if c.startswith("best ") and c != "best epoch")
        ranked = frame.dropna(subset=[metric])
        if ranked.empty or not (self.path / "best.yaml").is_file():
            raise UserError(f"{self.path}: no trial reported {metric.removeprefix('best ')}, so there is no best")
        row = ranked.iloc[0]
        return Best(
            trial=row["trial"],
            metric=metric.removeprefix("best "),
            value=float(row[metric]),
            checkpoint=find_checkpoint(self.path / row["trial"]),
            recipe=load_recipe(self.path / "best.yaml"),
        )


def load_sweep(path: str | Path) -> SweepResult:
    """A sweep folder's results (the folder ``sslray sweep --out`` wrote)."""
    path = Path(path)
    if not (path / "leaderboard.csv").is_file():
        raise UserError(f"{path}: no leaderboard.csv; is it a finished sweep folder?")
    return SweepResult(path)


def sweep(
    space: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None, address: str | None = None
) -> SweepResult:
    """``sslray sweep SPACE [overrides] --out OUT``: run every trial, return the results."""
    from sslray.tune.space import load_space
    from sslray.tune.sweep import check_trial_data, run_sweep

    loaded = load_space(space, list(overrides))
    out = str(out or default_out("sweeps", Path(space).stem))
    check_out(out, SWEEP, overwrite=False)
    check_trial_data(loaded)
    run_sweep(loaded, out, address)  # Ray: the caller's if connected, else started and stopped for this call
    return load_sweep(out)


def train(
    recipe: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None, address: str | None = None
) -> dict[str, Any]:
    """``sslray train RECIPE [overrides] --out OUT``: the run's summary (what ``OUT/result.json`` holds)."""
    from sslray.train.trainer import check_data, fit

    loaded = load_recipe(recipe, list(overrides))
    run_dir = Path(out or default_out("runs", loaded.method_name))
    check_out(str(run_dir), RUN, overwrite=False)
    check_data(loaded)
    with ray_session(address):
        return fit(loaded, run_dir)


def evaluate(
    target: str | Path,
    protocol: str = "knn",
    data: str | None = None,
    out: str | Path | None = None,
    address: str | None = None,
) -> list[dict]:
    """``sslray eval TARGET --protocol P [--data PREPARED]``: one result per evaluated checkpoint, then the
    baselines on the same protocol and splits (random init, raw pixels; ``baseline`` is True for them),
    each with ``val_top1`` and ``val_top5`` (the run's own kNN protocol and splits unless ``data`` is given)."""
    from sslray.eval.evaluate import device_for
    from sslray.eval.evaluate import evaluate as run_evaluation
    from sslray.eval.protocols import EvalOptions

    options = EvalOptions(protocol=protocol, data=data)
    with ray_session(address):
        return run_evaluation(Path(target), options, Path(out) if out else None, device=device_for())
