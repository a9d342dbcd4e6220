"""``tune.loggers: [mlflow]``: a sweep logged to MLflow by Ray Tune's own ``MLflowLoggerCallback``
(docs/ray.md §12), from the driver: one experiment per sweep, one run per trial (named and tagged
``trial_name`` as its folder), the trial's searched knobs as params (dotted keys, as in the leaderboard)
and everything numeric in each report as metrics at step = Tune's report count, which is the epoch
(one report per epoch), ``config/<knob>`` included (it follows PBT's changes).

Imported only when a sweep logs to MLflow: importing mlflow takes a second or two.
"""

from __future__ import annotations

from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback

from sslray.errors import UserError
from sslray.runs import storage

DB_FILE = "mlflow.db"  # the default tracking store, in the sweep folder
ARTIFACTS = "mlartifacts"  # the default experiment's artifact root, beside it


class SweepMLflowLogger(MLflowLoggerCallback):
    """Ray's callback, plus what a sweep needs: an experiment whose artifacts stay in the sweep folder,
    and one run per trial however often the trial starts."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None):
        super().__init__(tracking_uri, experiment_name=experiment_name)
        self.artifact_location = artifact_location

    def setup(self, *args, **kwargs):
        from mlflow.tracking import MlflowClient

        # Ray creates a missing experiment with MLflow's default artifact root, ./mlruns of the driver's
        # working directory; created here first, Ray finds it by name.
        client = MlflowClient(self.tracking_uri)
        if self.artifact_location and client.get_experiment_by_name(self.experiment_name) is None:
            client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial):
        # A trial starts again after PBT perturbs it or its process dies: its run is kept, and its params
        # stay the values it started with (MLflow refuses to change a logged param; the config/<knob>
        # metrics follow the changes).
        if trial in self._trial_runs:
            return
        run_id = self._existing_run(str(trial))
        if run_id is not None:
            self._trial_runs[trial] = run_id
            return
        super().log_trial_start(trial)

    def _existing_run(self, trial_name: str) -> str | None:
        """The run of a trial logged before ``sslray sweep --resume``: Tune restores this callback
        from the pickled run config, without the runs it had opened."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id], f"tags.trial_name = '{trial_name}'", max_results=1)
        return runs[0].info.run_id if runs else None


def mlflow_callback(tracking_uri: str | None, experiment: str | None, sweep_dir: str) -> SweepMLflowLogger:
    """The callback for the sweep in ``sweep_dir`` (``tune.loggers.mlflow``'s options); by default an
    SQLite store in the sweep folder and an experiment named as the folder."""
    experiment = experiment or storage.split_parent(sweep_dir)[1]
    if tracking_uri is not None:
        return SweepMLflowLogger(tracking_uri, experiment, artifact_location=None)
    if storage.is_uri(sweep_dir):
        raise UserError(
            f"tune.loggers.mlflow.tracking_uri: the sweep folder {sweep_dir} is not on a local disk, so it "
            "cannot hold the default SQLite store; give an MLflow server (http://host:5000) or a local sqlite:/// URI"
        )
    folder = Path(sweep_dir)
    return SweepMLflowLogger(f"sqlite:///{folder / DB_FILE}", experiment, (folder / ARTIFACTS).as_uri())
