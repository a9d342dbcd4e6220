"""The sweep driver: a Ray Tune ``Tuner`` over a ``SearchSpace``, started (``run_sweep``) or resumed
(``resume_sweep``), in its sweep folder.

The trial function is ``trial.py``'s, its resources ``resources.py``'s, the scheduler and searcher
``registry.py``'s, the leaderboard ``results.py``'s. The sweep folder is Tune's experiment folder
(restorable with ``Tuner.restore``) and one TensorBoard root: ``<trial>/`` (config.yaml, events,
checkpoints), ``space.yaml`` (what ``--resume`` reruns), ``leaderboard.csv`` / ``.md`` / ``.png`` and
``best.yaml`` (the best trial's recipe, for ``sslray train``), and ``logs/driver.log``: everything the
driver process writes except sslray's own lines (``sslray.console.quiet``; the console gets
``progress.py``'s lines instead of Tune's status table), unless ``verbose``.

The folder is a local path (one node, or NFS shared by all nodes) or a URI (``s3://``, ``gs://``, ...:
``sslray.runs.storage``), so cluster nodes need no shared disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import yaml

from sslray.cluster import check_address, ray_connected, ray_session, warn_if_no_node_matches
from sslray.console import quiet, say
from sslray.errors import UserError
from sslray.interrupts import Interrupted, tune_stops_on_signals
from sslray.locations import absolute
from sslray.recipe import DataConfig
from sslray.runs import storage
from sslray.runs.folders import SWEEP, check_out
from sslray.train.need import measure_need
from sslray.train.trainer import check_data, plain
from sslray.tune.baselines import describe as describe_baselines
from sslray.tune.baselines import sweep_baselines
from sslray.tune.hparams import write_hparams_config
from sslray.tune.registry import SEARCHERS
from sslray.tune.resources import plan_resources
from sslray.tune.results import finish
from sslray.tune.space import SearchSpace, load_space, space_from_dict
from sslray.tune.trial import staging_folder, trainable, trial_dirname

SPACE_FILE = "space.yaml"
LOGS, LOG_FILE = "logs", "driver.log"  # SWEEP/logs/driver.log: the driver's output but sslray's lines


def _tune_environment() -> None:
    """Tune's settings that are environment variables, for a first run and a resume alike."""
    # Tune's own TensorBoard logger is left out: the trials write their own event files and HParams
    # (train/, eval/, perf/ per epoch); a second set per trial would split each HParams row in two.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # The metric is absent from some reports by design: a final metric (linear_top1) from all but the
    # last, and the last report of a diverged trial (stop_reason only). tune.metric is validated anyway.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Every epoch checkpoints, and with num_to_keep Tune then snapshots the experiment each time (what
    # makes --resume lose nothing); its warning that this may be a bottleneck is noise at this scale.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _run_config(sweep_dir: str, space: SearchSpace, verbose: bool = False):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sslray.tune.progress import SweepProgress

    _tune_environment()
    storage_path, name = storage.split_parent(sweep_dir)
    kept = space.tune.scheduler_entry.checkpoints_kept(space.tune.options)  # per trial
    # Restarts of a trial whose process or node died, from its last checkpoint (train.max_failures;
    # a TorchTrainer trial's dead worker is first retried by Ray Train with the same number).
    max_failures = space.first_recipe().train.max_failures
    # Quiet (the default): sslray's progress lines instead of Tune's status table and result boxes.
    progress = [] if verbose else [SweepProgress(space)]
    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        verbose=1 if verbose else 0,
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *progress, *space.tune.logger_callbacks(sweep_dir)],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=kept),
        failure_config=tune.FailureConfig(max_failures=max_failures),
    )


