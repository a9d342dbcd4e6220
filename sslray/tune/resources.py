"""The resource plan of a sweep: what each trial asks Ray for, and how many run at a time.

Resources come from the cluster: half the CPUs (at least one whole one) stay free for Ray Data, which
the trials' own pipelines need (docs/ray.md §3: a starved pipeline hangs silently). A single-worker
trial trains in its own process and gets whole or fractional CPUs; a multi-worker trial's Tune
function only waits on its ``TorchTrainer`` (``TRAINER_CPUS``), whose workers share what is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sslray.errors import UserError
from sslray.train.trainer import MAX_CPUS_PER_WORKER, cpus_for_ray_data
from sslray.tune.space import SearchSpace

TRAINER_CPUS = 0.1  # the Tune function of a TorchTrainer trial only waits on its workers


@dataclass
class ResourcePlan:
    trial: dict[str, float]  # tune.with_resources of the trial function
    cpus_per_worker: float | None  # TorchTrainer trials: each worker's CPUs (None: in-process)
    max_concurrent: int
    data_cpus: float  # left free for Ray Data

    def describe(self) -> str:
        workers = "" if self.cpus_per_worker is None else f", {self.cpus_per_worker:g} CPU per worker"
        return (
            f"{self.max_concurrent} trial(s) at a time, {self.trial}{workers}; "
            f"{self.data_cpus:g} CPU(s) kept for Ray Data"
        )


def plan_resources(space: SearchSpace, cluster: dict[str, float]) -> ResourcePlan:
    """Trial resources and concurrency that leave Ray Data at least one whole CPU (docs/ray.md §3)."""
    recipe = space.first_recipe()
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    data_cpus = cpus_for_ray_data(recipe, cpus)
    available = cpus - data_cpus
    given = space.tune.resources_per_trial or {}
    workers, use_gpu = recipe.scaling.num_workers, recipe.scaling.use_gpu
    if use_gpu and gpus < workers:
        raise UserError(f"scaling.use_gpu: a trial needs {workers} GPU(s); the cluster has {gpus:g}")
    if available < 0.1 * workers:
        raise UserError(
            f"the cluster has {cpus:g} CPUs: too few to train beside Ray Data "
            f"(which needs {data_cpus:g}); give Ray more CPUs"
        )
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
    per_worker = (
        given["cpu"] / workers
        if "cpu" in given
        else min(MAX_CPUS_PER_WORKER, (available - TRAINER_CPUS * concurrent) / (concurrent * workers))
    )
    if per_worker < 0.05:
        raise UserError(
            f"scaling.num_workers: {concurrent} trial(s) x {workers} workers do not fit on "
            f"{cpus:g} CPUs beside Ray Data; lower tune.max_concurrent_trials or num_workers"
        )
    return ResourcePlan({"cpu": TRAINER_CPUS}, round(per_worker, 2), concurrent, data_cpus)
