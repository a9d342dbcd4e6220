"""``sslray.sweep`` / ``sslray.train`` / ``sslray.evaluate`` from Python on the real local Ray (issue 17
item 4): results as objects, and a user's mistake as ``sslray.UserError`` with the CLI's message."""

from __future__ import annotations

import pytest
import yaml

import sslray

from ..conftest import tiny_grid, tiny_recipe


def test_sweep_train_and_evaluate_from_python(ray_local, tiny_fmnist, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**tiny_grid(tiny_fmnist), "tune": {"seed": 0, "scheduler": {"name": "fifo"}}}))
    result = sslray.sweep(space, overrides=["optim.base_lr=0.002"], out=tmp_path / "sweep")
    frame = result.dataframe()
    assert sorted(frame["method.temperature"]) == [0.1, 0.2] and frame["best knn_top1"].dtype == float
    assert result.best.checkpoint.is_dir() and result.best.recipe.optim.base_lr == 0.002

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_fmnist)))
    summary = sslray.train(recipe, out=tmp_path / "run")
    assert summary["metrics"]["epoch"] == 1 and (tmp_path / "run" / "result.json").is_file()
    knn, random_init, pixels = sslray.evaluate(tmp_path / "run", protocol="knn")
    assert not knn["baseline"] and (random_init["encoder"], pixels["encoder"]) == ("random init", "raw pixels")
    # The run's own protocol: the number its online kNN reported for that epoch.
    assert knn["val_top1"] == pytest.approx(summary["metrics"]["knn_top1"], abs=5e-3)


def test_mistakes_raise_user_error_with_the_cli_message(tiny_fmnist, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_fmnist)))
    with pytest.raises(sslray.UserError, match=r"method\.temprature: unknown key"):
        sslray.train(recipe, overrides=["method.temprature=0.1"], out=tmp_path / "run")
    with pytest.raises(sslray.UserError, match="no leaderboard.csv"):
        sslray.load_sweep(tmp_path)
    assert not (tmp_path / "run").exists()