def _tune_config(space: SearchSpace, max_concurrent: int):
    import functools

    from ray import tune

    section = space.tune
    searcher = SEARCHERS[section.search]
    name_trial = functools.partial(trial_dirname, default_method=space.methods[0])
    return tune.TuneConfig(
        metric=section.metric,
        mode=section.mode,
        num_samples=section.num_samples,
        # A searcher that limits concurrency itself gets no max_concurrent_trials (Tune would ignore
        # it, with a warning).
        max_concurrent_trials=None if searcher.basic_variants else max_concurrent,
        scheduler=space.build_scheduler(),
        search_alg=searcher.build(section.seed, max_concurrent),
        time_budget_s=section.time_budget_s,
        trial_name_creator=name_trial,
        trial_dirname_creator=name_trial,
    )


def sweep_location(out: str | Path) -> str:
    """``--out`` as Tune's storage takes it: an absolute local path, or the URI unchanged."""
    return absolute(out)


def run_sweep(
    space: SearchSpace, out: str | Path, address: str | None = None, verbose: bool = False
) -> list[dict[str, Any]]:
    """Run the sweep in ``out`` (a new folder: a path or a URI) and return the leaderboard. Ray: the
    connected one, else ``address``'s (or ``RAY_ADDRESS``'s) or a local one, started and stopped here.
    Quiet unless ``verbose``: the console gets sslray's lines, ``out/logs/driver.log`` everything else."""
    from ray import tune

    sweep_dir = sweep_location(out)
    check_out(sweep_dir, SWEEP, overwrite=False)
    space = _with_absolute_data_paths(space)  # trials run in their own folders
    if not ray_connected():
        check_address(address)  # nothing is written for an address where no Ray answers (checked once: here)
    # The folder's marker first, before its logs: a sweep that fails to start can be replaced with --overwrite.
    _write_files(sweep_dir, {SPACE_FILE: yaml.safe_dump(plain(space.to_yaml_dict()), sort_keys=False)})
    with _driver(sweep_dir, address, verbose, checked=True) as ray:
        plan = plan_resources(space, ray.cluster_resources(), measure_need)
        say(
            f"sweep {space.source}: {len(space.knobs)} searched knob(s), methods {', '.join(space.methods)}; "
            f"{plan.describe()}"
        )
        say(f"results: {sweep_dir}")
        if not verbose:
            say(f"logs:    {storage.join(sweep_dir, LOGS, LOG_FILE)} (Ray's, Tune's and the trials' output)")
        warn_if_no_node_matches(space.first_recipe().data.label_selector)
        write_hparams_config(space, sweep_dir)  # TensorBoard's HParams columns: every knob, whichever trials exist
        baselines = sweep_baselines(space, sweep_dir)
        if baselines:
            say(describe_baselines(baselines))
        tuner = tune.Tuner(
            trainable(space, plan, sweep_dir),
            param_space=space.param_space(),
            tune_config=_tune_config(space, plan.max_concurrent),
            run_config=_run_config(sweep_dir, space, verbose),
        )
        return _fit(tuner, space, sweep_dir, baselines)


@contextmanager
def _driver(sweep_dir: str, address: str | None, verbose: bool, checked: bool = False) -> Iterator[Any]:
    """Yields ``ray``, connected for the sweep (and shut down after, if started here); unless
    ``verbose``, inside ``quiet``: Ray's, Tune's and the trials' output go to the sweep's log file.
    ``checked``: ``address`` has passed ``check_address`` already (``init_ray`` checks it otherwise)."""
    # Sweeps run offline: with MLflow installed (the mlflow extra), Ray Tune's callback bookkeeping loads it
    # and MLflow's telemetry writes ~/.config/mlflow and reaches for the network. Set before a local Ray
    # starts, so its workers inherit it; a user's own setting wins.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if verbose:
        logs, quieted = None, nullcontext()
    else:
        logs = _log_folder(sweep_dir)
        quieted = quiet(logs / LOG_FILE)
    try:
        with quieted, ray_session(address, checked) as ray:
            yield ray
    finally:
        if logs is not None and storage.is_uri(sweep_dir):
            storage.upload_folder(logs, storage.join(sweep_dir, LOGS))


