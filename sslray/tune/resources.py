"""The resource plan of a sweep: what each trial asks Ray for, how many run at a time, and how many
torch threads each one uses.

In Ray's books half the CPUs (at least one whole one) stay free for Ray Data, which the trials' own
pipelines need (docs/ray.md §3: a starved pipeline hangs silently). Ray's books are not the cores,
though: a single-worker CPU trial's real need is measured before the sweep starts
(``sslray.train.need.measure_need``), and the plan runs as many
trials at a time, with as many torch threads each, as keep the cores busy with that training and its
share of data work. At 28-32 px data work is a few percent of a step, so a 2-core machine runs two
one-thread trials side by side instead of one trial beside an idle data CPU (issue 16: 57% -> ≥ 85%
of the CPUs busy). A multi-worker trial's Tune function only waits on its ``TorchTrainer``
(``TRAINER_CPUS``), whose workers share what is left; GPU trials are placed by their GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sslray.errors import UserError
from sslray.recipe import Recipe
from sslray.train.need import Need
from sslray.train.trainer import MAX_CPUS_PER_WORKER, cpus_for_ray_data
from sslray.tune.space import SearchSpace, trials_per_sample

TRAINER_CPUS = 0.1  # the Tune function of a TorchTrainer trial only waits on its workers


@dataclass
class ResourcePlan:
    trial: dict[str, float]  # tune.with_resources of the trial function
    cpus_per_worker: float | None  # TorchTrainer trials: each worker's CPUs (None: in-process)
    max_concurrent: int
    data_cpus: float  # left free for Ray Data
    torch_threads: int | None = None  # in-process trials: torch.set_num_threads (None: Ray's default)
    need: Need | None = None  # what the concurrency and threads were derived from

    def describe(self) -> str:
        workers = "" if self.cpus_per_worker is None else f", {self.cpus_per_worker:g} CPU per worker"
        threads = "" if self.torch_threads is None else f" x {self.torch_threads} torch thread(s)"
        measured = "" if self.need is None else f"\n  {self.need.describe()}"
        return (
            f"{self.max_concurrent} trial(s) at a time{threads}, {self.trial}{workers}; "
            f"{self.data_cpus:g} CPU(s) kept for Ray Data{measured}"
        )


def plan_resources(
    space: SearchSpace, cluster: dict[str, float], measure: Callable[[Recipe], Need] | None = None
) -> ResourcePlan:
    """Trial resources, concurrency and torch threads. Ray Data keeps at least one whole CPU in Ray's
    books (docs/ray.md §3). With ``measure`` (``measure_need``, called on the first trial's recipe only
    when its result decides the plan: single-worker CPU trials without ``tune.resources_per_trial.cpu``)
    concurrency and threads follow the cores instead: training cores = CPUs / (1 + data cores per
    training core), as many trials as there are training cores (at most the sweep's trials), threads
    to share them."""
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
    if workers == 1 and measure is not None and not use_gpu and "cpu" not in given:
        need = measure(recipe)
        trials = space.tune.num_samples * trials_per_sample(space)
        concurrent = limit or min(trials, max(1, round(need.training_cores(cpus))))
        threads = need.threads(cpus, concurrent)
        return ResourcePlan({"cpu": round(available / concurrent, 2)}, None, concurrent, data_cpus, threads, need)
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
