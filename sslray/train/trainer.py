"""A Ray Train ``TorchTrainer`` from a recipe, and the run folder it writes.

A run folder holds ``config.yaml`` (the resolved recipe), TensorBoard event files (rank 0),
``checkpoints/`` (Ray Train's latest K plus ``best``), ``progress.json`` / ``restarts.jsonl``
(``sslray.runs.restarts``) and, at the end, ``result.json``. Running again
with the same folder resumes from its latest checkpoint (Ray Train restores a run with the same
storage path and name); ``FailureConfig(max_failures)`` restarts a failed worker group the same way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from sslray.cluster import warn_if_no_node_matches
from sslray.data.pipeline import leading_row_groups, open_prepared, worker_shares
from sslray.errors import UserError
from sslray.locations import absolute
from sslray.recipe import Recipe
from sslray.runs.checkpoint import checkpoint_folders, newest_intact
from sslray.runs.restarts import read_restarts
from sslray.train.need import measure_need
from sslray.train.process_group import bound_torch_config

MAX_CPUS_PER_WORKER = 2.0  # a training worker mostly feeds its device; the rest of the CPUs decode/augment


def plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so the recipe dumps as plain YAML/JSON."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def cpus_for_ray_data(recipe: Recipe, cluster_cpus: float) -> float:
    """CPUs that training leaves to Ray Data: half the cluster's, and at least one data task's worth,
    so the workers (or a sweep's trials) can never starve the pipeline that feeds them (docs/ray.md §3)."""
    return max(recipe.data.cpus_per_task, cluster_cpus / 2)


def worker_resources(recipe: Recipe, cluster_cpus: float) -> dict[str, float]:
    """CPUs (and GPU) per worker, leaving ``cpus_for_ray_data`` free."""
    scaling = recipe.scaling
    if scaling.cpus_per_worker is not None:
        cpus = scaling.cpus_per_worker
    else:
        reserve = cpus_for_ray_data(recipe, cluster_cpus)
        cpus = min(MAX_CPUS_PER_WORKER, (cluster_cpus - reserve) / scaling.num_workers)
        if cpus < 0.05:
            raise UserError(
                f"scaling.num_workers: {scaling.num_workers} workers do not fit on {cluster_cpus:g} "
                "CPUs with room left for Ray Data; use fewer workers or set scaling.cpus_per_worker"
            )
        cpus = round(cpus, 2)
    resources = {"CPU": cpus}
    if scaling.use_gpu:
        resources["GPU"] = 1.0
    return resources


def largest_node_cpus() -> float:
    """CPUs of the largest alive node of the connected Ray: what one process's threads can use."""
    import ray

    return max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)


def torch_threads(recipe: Recipe) -> int | None:
    """torch threads of a single CPU worker that has no ``scaling.cpus_per_worker``: its node's training
    cores, from the measured need (``sslray.train.need``; at 28 px both cores of a 2-core machine, where
    Ray's books give the worker one CPU and keep one for Ray Data). None: Ray's default (its CPUs)."""
    scaling = recipe.scaling
    if scaling.num_workers != 1 or scaling.use_gpu or scaling.cpus_per_worker is not None:
        return None
    need = measure_need(recipe)
    threads = need.threads(largest_node_cpus())
    print(f"{threads} torch thread(s) for the worker; {need.describe()}")
    return threads