def _log_folder(sweep_dir: str) -> Path:
    """``SWEEP/logs``; for a sweep at a URI a node-local folder, uploaded there when the sweep ends."""
    return staging_folder(sweep_dir, LOGS) if storage.is_uri(sweep_dir) else Path(sweep_dir) / LOGS


def _fit(tuner, space: SearchSpace, sweep_dir: str, baselines: dict | None) -> list[dict[str, Any]]:
    """``tuner.fit()`` and the leaderboard; after Ctrl-C / SIGTERM, the leaderboard so far (unfinished
    trials labelled interrupted) and ``Interrupted`` with the command that continues."""
    with tune_stops_on_signals() as stopped:
        results = tuner.fit()
    board = finish(space, results, sweep_dir, baselines, interrupted=stopped.is_set())
    if stopped.is_set():
        raise Interrupted(
            f"the leaderboard so far is in {sweep_dir}; unfinished trials keep their last checkpoint; "
            f"continue with: sslray sweep --resume {sweep_dir}"
        )
    return board


def resume_sweep(out: str | Path, address: str | None = None, verbose: bool = False) -> list[dict[str, Any]]:
    """Continue a sweep whose driver stopped: finished trials stay, unfinished ones resume from their
    last checkpoint, errored ones stay errored (a NaN would come back), the searcher keeps its state.
    Ray and the console as in ``run_sweep``."""
    import tempfile

    from ray import tune

    sweep_dir = sweep_location(out)
    space_file = storage.join(sweep_dir, SPACE_FILE)
    if not storage.has_files(space_file, "--resume") or not tune.Tuner.can_restore(sweep_dir):
        raise UserError(f"--resume: {sweep_dir} is not a sweep folder (no {SPACE_FILE} / Tune experiment state)")
    with tempfile.TemporaryDirectory() as tmp:  # a URI's space.yaml, read through a local copy
        local = Path(tmp) / SPACE_FILE
        local.write_text(storage.read_text(space_file, "--resume"))
        space = load_space(local)
    with _driver(sweep_dir, address, verbose) as ray:
        plan = plan_resources(space, ray.cluster_resources(), measure_need)
        say(f"resuming sweep {sweep_dir}: {plan.describe()}")
        if not verbose:
            say(f"logs: {storage.join(sweep_dir, LOGS, LOG_FILE)} (Ray's, Tune's and the trials' output)")
        _tune_environment()  # as on the first run
        # The run config (and so the progress callback and verbosity) is the one the sweep was started with.
        tuner = tune.Tuner.restore(
            sweep_dir,
            trainable=trainable(space, plan, sweep_dir),
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
        )
        return _fit(tuner, space, sweep_dir, sweep_baselines(space, sweep_dir))


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


def check_trial_data(space: SearchSpace) -> None:
    """``check_data`` on every distinct data set-up the space can sample (paths, limits, batch sizes and
    worker counts at every listed value and both ends of ranges), naming the values of a failing one."""
    seen = set()
    for where, recipe in space.corner_recipes():
        setup = repr((recipe.data, recipe.train.batch_size, recipe.train.seed, recipe.scaling.num_workers))
        if setup not in seen:
            seen.add(setup)
            try:
                check_data(recipe)
            except UserError as err:
                raise UserError(f"{where}: {err}") from None


def _with_absolute_data_paths(space: SearchSpace) -> SearchSpace:
    data = space.to_yaml_dict()
    section = data.setdefault("data", {})
    defaults = space.first_recipe().data
    for name in DataConfig.PATH_KEYS:
        value = section.get(name, getattr(defaults, name))
        if isinstance(value, str):
            section[name] = absolute(value)
        elif isinstance(value, dict) and {"choice", "grid"} & value.keys():  # a searched path: each value
            ((form, paths),) = value.items()
            section[name] = {form: [absolute(p) if isinstance(p, str) else p for p in paths]}
    return space_from_dict(data, space.source)
