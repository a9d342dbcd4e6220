"""The sweep driver: a Ray Tune ``Tuner`` over a ``SearchSpace``, its folder, restore and leaderboard.

One trial = one Tune function (``run_trial``) that trains one fixed recipe (shared/RAY_NOTES.md §1):

- ``scaling.num_workers: 1`` -> the worker loop runs in the trial's own process (``TuneTrialSession``):
  about a second to start, and it reports checkpoints to Tune itself, so PBT can exploit and a
  restored sweep continues each unfinished trial from its last epoch;
- more workers -> the trial fits a ``TorchTrainer`` whose rank 0 reaches Tune through
  ``TuneReportCallback`` (ASHA / median stopping work; PBT cannot, §5).

Resources come from the cluster (``plan_resources``): half the CPUs (at least one whole one) stay free
for Ray Data, which the trials' own pipelines need (§3: a starved pipeline hangs silently).

The sweep folder is Tune's experiment folder (restorable with ``Tuner.restore``) and one TensorBoard
root: ``<trial>/`` (config.yaml, events, checkpoints), ``space.yaml`` (what ``--resume`` reruns),
``leaderboard.csv`` / ``.md`` / ``.png`` and ``best.yaml`` (the best trial's recipe, for ``sslray train``).

The folder is a local path (one node, or NFS shared by all nodes) or a URI (``s3://``, ``gs://``, ...:
``sslray.runs.storage``), so cluster nodes need no shared disk. With a URI each trial trains in a node-local
folder that it mirrors to ``<sweep>/<trial>`` every epoch; checkpoints reach storage through Tune.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sslray.cluster import warn_if_no_node_matches
from sslray.errors import UserError
from sslray.recipe import recipe_from_dict
from sslray.runs import storage
from sslray.runs.folders import SWEEP, check_out
from sslray.train.trainer import MAX_CPUS_PER_WORKER, plain
from sslray.tune.space import AshaOptions, MedianOptions, PbtOptions, SearchSpace, load_space, space_from_dict

SPACE_FILE = "space.yaml"
TRAINER_CPUS = 0.1  # the Tune function of a TorchTrainer trial only waits on its workers


@dataclass
class ResourcePlan:
    trial: dict[str, float]            # tune.with_resources of the trial function
    cpus_per_worker: float | None      # TorchTrainer trials: each worker's CPUs (None: in-process)
    max_concurrent: int
    data_cpus: float                   # left free for Ray Data

    def describe(self) -> str:
        workers = "" if self.cpus_per_worker is None else f", {self.cpus_per_worker:g} CPU per worker"
        return (f"{self.max_concurrent} trial(s) at a time, {self.trial}{workers}; "
                f"{self.data_cpus:g} CPU(s) kept for Ray Data")


def plan_resources(space: SearchSpace, cluster: dict[str, float]) -> ResourcePlan:
    """Trial resources and concurrency that leave Ray Data at least one whole CPU (RAY_NOTES §3)."""
    recipe = recipe_from_dict(space.trial_recipe(space.first_config()))
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    data_cpus = max(recipe.data.cpus_per_task, cpus / 2)
    available = cpus - data_cpus
    given = space.tune.resources_per_trial or {}
    workers, use_gpu = recipe.scaling.num_workers, recipe.scaling.use_gpu
    if use_gpu and gpus < workers:
        raise UserError(f"scaling.use_gpu: a trial needs {workers} GPU(s); the cluster has {gpus:g}")
    if available < 0.1 * workers:
        raise UserError(f"the cluster has {cpus:g} CPUs: too few to train beside Ray Data "
                        f"(which needs {data_cpus:g}); give Ray more CPUs")
    limit = space.tune.max_concurrent_trials
    if workers == 1:
        cpu = given.get("cpu") or min(MAX_CPUS_PER_WORKER, available / (limit or 1))
        concurrent = limit or max(1, math.floor(available / cpu + 1e-9))
        trial = {"cpu": round(cpu, 2)}
        if use_gpu:
            trial["gpu"] = given.get("gpu", 1.0)
            concurrent = min(concurrent, max(1, int(gpus // trial["gpu"])))
        return ResourcePlan(trial, None, concurrent, data_cpus)
    concurrent = limit or (max(1, int(gpus // workers)) if use_gpu else 1)
    per_worker = (given["cpu"] / workers if "cpu" in given
                  else min(MAX_CPUS_PER_WORKER, (available - TRAINER_CPUS * concurrent) / (concurrent * workers)))
    if per_worker < 0.05:
        raise UserError(f"scaling.num_workers: {concurrent} trial(s) x {workers} workers do not fit on "
                        f"{cpus:g} CPUs beside Ray Data; lower tune.max_concurrent_trials or num_workers")
    return ResourcePlan({"cpu": TRAINER_CPUS}, round(per_worker, 2), concurrent, data_cpus)


def run_trial(config: dict[str, Any], space: SearchSpace, plan: ResourcePlan, sweep_dir: str) -> None:
    """One trial: the sampled recipe, trained in-process (one worker) or by a TorchTrainer. It writes
    into its folder of the sweep (Tune's trial folder in the storage path), not into Tune's local
    staging copy (``get_trial_dir()``), which is synced only now and then and lost with the node.
    A sweep in object storage (``sweep_dir`` a URI): the trial trains in a node-local folder and rank 0
    mirrors it to ``<sweep_dir>/<trial>`` after every epoch."""
    from ray import tune

    from sslray.train.session import TuneTrialSession
    from sslray.train.trainer import fit, write_config
    from sslray.train.worker import run_worker

    recipe_dict = space.trial_recipe(config)
    if plan.cpus_per_worker is not None:
        recipe_dict.setdefault("scaling", {})["cpus_per_worker"] = plan.cpus_per_worker
    recipe = recipe_from_dict(recipe_dict)
    trial_name = tune.get_context().get_trial_name()  # == its folder name (trial_dirname)
    if storage.is_uri(sweep_dir):
        trial_dir, trial_storage = _staging_folder(sweep_dir, trial_name), storage.join(sweep_dir, trial_name)
    else:
        trial_dir, trial_storage = Path(sweep_dir) / trial_name, None
    write_config(recipe, trial_dir)
    hparams = space.applicable(config)
    if recipe.scaling.num_workers == 1:
        run_worker({"recipe": plain(recipe.to_dict()), "run_dir": str(trial_dir), "storage": trial_storage,
                    "hparams": hparams}, TuneTrialSession(recipe.scaling.use_gpu))
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        fit(recipe, trial_dir, callbacks=[TuneReportCallback()], hparams=hparams, summary_file=None,
            storage_uri=trial_storage)


def _staging_folder(sweep_uri: str, trial_name: str) -> Path:
    """Node-local folder of a trial whose sweep lives at a URI (a hash keeps two sweeps of one name apart)."""
    import hashlib

    key = hashlib.sha1(sweep_uri.encode()).hexdigest()[:8]
    return storage.local_staging(f"{storage.split_parent(sweep_uri)[1]}-{key}", trial_name)


def trial_dirname(trial, default_method: str) -> str:
    """``simclr_3f2a1_00002``: the method first, so TensorBoard's run list reads at a glance."""
    return f"{trial.config.get('method.name', default_method)}_{trial.trial_id}"


def _scheduler(space: SearchSpace):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, PopulationBasedTraining

    options = space.tune.options
    if isinstance(options, AshaOptions):
        max_epochs = max(_planned_epochs(space, c) for c in _corner_configs(space))
        return ASHAScheduler(time_attr="epoch", max_t=options.max_t or max_epochs,
                             grace_period=options.grace_period, reduction_factor=options.reduction_factor)
    if isinstance(options, PbtOptions):
        return PopulationBasedTraining(time_attr="epoch", perturbation_interval=options.perturbation_interval,
                                       hyperparam_mutations=space.perturbed_knobs(),
                                       quantile_fraction=options.quantile_fraction,
                                       resample_probability=options.resample_probability)
    if isinstance(options, MedianOptions):
        return MedianStoppingRule(time_attr="epoch", grace_period=options.grace_period,
                                  min_samples_required=options.min_samples_required)
    return FIFOScheduler()


def _searcher(space: SearchSpace, max_concurrent: int):
    from ray.tune.search import BasicVariantGenerator

    seed = space.tune.seed
    if space.tune.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=seed)
    if space.tune.search == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=seed)
    # Tune's max_concurrent_trials does not reach a BasicVariantGenerator passed in: it takes its own.
    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


