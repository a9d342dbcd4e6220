"""What one training image of a recipe costs on a CPU core, measured before a run or sweep starts, and
the torch threads and trials that keep the cores busy with it.

Ray books whole CPUs for Ray Data (docs/ray.md §3), but its tasks are light for small images: at 28 px
decoding and augmenting an image's views is ~5% of its training step. Planning by Ray's books alone
ran one single-thread trainer on a 2-core machine beside an idle data CPU (57% of the CPUs busy,
issue 16). ``measure_need`` times both costs on the recipe's own data and model; ``training_cores``
turns them into the cores training can use without starving the pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sslray.recipe import Recipe

MEASURE_IMAGES = 256  # images decoded and augmented to time the data work (one batch of the quickstart)
MEASURE_BATCH = 32  # images per timed training step: enough for a stable per-image time, cheap at 224 px


@dataclass(frozen=True)
class Need:
    """Seconds of one core per training image, measured on a recipe."""

    data_s: float  # decode + augment of all its views
    train_s: float  # forward + backward + optimizer step, one torch thread

    @property
    def data_per_train_core(self) -> float:
        """Cores of data work that one core of training consumes."""
        return self.data_s / self.train_s

    def training_cores(self, cpus: float) -> float:
        """Of ``cpus`` cores, those training can use while the rest decode and augment for it."""
        return cpus / (1.0 + self.data_per_train_core)

    def threads(self, cpus: float, trainers: int = 1) -> int:
        """torch threads for each of ``trainers`` side by side on ``cpus`` cores (at least one)."""
        return max(1, round(self.training_cores(cpus) / trainers))

    def describe(self) -> str:
        return (
            f"measured per image: decode+augment {self.data_s * 1e3:.2f} ms, training step {self.train_s * 1e3:.2f} ms "
            f"on one thread (data needs {self.data_per_train_core:.2f} core per training core)"
        )


def measure_need(recipe: Recipe) -> Need:
    """Time, in this process on one thread, what one training image of ``recipe`` costs: decoding and
    augmenting its views (the Ray Data task's own function, on the first rows of ``data.path``) and a
    training step of its method on a batch of such views (the second step, so first-call set-up is not
    counted). A second or two for CPU-sized recipes; the driver's thread count is restored."""
    import torch

    from sslray.data.pipeline import first_rows, make_views, open_prepared
    from sslray.methods.registry import build_method
    from sslray.nn.optim import build_optimizer

    data = recipe.data
    table = next(first_rows(open_prepared(data.path), MEASURE_IMAGES))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        options = {"specs": data.augment.view_specs(), "channels": data.channels, "seed": 0}
        make_views(table.slice(0, 8), epoch=0, **options)  # first-call set-up
        start = time.perf_counter()
        rendered = make_views(table, epoch=1, **options)
        data_s = (time.perf_counter() - start) / table.num_rows
        torch.manual_seed(recipe.train.seed)
        method = build_method(recipe)
        optimizer = build_optimizer(method, recipe.optim, recipe.train.batch_size)
        views = [
            torch.from_numpy(rendered[f"view_{v}"][:MEASURE_BATCH]).float().div(255)
            for v in range(len(options["specs"]))
        ]
        for _ in range(2):
            start = time.perf_counter()
            method(views)["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        train_s = (time.perf_counter() - start) / len(views[0])
    finally:
        torch.set_num_threads(threads)
    return Need(data_s=data_s, train_s=train_s)