def check_data(recipe: Recipe) -> None:
    """Fail before any worker starts when the data cannot fill one batch per worker."""
    prepared = open_prepared(recipe.data.path)
    for split, where in ((recipe.data.knn_bank, "data.knn_bank"), (recipe.data.knn_query, "data.knn_query")):
        if split is not None and recipe.train.knn_every:
            open_prepared(split, where)
    world = recipe.scaling.num_workers
    per_worker = recipe.train.batch_size // world
    # Workers read whole Parquet row groups (pipeline.epoch_row_groups): the limit is each one's share.
    shares = worker_shares(prepared, seed=recipe.train.seed, epoch=0, world=world, limit=recipe.data.limit)
    if min(shares) >= per_worker:  # at least one step for every worker
        return
    rows = min(prepared.num_rows, recipe.data.limit or prepared.num_rows)
    if world == 1:
        raise UserError(
            f"train.batch_size: {recipe.train.batch_size} needs at least {per_worker} images per worker, "
            f"but data.path gives {rows} in total; lower train.batch_size or raise data.limit"
        )
    units = leading_row_groups(prepared, recipe.data.limit)
    raise UserError(
        f"train.batch_size: {recipe.train.batch_size} over {world} workers needs at least {per_worker} "
        f"images per worker, but workers read whole Parquet row groups and data.path's {rows} images are in "
        f"{len(units)} row group(s), so the workers get {', '.join(map(str, shares))}; lower "
        "train.batch_size or scaling.num_workers, or use more images (data.limit, or a larger data set)"
    )


def absolute_data_paths(recipe: Recipe) -> None:
    """Local data paths made absolute: Ray workers run in a folder of their own. (On a cluster, a local
    path must exist on every node; URIs such as s3:// are passed on as they are.)"""
    data = recipe.data
    for name in data.PATH_KEYS:
        if getattr(data, name) is not None:
            setattr(data, name, absolute(getattr(data, name)))


def latest_checkpoint(run_dir: Path) -> str | None:
    """The run's latest intact checkpoint folder (to resume from; a damaged newer one is named in a warning
    and passed over), or None for a new run. Passed to
    the workers in the loop config: Train V2 deprecates ``resume_from_checkpoint`` (ray#49454)."""
    intact = newest_intact(checkpoint_folders(run_dir))
    return str(intact) if intact else None


def write_config(recipe: Recipe, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(plain(recipe.to_dict()), sort_keys=False))


def fit(
    recipe: Recipe,
    run_dir: Path,
    callbacks: list | None = None,
    hparams: dict[str, Any] | None = None,
    summary_file: str | None = "result.json",
    storage_uri: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir``; returns and writes ``summary_file``. A sweep's trial passes
    Tune's ``TuneReportCallback`` (rank 0's metrics reach the scheduler), its sampled knobs as
    ``hparams`` (the TensorBoard HParams columns) and no summary (Tune writes the trial's result.json).
    With ``storage_uri`` (a trial of a sweep in object storage) checkpoints go there through Ray Train and
    rank 0 mirrors its local ``run_dir`` there every epoch."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from sslray.train.worker import train_loop_per_worker

    check_data(recipe)
    absolute_data_paths(recipe)
    run_dir = run_dir.resolve()
    write_config(recipe, run_dir)
    warn_if_no_node_matches(recipe.data.label_selector)
    resources = worker_resources(recipe, ray.cluster_resources().get("CPU", 1.0))
    threads = torch_threads(recipe)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "recipe": plain(recipe.to_dict()),
            "run_dir": str(run_dir),
            "resume_from": latest_checkpoint(run_dir),
            "hparams": hparams,
            "storage": storage_uri,
            "torch_threads": threads,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=recipe.scaling.num_workers,
            use_gpu=recipe.scaling.use_gpu,
            resources_per_worker=resources,
            placement_strategy=recipe.scaling.placement_strategy,
            label_selector=recipe.scaling.label_selector,
        ),
        torch_config=bound_torch_config(),
        run_config=ray.train.RunConfig(
            name="checkpoints",
            storage_path=storage_uri or str(run_dir),
            callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=recipe.train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=recipe.train.max_failures),
        ),
    )
    start = time.time()
    result = trainer.fit()
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float, str))}
    summary = {
        "metrics": metrics,
        "minutes": round((time.time() - start) / 60, 2),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "best_checkpoint": str(run_dir / "checkpoints" / "best")
        if (run_dir / "checkpoints" / "best").is_dir()
        else None,
        "restarts": read_restarts(run_dir),
        "torch_threads": threads,  # per worker, from the measured need (None: Ray's default)
    }
    if summary_file:
        (run_dir / summary_file).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