def _corner_configs(space: SearchSpace) -> list[dict[str, Any]]:
    from sslray.tune.space import spec_values

    first = space.first_config()
    return [first] + [{**first, key: value} for key, spec in space.knobs.items() for value in spec_values(spec)]


def _planned_epochs(space: SearchSpace, config: dict[str, Any]) -> int:
    train = recipe_from_dict(space.trial_recipe(config)).train
    return train.stop_at_epoch or train.epochs


def _trainable(space: SearchSpace, plan: ResourcePlan, sweep_dir: str):
    from ray import tune

    trial = tune.with_parameters(run_trial, space=space, plan=plan, sweep_dir=sweep_dir)
    return tune.with_resources(trial, plan.trial)


def _run_config(sweep_dir: str, space: SearchSpace):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    # Tune's own TensorBoard logger is left out: the trials write their own event files and HParams
    # (train/, eval/, perf/ per epoch); a second set per trial would split each HParams row in two.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # The metric is absent from some reports by design: a final metric (linear_top1) from all but the
    # last, and the last report of a diverged trial (stop_reason only). tune.metric is validated anyway.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Every epoch checkpoints, and with num_to_keep Tune then snapshots the experiment each time (what
    # makes --resume lose nothing); its warning that this may be a bottleneck is noise at this scale.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    storage_path, name = storage.split_parent(sweep_dir)
    return tune.RunConfig(name=name, storage_path=storage_path,
                          callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=_checkpoints_kept(space)),
                          failure_config=tune.FailureConfig(max_failures=_max_failures(space)))


