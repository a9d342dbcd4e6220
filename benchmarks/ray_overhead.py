"""Overhead of Ray Train: epoch time of ``sslray train`` (TorchTrainer, 1 worker) divided by the epoch
time of a plain PyTorch loop doing the same work, measured side by side in one run. Goal: <= 1.10.

    .venv/bin/python benchmarks/ray_overhead.py [--images 4096] [--epochs 3] [--batch-size 128] [--rounds 2]

What both sides share
    * the recipe: ``search_spaces/simclr_fmnist.yaml`` with a ResNet-18 (standard stem, 1 channel),
      28 px views, ``--images`` Fashion-MNIST training images (prepared into a temporary folder by the
      script), ``--batch-size``, ``--epochs``, ``train.knn_every=0`` (no online kNN: it is not training)
      and ``scaling.num_workers=1``;
    * the model and optimizer: ``build_method`` after ``torch.manual_seed(seed)``, ``build_optimizer``,
      per-step ``warmup_cosine`` lr, ``method.on_step``, the same per-epoch reseeding;
    * the batches: both iterate ``rank_views_dataset(..., rank=0, world=1)`` (Ray Data: row groups ->
      decode -> batched augmentation -> uint8 views) with ``iter_torch_batches`` and the same local
      shuffle buffer and seed, then ``PixelNormalizer.to_float`` (channels_last) as the worker does. The
      per-epoch losses printed for the two sides are a check that they train on the same batches;
    * the CPU budget: the Ray Train worker holds the CPUs ``worker_resources`` gives it (1 of 2 here)
      and Ray sets ``OMP_NUM_THREADS`` to that number inside it. The plain loop runs in this process
      with ``torch.set_num_threads`` set to the same number, while a placement group holds the same
      CPUs in Ray's accounting, so Ray Data's decode/augment tasks get the same free CPUs on both sides.

What differs (the overhead being measured)
    Ray side: ``sslray.train.trainer.fit`` -> ``TorchTrainer`` -> ``train_loop_per_worker`` in a worker
    process, with its controller, ``ray.train.report`` and a checkpoint per epoch. Plain side: the same
    training loop in this process; no TorchTrainer, no worker process, no report or checkpoint.
    Also different, and printed in the header: Ray starts its workers at niceness ``RAY_worker_niceness``
    (15 by default) while this process keeps its own (usually 0). On a machine shared with other jobs
    that lowers the Train worker's CPU share and can dominate the ratio; run with
    ``RAY_worker_niceness=0`` in the environment to measure both sides at the same priority.

How it is timed
    Per epoch, the training loop only: from the first batch request to the last optimizer step
    (the worker's ``seconds`` metric, read from the run's last checkpoint ``state.json`` history; the
    plain loop's own clock placed the same way). Epoch 1 of every run is warm-up (worker start,
    imports, first pipeline) and is left out. Runs alternate plain, Ray, plain, Ray, ... (``--rounds``
    pairs), so machine noise hits both sides alike. The ratio is median(Ray epochs) / median(plain
    epochs); the ratios of means and of the fastest epochs are printed next to it. Ray Train's fixed
    cost per run (start-up, reports, checkpoints, shutdown: ``fit``'s wall time minus its epochs'
    training loops) is printed separately and is not part of the ratio.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sslray.cluster import init_ray, use_loopback  # noqa: E402

use_loopback()  # before `import ray`: a local Ray on 127.0.0.1, Ray Data progress bars off

import ray  # noqa: E402
import torch  # noqa: E402
from ray.util.placement_group import placement_group, remove_placement_group  # noqa: E402

from sslray.data.augment import PixelNormalizer  # noqa: E402
from sslray.data.pipeline import EpochViews, MapTasks, open_prepared, rank_views_dataset, steps_per_epoch  # noqa: E402
from sslray.data.shards import ShardOptions, prepare  # noqa: E402
from sslray.methods.registry import build_method  # noqa: E402
from sslray.nn.optim import build_optimizer, scaled_lr, set_lr  # noqa: E402
from sslray.nn.schedules import warmup_cosine  # noqa: E402
from sslray.recipe import Recipe, load_recipe  # noqa: E402
from sslray.runs.checkpoint import checkpoint_folders, read_state  # noqa: E402
from sslray.train.epoch import SHUFFLE_BUFFER_BATCHES  # noqa: E402
from sslray.train.trainer import fit, worker_resources  # noqa: E402

RECIPE_FILE = Path(__file__).resolve().parent.parent / "search_spaces" / "simclr_fmnist.yaml"


@dataclass
class EpochTime:
    side: str  # "plain" or "ray"
    run: int  # 1-based run number of that side
    epoch: int  # 1-based
    seconds: float  # training loop only
    images_per_s: float
    data_wait_frac: float
    loss: float

    @property
    def warm_up(self) -> bool:
        return self.epoch == 1


def benchmark_recipe(data_path: str, images: int, epochs: int, batch_size: int) -> Recipe:
    return load_recipe(
        RECIPE_FILE,
        [
            f"data.path={data_path}",
            f"data.limit={images}",
            "data.knn_bank=null",
            "data.knn_query=null",
            "backbone.small_stem=false",
            "data.augment.size=28",
            f"train.epochs={epochs}",
            f"train.batch_size={batch_size}",
            "train.warmup_epochs=1",
            "train.knn_every=0",
            "train.precision=fp32",
            "scaling.num_workers=1",
        ],
    )


@ray.remote
def ray_worker_threads_and_niceness() -> tuple[int, int]:
    """torch's intra-op threads (Ray sets OMP_NUM_THREADS from the CPUs a worker holds) and the
    process niceness (Ray starts its workers at ``RAY_worker_niceness``, 15 by default) in a Ray worker."""
    return torch.get_num_threads(), os.nice(0)


# ------------------------------------------------------------------ plain side


def plain_run(recipe: Recipe, run: int, worker_cpus: float, threads: int) -> list[EpochTime]:
    """The worker's training loop in this process, rank 0 of 1, without Ray Train."""
    reserved = placement_group([{"CPU": worker_cpus}])  # what the Train worker holds on the Ray side
    ray.get(reserved.ready())
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _plain_epochs(recipe, run)
    finally:
        torch.set_num_threads(previous_threads)
        remove_placement_group(reserved)


