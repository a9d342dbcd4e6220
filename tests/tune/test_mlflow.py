"""``tune.loggers: [mlflow]`` (issue 17 item 5): a sweep logged through Ray Tune's MLflowLoggerCallback
into a real MLflow store in the sweep folder, read back with MLflow's own client; what a restarted
or resumed trial does to its run; and the one-line errors of a bad ``tune.loggers`` at load time."""

from __future__ import annotations

import sys

import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.experiment import Trial

from sslray.cli import main
from sslray.tune.mlflow_logger import mlflow_callback

from ..conftest import assert_one_line_error, read_leaderboard
from .conftest import tiny_space


def test_a_two_trial_sweep_logged_to_mlflow(ray_local, tiny_fmnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's defaults write to ./mlruns: nothing may land there
    data = tiny_space(tiny_fmnist, scheduler={"name": "fifo"}, loggers=["mlflow"], baselines=False)
    data["train"]["epochs"] = 2
    data["method"]["temperature"] = {"grid": [0.1, 0.3]}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(data))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "space.yaml", "--out", str(sweep_dir)]) == 0

    rows, _ = read_leaderboard(sweep_dir)
    client = MlflowClient(f"sqlite:///{sweep_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("sweep")  # the sweep folder's name
    assert experiment.artifact_location == (sweep_dir / "mlartifacts").as_uri()
    runs = {run.data.tags["trial_name"]: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(row["trial"] for row in rows) and len(runs) == 2
    for row in rows:
        run = runs[row["trial"]]
        assert run.info.status == "FINISHED" and run.info.run_name == row["trial"]
        assert float(run.data.params["method.temperature"]) == float(row["method.temperature"])
        knn = client.get_metric_history(run.info.run_id, "knn_top1")
        assert [m.step for m in knn] == [1, 2]  # one value per epoch
        assert knn[-1].value == pytest.approx(float(row["last knn_top1"]))
        assert max(m.value for m in knn) == pytest.approx(float(row["best knn_top1"]))
        assert [m.value for m in client.get_metric_history(run.info.run_id, "epoch")] == [1, 2]
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_restarted_or_resumed_trial_keeps_its_one_run(tmp_path):
    # Ray's own Trial objects (stub: no trainable behind them) driven through the callback as Tune
    # drives it: start, a report, a restart with a perturbed value (PBT), a new callback (--resume).
    sweep_dir = str(tmp_path / "sweep")
    trial = Trial("run_trial", config={"method.temperature": 0.1}, trial_id="abc12_00000", stub=True)
    trial.custom_trial_name = "simclr_abc12_00000"
    logger = mlflow_callback(None, None, sweep_dir)
    logger.setup()
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, {"training_iteration": 1, "knn_top1": 0.25})
    trial.set_config({"method.temperature": 0.12})
    with pytest.raises(MlflowException):  # what Ray's callback alone does on PBT's restart
        MLflowLoggerCallback.log_trial_start(logger, trial)
    logger.log_trial_start(trial)

    resumed = mlflow_callback(None, None, sweep_dir)
    resumed.setup()
    resumed.log_trial_start(trial)
    resumed.log_trial_result(2, trial, {"training_iteration": 2, "knn_top1": 0.5})
    resumed.log_trial_end(trial)

    client = MlflowClient(f"sqlite:///{sweep_dir}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params == {"method.temperature": "0.1"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "knn_top1")] == [(1, 0.25), (2, 0.5)]


@pytest.mark.parametrize(
    ("loggers", "needles"),
    [
        (["wandb"], ("tune.loggers: 'wandb' is not a logger; choose one of mlflow",)),
        ("mlflow", ("tune.loggers: expected a list",)),
        ([{"name": "mlflow", "trackng_uri": "x"}], ("tune.loggers.mlflow.trackng_uri: unknown key", "tracking_uri")),
        (["mlflow", "mlflow"], ("tune.loggers: mlflow is listed twice",)),
    ],
)
def test_a_bad_logger_is_one_line_at_load_time(tiny_fmnist, tmp_path, capsys, loggers, needles):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space(tiny_fmnist, loggers=loggers)))
    assert main(["sweep", str(space), "--out", str(tmp_path / "sweep")]) == 2
    assert_one_line_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "sweep").exists()


def test_mlflow_not_installed_names_the_extra(tiny_fmnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without the package finds
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space(tiny_fmnist, loggers=["mlflow"])))
    assert main(["sweep", str(space), "--out", str(tmp_path / "sweep")]) == 2
    assert_one_line_error(
        capsys.readouterr().err, "tune.loggers: mlflow is not installed", "pip install 'sslray[mlflow]'"
    )