def _max_failures(space: SearchSpace) -> int:
    """Restarts of a trial whose process or node died, from its last checkpoint (train.max_failures;
    a TorchTrainer trial's dead worker is first retried by Ray Train with the same number)."""
    return recipe_from_dict(space.trial_recipe(space.first_config())).train.max_failures


def _checkpoints_kept(space: SearchSpace) -> int:
    """Per trial. PBT restores other trials' checkpoints some time after they were reported, so it keeps
    more than two (Tune warns that <= 2 loses some; it did here): every perturbation interval's, up to 5."""
    if isinstance(space.tune.options, PbtOptions):
        return max(5, 2 * space.tune.options.perturbation_interval)
    return 2


def sweep_location(out: str | Path) -> str:
    """``--out`` as Tune's storage takes it: an absolute local path, or the URI unchanged."""
    return str(out) if storage.is_uri(out) else str(Path(out).resolve())


def run_sweep(space: SearchSpace, out: str | Path) -> list[dict[str, Any]]:
    """Run the sweep in ``out`` (a new folder: a path or a URI) on the connected Ray; returns the leaderboard."""
    import functools

    import ray
    from ray import tune

    sweep_dir = sweep_location(out)
    check_out(sweep_dir, SWEEP, overwrite=False)
    space = _with_absolute_data_paths(space)  # trials run in their own folders
    plan = plan_resources(space, ray.cluster_resources())
    print(f"sweep {space.source}: {len(space.knobs)} searched knob(s), methods {', '.join(space.methods)}; "
          f"{plan.describe()}")
    print(f"results: {sweep_dir}")
    warn_if_no_node_matches(recipe_from_dict(space.trial_recipe(space.first_config())).data.label_selector)
    _write_files(sweep_dir, {SPACE_FILE: yaml.safe_dump(plain(space.to_yaml_dict()), sort_keys=False)})
    tune_section = space.tune
    tuner = tune.Tuner(
        _trainable(space, plan, sweep_dir), param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=tune_section.metric, mode=tune_section.mode, num_samples=tune_section.num_samples,
            # The random searcher takes the limit itself (Tune would ignore it here, with a warning).
            max_concurrent_trials=None if tune_section.search == "random" else plan.max_concurrent, scheduler=_scheduler(space), search_alg=_searcher(space, plan.max_concurrent),
            time_budget_s=tune_section.time_budget_s,
            trial_name_creator=functools.partial(trial_dirname, default_method=space.methods[0]),
            trial_dirname_creator=functools.partial(trial_dirname, default_method=space.methods[0])),
        run_config=_run_config(sweep_dir, space))
    return finish(space, tuner.fit(), sweep_dir)


def resume_sweep(out: str | Path) -> list[dict[str, Any]]:
    """Continue a sweep whose driver stopped: finished trials stay, unfinished ones resume from their
    last checkpoint, errored ones stay errored (a NaN would come back), the searcher keeps its state."""
    import tempfile

    import ray
    from ray import tune

    sweep_dir = sweep_location(out)
    space_file = storage.join(sweep_dir, SPACE_FILE)
    if not storage.has_files(space_file, "--resume") or not tune.Tuner.can_restore(sweep_dir):
        raise UserError(f"--resume: {sweep_dir} is not a sweep folder (no {SPACE_FILE} / Tune experiment state)")
    with tempfile.TemporaryDirectory() as tmp:  # a URI's space.yaml, read through a local copy
        local = Path(tmp) / SPACE_FILE
        local.write_text(storage.read_text(space_file, "--resume"))
        space = load_space(local)
    plan = plan_resources(space, ray.cluster_resources())
    print(f"resuming sweep {sweep_dir}: {plan.describe()}")
    _run_config(sweep_dir, space)  # the logger environment, as on the first run
    tuner = tune.Tuner.restore(sweep_dir, trainable=_trainable(space, plan, sweep_dir), resume_unfinished=True,
                               resume_errored=False, restart_errored=False)
    return finish(space, tuner.fit(), sweep_dir)