def _plain_epochs(recipe: Recipe, run: int) -> list[EpochTime]:
    train, data = recipe.train, recipe.data
    device = torch.device("cpu")
    torch.manual_seed(train.seed)
    method = build_method(recipe.to_dict()).to(device)
    optimizer = build_optimizer(method, recipe.optim, train.batch_size)
    prepared = open_prepared(data.path)
    steps = [
        steps_per_epoch(
            prepared, seed=train.seed, epoch=e, world=1, batch_per_worker=train.batch_size, limit=data.limit
        )
        for e in range(train.epochs)
    ]
    total_steps = sum(steps) // train.grad_accum_steps
    peak_lr = scaled_lr(recipe.optim.base_lr, train.batch_size)
    warmup = train.warmup_epochs * total_steps // train.epochs
    normalizer = PixelNormalizer(data.mean, data.std, device)
    channels_last = recipe.backbone.name.startswith("resnet")
    step, times = 0, []
    for epoch in range(train.epochs):
        torch.manual_seed(train.seed * 1_000_003 + epoch * 1009)  # the worker's per-(epoch, rank) seed, rank 0
        views = EpochViews(data.augment.view_specs(), channels=data.channels, seed=train.seed, epoch=epoch)
        dataset = rank_views_dataset(
            prepared, views, MapTasks(num_cpus=data.cpus_per_task), rank=0, world=1, limit=data.limit
        )
        batches = dataset.iter_torch_batches(
            batch_size=train.batch_size,
            drop_last=True,
            device=device,
            local_shuffle_buffer_size=SHUFFLE_BUFFER_BATCHES * train.batch_size,
            local_shuffle_seed=train.seed * 1_000_003 + epoch * 1009,
        )
        sums: dict[str, float] = {}
        method.train()
        start = wait_start = time.perf_counter()
        waited = 0.0
        for index, batch in enumerate(batches):
            if index == steps[epoch]:
                break
            waited += time.perf_counter() - wait_start
            views = [
                normalizer.to_float(batch[f"view_{v}"], channels_last)  # every column but "label"
                for v in range(len(batch) - 1)
            ]
            set_lr(optimizer, warmup_cosine(step, total_steps, warmup, peak_lr, peak_lr * train.final_lr_fraction))
            out = method(views)
            if not math.isfinite(out["loss"].item()):
                raise RuntimeError(f"non-finite loss at epoch {epoch + 1}")
            (out["loss"] / train.grad_accum_steps).backward()
            if (index + 1) % train.grad_accum_steps == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                method.on_step(step, total_steps)
                step += 1
            for name, value in out.items():  # every returned scalar, as the worker averages them
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            wait_start = time.perf_counter()
        seconds = time.perf_counter() - start
        times.append(
            EpochTime(
                "plain",
                run,
                epoch + 1,
                seconds,
                steps[epoch] * train.batch_size / seconds,
                waited / seconds,
                sums["loss"] / steps[epoch],
            )
        )
    return times


# ------------------------------------------------------------------ Ray Train side


def ray_run(recipe: Recipe, run: int, run_dir: Path) -> tuple[list[EpochTime], float]:
    """``sslray.train.trainer.fit`` (TorchTrainer, 1 worker); per-epoch times from the last checkpoint."""
    start = time.perf_counter()
    fit(recipe, run_dir)
    wall = time.perf_counter() - start
    history = read_state(checkpoint_folders(run_dir)[-1])["history"]
    times = [
        EpochTime("ray", run, m["epoch"], m["seconds"], m["images_per_s"], m["data_wait_frac"], m["loss"])
        for m in history
    ]
    return times, wall