def _write_files(sweep_dir: str, texts: dict[str, str]) -> None:
    """Small files into the sweep folder (local or URI)."""
    import tempfile

    if not storage.is_uri(sweep_dir):
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (Path(sweep_dir) / name).write_text(text)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in texts.items():
            (Path(tmp) / name).write_text(text)
        storage.upload_folder(Path(tmp), sweep_dir)


def _with_absolute_data_paths(space: SearchSpace) -> SearchSpace:
    data = space.to_yaml_dict()
    section = data.setdefault("data", {})
    defaults = recipe_from_dict(space.trial_recipe(space.first_config())).data
    for name in ("path", "knn_bank", "knn_query"):
        value = section.get(name, getattr(defaults, name))
        if isinstance(value, str) and "://" not in value:
            section[name] = str(Path(value).resolve())
    return space_from_dict(data, space.source)


# ---- results ---------------------------------------------------------------------------------------

def finish(space: SearchSpace, results, sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Leaderboard (printed, .csv, .md, .png) and best.yaml from Tune's results, in the sweep folder
    (written locally, then uploaded when the sweep lives at a URI)."""
    import tempfile

    from sslray.tune.leaderboard import write_leaderboard

    rows = [_row(space, result) for result in results]
    if not storage.is_uri(sweep_dir):
        return write_leaderboard(space, rows, Path(sweep_dir))
    with tempfile.TemporaryDirectory() as tmp:
        board = write_leaderboard(space, rows, Path(tmp), shown_as=str(sweep_dir))
        storage.upload_folder(Path(tmp), str(sweep_dir))
    return board


def _row(space: SearchSpace, result) -> dict[str, Any]:
    metric, mode = space.tune.metric, space.tune.mode
    config = {k: v for k, v in (result.config or {}).items() if k in space.knobs}
    metrics = result.metrics or {}
    frame = result.metrics_dataframe
    # Tune's rows first, each epoch once (a trial restarted from a checkpoint older than its last report
    # repeats epochs: the rerun counts). Epochs Tune lost are taken from the trial's own history: on a
    # restart Tune restores result.json from the storage copy, which may lag a report behind.
    by_epoch = {epoch: float(m[metric]) for epoch, m in _checkpointed_history(result.path).items()
                if isinstance(m.get(metric), (int, float)) and m[metric] == m[metric]}
    if frame is not None and metric in frame and "epoch" in frame:
        by_epoch.update({int(e): float(v) for e, v in zip(frame["epoch"], frame[metric]) if v == v})
    curve = sorted(by_epoch.items())
    values = [v for _, v in curve]
    best = (max(values) if mode == "max" else min(values)) if values else None
    epochs = metrics.get("epoch", 0)
    planned = _planned_epochs(space, config) if set(config) == set(space.knobs) else None
    if result.error is not None:
        lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
        status = "error: " + (lines[-1].strip() if lines else type(result.error).__name__)
    elif "stop_reason" in metrics:
        status = str(metrics["stop_reason"])
    elif planned and epochs < planned:
        status = f"stopped early at epoch {epochs}/{planned}"
    else:
        status = "done"
    return {"trial": Path(result.path).name, "config": config, "applicable": space.applicable(config),
            "best": best, "epochs": epochs, "minutes": metrics.get("time_total_s", 0.0) / 60,
            "overhead_s": _overhead_seconds(frame), "status": status, "curve": curve, "path": result.path}


def _checkpointed_history(trial_path: str) -> dict[int, dict]:
    """Every epoch's metrics as the trial's latest checkpoint recorded them (history survives restarts);
    empty when the trial has no checkpoint or lives in object storage."""
    from sslray.runs.checkpoint import checkpoint_folders, read_state

    folders = checkpoint_folders(Path(trial_path)) if not storage.is_uri(trial_path) else []
    if not folders:
        return {}
    return {int(m["epoch"]): m for m in read_state(folders[-1]).get("history", []) if "epoch" in m}


def _overhead_seconds(frame) -> float | None:
    """Trial wall time outside its epochs' training and evaluation: Ray start-up of the trial, model
    build, checkpoints and reports."""
    if frame is None or "time_total_s" not in frame or "seconds" not in frame or not len(frame):
        return None
    inside = frame["seconds"].sum() + (frame["eval_seconds"].sum() if "eval_seconds" in frame else 0.0)
    return float(frame["time_total_s"].iloc[-1] - inside)