# ------------------------------------------------------------------ report


def print_table(times: list[EpochTime]) -> None:
    print(f"{'side':<6}{'run':>4}{'epoch':>6}{'seconds':>9}{'img/s':>8}{'data wait':>10}{'loss':>9}")
    for t in times:
        note = "  (warm-up, excluded)" if t.warm_up else ""
        print(
            f"{t.side:<6}{t.run:>4}{t.epoch:>6}{t.seconds:>9.2f}{t.images_per_s:>8.0f}"
            f"{t.data_wait_frac:>10.0%}{t.loss:>9.4f}{note}"
        )


def summarise(times: list[EpochTime], fit_walls: list[float]) -> None:
    epochs = sorted({t.epoch for t in times})
    same = all(len({round(t.loss, 6) for t in times if t.epoch == e}) == 1 for e in epochs)
    print(f"same batches and updates on both sides: per-epoch losses {'identical' if same else 'DIFFER'} in every run")
    timed = {side: [t.seconds for t in times if t.side == side and not t.warm_up] for side in ("plain", "ray")}
    wait = {
        side: statistics.mean(t.data_wait_frac for t in times if t.side == side and not t.warm_up)
        for side in ("plain", "ray")
    }
    for side, seconds in timed.items():
        print(
            f"{side:<6} epochs 2..N: median {statistics.median(seconds):.2f} s, "
            f"mean {statistics.mean(seconds):.2f} s, min {min(seconds):.2f} s over {len(seconds)} epochs; "
            f"mean data wait {wait[side]:.0%}"
        )
    outside = [
        wall - sum(t.seconds for t in times if t.side == "ray" and t.run == run)
        for run, wall in enumerate(fit_walls, start=1)
    ]
    print(
        "Ray Train fit() wall time per run: "
        + ", ".join(f"{w:.1f} s" for w in fit_walls)
        + "; of which outside the epochs' training loops (start-up, reports, checkpoints, shutdown): "
        + ", ".join(f"{o:.1f} s" for o in outside)
    )
    ratio = statistics.median(timed["ray"]) / statistics.median(timed["plain"])
    mean_ratio = statistics.mean(timed["ray"]) / statistics.mean(timed["plain"])
    min_ratio = min(timed["ray"]) / min(timed["plain"])
    print(
        f"ratio Ray Train / plain epoch time: {ratio:.3f} (median)  {mean_ratio:.3f} (mean)  "
        f"{min_ratio:.3f} (fastest epochs)  goal <= 1.10 (median) -> {'OK' if ratio <= 1.10 else 'ABOVE GOAL'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4096, help="Fashion-MNIST training images (data.limit)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; epoch 1 is warm-up (>= 2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, plain then Ray")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (epoch 1 is warm-up)")

    cpus = args.cpus or os.cpu_count() or 1
    init_ray(num_cpus=cpus)
    with tempfile.TemporaryDirectory(prefix="sslray-ray-overhead-") as tmp:
        prepare("fashion-mnist", tmp, split="train", limit=args.images, options=ShardOptions(log=lambda msg: None))
        make_recipe = functools.partial(
            benchmark_recipe, str(Path(tmp) / "train"), args.images, args.epochs, args.batch_size
        )  # a fresh Recipe per run: fit() edits its paths
        recipe = make_recipe()
        worker_cpus = worker_resources(recipe, ray.cluster_resources()["CPU"])["CPU"]
        threads, worker_niceness = ray.get(ray_worker_threads_and_niceness.options(num_cpus=worker_cpus).remote())
        print(
            f"CPUs: {cpus} (os.cpu_count {os.cpu_count()}), Ray Train worker CPUs: {worker_cpus:g}, torch threads: "
            f"{threads} on both sides, niceness: plain loop {os.nice(0)}, Ray workers {worker_niceness}"
        )
        print(
            f"images: {args.images}, batch: {args.batch_size}, epochs per run: {args.epochs}, rounds: {args.rounds}, "
            f"method: {recipe.method_name}, backbone: {recipe.backbone.name} (small_stem="
            f"{recipe.backbone.small_stem}, in_chans={recipe.backbone.in_chans}), views: "
            f"{len(recipe.data.augment.view_specs())} x {recipe.data.augment.size} px, "
            f"torch {torch.__version__}, ray {ray.__version__}",
            flush=True,
        )
        times: list[EpochTime] = []
        fit_walls: list[float] = []
        for run in range(1, args.rounds + 1):
            times += plain_run(make_recipe(), run, worker_cpus, threads)
            print(f"plain run {run} done", flush=True)
            ray_times, wall = ray_run(make_recipe(), run, Path(tmp) / f"ray_run_{run}")
            times += ray_times
            fit_walls.append(wall)
            print(f"ray run {run} done", flush=True)
    print()
    print_table(times)
    print()
    summarise(times, fit_walls)
    ray.shutdown()


if __name__ == "__main__":
    main()
