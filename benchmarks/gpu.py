"""Images/s of ``sslray train`` on one GPU next to a plain PyTorch loop on tensors already on the GPU
(the compute ceiling): SimCLR ResNet-50 and MAE ViT-B/16 at 224 px, bf16, with and without
``train.compile``. Goal: sslray reaches >= 0.95 of the plain loop's images/s with data wait < 5%.

    make bench-gpu                                        # the next line, DIR = benchmarks/results/gpu-<date>-<time>
    .venv/bin/python benchmarks/gpu.py --out DIR [--minutes 8] [--cases simclr_resnet50,mae_vitb16_compile]
    .venv/bin/python benchmarks/gpu.py --smoke --out DIR  # the same code paths, tiny, on CPU (part of make test)

Writes ``DIR/gpu_bench.json`` and ``DIR/gpu_bench.md`` (rewritten after every stage, so a run cut short
still leaves what it measured) and keeps each sslray run's folder under ``DIR/runs/`` (config.yaml,
TensorBoard events, result.json; the checkpoints, weights of two epochs on synthetic images, are deleted).

Everything runs in this process and one local Ray started with every CPU core of the machine.

Data: synthetic JPEGs drawn here with PIL (colour blotches, i.e. noise drawn at half resolution and
upscaled, under 3-8 random ellipses and rectangles; each side 256-500 px; quality 90, ~80 KB each,
where ImageNet-1k's training JPEGs average ~110 KB, 138 GB / 1.28 M files), converted by
``sslray data prepare folder`` (the product's path: JPEG bytes are stored as they are, and Ray Data
decodes them for real) with ``--shard-size 128``. A Parquet row group is the unit sslray deals out to
Ray Data; 128 images of 224 px views are a second or two of one core, where prepare's default (row groups
of up to 32 MB, ~400 of these images) would be several seconds
for SimCLR's two views. Nothing is downloaded.

Then, per case, in a fixed order (each case without compile, then each with it):

1. Plain loop: ``build_method`` from the case's recipe with the same overrides as the sslray run, its
   optimizer (``build_optimizer``), the worker's own ``StepSettings`` (uint8 -> float normalisation on
   the device, channels-last for ResNets, bf16 autocast, lr schedule) and ``compile_backbones`` when
   compiling, as the worker does; random uint8 views already on the device, no data loading, no per-step
   host sync (the worker reads the loss back each step; a ceiling need not). Warm-up steps (the compile
   happens in the first) are left out; then at least ``plain_min_steps`` steps and ``plain_min_seconds``,
   timed between ``torch.cuda.synchronize()`` calls. The batch starts at 512 per GPU (the
   ``search_spaces/paper`` recipes' 4096 over 8 workers) and is halved until a step fits in GPU memory;
   the compiled variant and the sslray side use the batch found.
2. Feed alone (once per case, no model): the worker's dataset (``rank_views_dataset``: read row groups,
   decode, augment on CPU, uint8 views) iterated here while a placement group holds the CPUs the Train
   worker would hold, so Ray Data gets the CPUs it gets under ``sslray train``; after an untimed warm-up
   (worker processes, Ray Data's actors: all up by the timed epoch of a run, its second). img/s per CPU
   core = images / CPU seconds of Ray's worker processes during the pass (psutil), i.e. what one busy
   core delivers; ``cpus_busy`` = those CPU seconds / the pass's wall time. CPU cores per GPU for the
   feed = the plain loop's img/s / img/s per CPU core.
3. sslray side: ``sslray train RECIPE --out DIR/runs/NAME key=value ...`` through ``sslray.cli.main``
   (the console script's own function; training runs in a Ray Train worker process fed by Ray Data from
   the other CPUs): ``scaling.use_gpu=true``, ``train.precision=bf16``, ``train.knn_every=0``, 2 epochs
   with the lr warming up through both (synthetic images must not make the run diverge). The figures are
   epoch 2's, from the run's ``result.json`` (epoch 1 holds the compile, cuDNN's first calls, Ray Data's
   start); ``data.limit`` sizes an epoch to ~``epoch_seconds`` at the slower of the plain loop and the
   feed. Like every sslray epoch it starts a new Ray Data pipeline whose first batch waits until about
   7 batches are made (the local shuffle buffer of 4 batches, filled 1.5 times over by Ray Data's
   batcher, plus the batch): its img/s includes that start-up, ~7 x batch / the feed's img/s, which a long
   epoch makes negligible and a 15 s one does not.

Budget (``--minutes``, 8 by default): a stage that no longer fits is skipped, and an sslray run still
going at the deadline is stopped with SIGINT (Ray Train's graceful abort); both are recorded in the
JSON. Exit code 0 when every stage ran or was skipped for time, 1 when one failed, 2 for bad arguments
or, without ``--smoke``, no CUDA device.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

GOAL_RATIO = 0.95  # sslray img/s / plain-loop img/s (the issue's goal)
GOAL_DATA_WAIT = 0.05  # data_wait_frac of the timed epoch
MIN_EPOCH_STEPS = 4  # an sslray epoch never shorter than this, whatever the rates
MIN_EPOCH_SECONDS = 4.0  # below this the timed epoch would be mostly start-up: the run is skipped instead
# Seconds a stage needs beyond its timed part, to decide whether it still fits in the budget. First
# guesses, to be replaced by what the first GPU run records (each stage's wall_s is in the JSON):
# `sslray train`'s own cost around its epochs (Ray Train start-up, checkpoint, shutdown: 23-24 s in the
# smoke on the 2-core development machine), and a first torch.compile of ResNet-50's forward + backward.
TRAIN_OVERHEAD_S = 30.0
COMPILE_S = 90.0
PLAIN_EAGER_S = 30.0  # batch search + warm-up + timed steps of the plain loop, no compile


@dataclass(frozen=True)
class Sizes:
    """How big everything is: the GPU benchmark, or its CPU smoke."""

    images: int  # synthetic JPEGs generated
    sides: tuple[int, int]  # each side of an image drawn in this range, pixels
    rows_per_group: int  # `sslray data prepare --shard-size`: rows per Parquet row group
    view_size: int  # data.augment.size (and the ViT's img_size)
    batch: int  # the first batch tried (halved on out-of-memory)
    feed_images: int  # the timed feed pass: this many images...
    feed_max_seconds: float  # ...or this long, whichever comes first
    plain_warmup_steps: int
    plain_min_steps: int
    plain_min_seconds: float
    epoch_seconds: float  # target length of the timed sslray epoch
    minutes: float  # default budget


GPU_SIZES = Sizes(
    images=20_480,
    sides=(256, 500),
    rows_per_group=128,
    view_size=224,
    batch=512,
    feed_images=4_096,
    feed_max_seconds=30.0,
    plain_warmup_steps=3,
    plain_min_steps=10,
    plain_min_seconds=5.0,
    epoch_seconds=15.0,
    minutes=8.0,
)
# 2 CPU cores: 48 images of 40-80 px in 3 row groups, 32 px views, batch 8 (6 steps per epoch).
SMOKE_SIZES = Sizes(
    images=48,
    sides=(40, 80),
    rows_per_group=16,
    view_size=32,
    batch=8,
    feed_images=48,
    feed_max_seconds=60.0,
    plain_warmup_steps=1,
    plain_min_steps=3,
    plain_min_seconds=0.0,
    epoch_seconds=60.0,
    minutes=10.0,
)


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    recipe: Path
    smoke_overrides: tuple[str, ...]  # the tiny stand-in --smoke trains instead
    smoke_title: str


CASES = {
    "simclr_resnet50": Case(
        "simclr_resnet50",
        "SimCLR ResNet-50",
        REPO / "search_spaces" / "paper" / "simclr_in1k_resnet50.yaml",
        ("backbone.name=resnet18", "method.proj_hidden_dim=64", "method.proj_dim=32"),
        "SimCLR ResNet-18, proj 64-32",
    ),
    "mae_vitb16": Case(
        "mae_vitb16",
        "MAE ViT-B/16",
        REPO / "search_spaces" / "paper" / "mae_in1k_vitb16.yaml",
        (
            "backbone.name=vit_tiny",
            "backbone.depth=1",
            "backbone.patch_size=8",
            "method.decoder_dim=32",
            "method.decoder_depth=1",
            "method.decoder_num_heads=2",
        ),
        "MAE ViT-tiny/8, 1 block, decoder 32-d x 1",
    ),
}
COMPILED = "_compile"
RUNS = ("simclr_resnet50", "mae_vitb16", "simclr_resnet50" + COMPILED, "mae_vitb16" + COMPILED)
# A first torch.compile on 2 CPU cores takes ~1 min per model (C++ code generation), so the smoke leaves
# the compiled variants out; `--smoke --cases mae_vitb16_compile` runs one.
SMOKE_RUNS = ("simclr_resnet50", "mae_vitb16")


class Budget:
    """The wall-clock budget of the whole benchmark (``--minutes``)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


# ------------------------------------------------------------------ data


def draw_jpeg(index: int, sides: tuple[int, int]) -> bytes:
    """One synthetic photo-like JPEG: smooth colour blotches (noise drawn at half resolution, upscaled)
    under a few random shapes; sizes vary so that batches hold images of different shapes, as real ones do."""
    rng = np.random.default_rng(index)
    width, height = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
    noise = rng.integers(0, 256, (height // 2 + 1, width // 2 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(noise).resize((width, height), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(8, width // 2 + 9)), y0 + int(rng.integers(8, height // 2 + 9))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write_jpeg(job: tuple[Path, int, tuple[int, int]]) -> int:
    folder, index, sides = job
    data = draw_jpeg(index, sides)
    (folder / f"{index:06d}.jpg").write_bytes(data)
    return len(data)


def make_dataset(root: Path, sizes: Sizes) -> tuple[Path, dict]:
    """Synthetic JPEGs in ``root/jpeg`` -> ``sslray data prepare folder`` -> ``root/prepared/train``."""
    from sslray.cli import main as sslray_main

    jpegs = root / "jpeg"
    jpegs.mkdir()
    start = time.perf_counter()
    jobs = [(jpegs, i, sizes.sides) for i in range(sizes.images)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        nbytes = list(pool.imap_unordered(_write_jpeg, jobs, chunksize=64))
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    code = sslray_main(
        [
            "data",
            "prepare",
            "folder",
            str(root / "prepared"),
            "--path",
            str(jpegs),
            "--shard-size",
            str(sizes.rows_per_group),
        ]
    )
    if code != 0:
        raise RuntimeError(f"sslray data prepare folder exited with {code}")
    shutil.rmtree(jpegs)  # the Parquet shards hold the same JPEG bytes
    info = {
        "images": sizes.images,
        "sides_px": list(sizes.sides),
        "mean_kb": round(sum(nbytes) / len(nbytes) / 1e3, 1),
        "rows_per_row_group": sizes.rows_per_group,
        "generate_s": round(generate_s, 1),
        "prepare_s": round(time.perf_counter() - start, 1),
    }
    return root / "prepared" / "train", info


# ------------------------------------------------------------------ recipes


def run_overrides(
    case: Case, sizes: Sizes, smoke: bool, data_path: Path, *, compiled: bool, batch: int, limit: int, use_gpu: bool
) -> list[str]:
    """The ``key=value`` overrides of the case's recipe, shared by the plain loop, the feed and ``sslray train``."""
    flag = {True: "true", False: "false"}
    return [
        *(case.smoke_overrides if smoke else ()),
        f"data.path={data_path}",
        f"data.limit={limit}",
        "data.knn_bank=null",
        "data.knn_query=null",
        f"data.augment.size={sizes.view_size}",
        f"backbone.img_size={sizes.view_size}",
        f"train.batch_size={batch}",
        "train.epochs=2",
        "train.warmup_epochs=2",
        "train.knn_every=0",
        "train.checkpoint_every=2",
        "train.keep_checkpoints=1",
        "train.max_failures=0",
        "train.collapse_std=0",
        "train.sync_batchnorm=false",
        "train.precision=bf16",
        f"train.compile={flag[compiled]}",
        "scaling.num_workers=1",
        f"scaling.use_gpu={flag[use_gpu]}",
    ]


# ------------------------------------------------------------------ feed alone


def measure_feed(recipe, prepared, worker_cpus: float, warm_up_images: int, images: int, max_seconds: float) -> dict:
    """Ray Data's decode + augment throughput with no model: the worker's dataset for epoch 0, rank 0 of 1,
    while a placement group holds the Train worker's CPUs (what Ray Data is left with under sslray train).
    Per CPU core = images / CPU seconds of Ray's worker processes in the pass: what one busy core delivers,
    whether or not the pipeline manages to keep all of its CPUs busy (``cpus_busy`` says how many it did)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    def import_pipeline() -> int:  # nested: Ray ships it by value (its workers cannot import this script)
        import sslray.data.pipeline  # noqa: F401  (torch, torchvision, pyarrow: what a decode task needs)

        time.sleep(1.0)  # hold the process a moment, so that each task gets a process of its own
        return os.getpid()

    reserved = placement_group([{"CPU": worker_cpus}])
    ray.get(reserved.ready())
    try:
        data_cpus = ray.cluster_resources()["CPU"] - worker_cpus
        # Untimed warm-up: a process per Ray Data task slot with torch imported, and a first small pass
        # (Ray Data's actors): by the timed epoch of `sslray train`, its second, all of that is up as well.
        warm_up = ray.remote(import_pipeline).options(num_cpus=recipe.data.cpus_per_task)
        ray.get([warm_up.remote() for _ in range(max(1, int(data_cpus // recipe.data.cpus_per_task)))])
        _views_pass(recipe, prepared, warm_up_images, max_seconds)
        cpu_before = _ray_workers_cpu_seconds()
        arrivals, complete = _views_pass(recipe, prepared, images, max_seconds)
        cpu_seconds = _ray_workers_cpu_seconds() - cpu_before
    finally:
        remove_placement_group(reserved)
    seconds, delivered = arrivals[-1]
    return {
        "views": len(recipe.data.augment.view_specs()),
        "view_px": recipe.data.augment.size,
        "ray_data_cpus": data_cpus,
        "images": delivered,
        "complete_pass": complete,
        "seconds": round(seconds, 2),
        "first_batch_s": round(arrivals[0][0], 2),
        "images_per_s": round(delivered / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "cpus_busy": round(cpu_seconds / seconds, 2),
        "images_per_s_per_cpu": round(delivered / cpu_seconds, 2),
    }


def _views_pass(recipe, prepared, limit: int, max_seconds: float) -> tuple[list[tuple[float, int]], bool]:
    """Iterate the worker's views dataset over the first ``limit`` images, as the worker does but without
    its local shuffle (which only reorders rows); (seconds, images so far) at each batch, and whether the
    pass ended by itself rather than at ``max_seconds`` (the time limit a stalled pipeline cannot pass)."""
    from sslray.data.pipeline import EpochViews, MapTasks, rank_views_dataset

    start = time.perf_counter()
    views = EpochViews(recipe.data.augment.view_specs(), channels=recipe.data.channels, seed=recipe.train.seed)
    dataset = rank_views_dataset(
        prepared, views, MapTasks(num_cpus=recipe.data.cpus_per_task), rank=0, world=1, limit=limit
    )
    arrivals, images = [], 0
    for batch in dataset.iter_torch_batches(batch_size=recipe.train.batch_size):
        images += len(batch["label"])
        arrivals.append((time.perf_counter() - start, images))
        if arrivals[-1][0] > max_seconds:
            return arrivals, False
    return arrivals, True


def _ray_workers_cpu_seconds() -> float:
    """User + system CPU seconds so far of this Ray's worker processes: the descendants of this process
    whose title starts with ``ray::`` (tasks, actors, idle workers; Ray's two agents left out)."""
    import psutil

    total = 0.0
    for process in psutil.Process().children(recursive=True):
        try:
            title = process.cmdline()[:1]
            if (
                title
                and title[0].startswith("ray::")
                and not title[0].startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))
            ):
                times = process.cpu_times()
                total += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # ended between the listing and the reading
    return total


# ------------------------------------------------------------------ plain PyTorch loop


def plain_loop(recipe, device: torch.device, sizes: Sizes, budget: Budget) -> dict:
    """The model's training step on random uint8 views already on ``device``: the compute ceiling."""
    from sslray.methods.registry import build_method
    from sslray.nn.backbones import compile_backbones
    from sslray.nn.optim import build_optimizer, set_lr
    from sslray.nn.schedules import warmup_cosine
    from sslray.train.epoch import StepSettings

    batch, size = recipe.train.batch_size, recipe.data.augment.size
    torch.manual_seed(recipe.train.seed)
    method = build_method(recipe.to_dict())
    if recipe.train.compile:
        compile_backbones(method)  # in place, before the move to the device: as the worker does
    method.to(device).train()
    optimizer = build_optimizer(method, recipe.optim, batch)
    # Nominal schedule length: the lr stays in its warm-up ramp (train.warmup_epochs = train.epochs).
    settings = StepSettings.of(recipe, 10_000, device)
    views_uint8 = [
        torch.randint(0, 256, (batch, recipe.data.channels, size, size), dtype=torch.uint8, device=device)
        for _ in recipe.data.augment.view_specs()
    ]

    def step(index: int) -> torch.Tensor:
        views = [settings.normalizer.to_float(v, settings.channels_last) for v in views_uint8]
        set_lr(
            optimizer,
            warmup_cosine(index, settings.total_steps, settings.warmup_steps, settings.peak_lr, settings.final_lr),
        )
        with settings.precision.autocast():
            out = method(views)
        settings.precision.backward(out["loss"])
        settings.precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        method.on_step(index, settings.total_steps)
        return out["loss"]

    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    for index in range(sizes.plain_warmup_steps):
        step(index)
    synchronize()
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = 0
    start = time.perf_counter()
    while steps < sizes.plain_min_steps or time.perf_counter() - start < sizes.plain_min_seconds:
        loss = step(sizes.plain_warmup_steps + steps)
        steps += 1
        if budget.left() <= 0:
            break
    synchronize()
    seconds = time.perf_counter() - start
    result = {
        "images_per_s": round(steps * batch / seconds, 1),
        "step_ms": round(seconds / steps * 1e3, 1),
        "steps": steps,
        "warmup_steps": sizes.plain_warmup_steps,
        "warmup_s": round(warmup_s, 1),
        "last_loss": float(loss),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def release_memory(device: torch.device) -> None:
    """Drop compiled graphs (they hold the plain loop's weights) and give cached GPU memory back, so that
    the Train worker's process finds the GPU as empty as it can be."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def plain_with_batch_search(make_recipe, device: torch.device, sizes: Sizes, budget: Budget) -> tuple[int, dict]:
    """The plain loop at ``sizes.batch``, halved after each CUDA out-of-memory error."""
    batch = sizes.batch
    while True:
        try:
            result = plain_loop(make_recipe(batch), device, sizes, budget)
            return batch, result
        except torch.cuda.OutOfMemoryError:
            release_memory(device)
            if batch == 1:
                raise
            print(f"batch {batch} does not fit in GPU memory; trying {batch // 2}", flush=True)
            batch //= 2


# ------------------------------------------------------------------ sslray train


class BudgetStop:
    """SIGINT to this process at the deadline while ``sslray train`` runs: Ray Train's own Ctrl-C handling
    aborts the run gracefully (it then raises SystemExit). ``fired`` tells that apart from a user's Ctrl-C."""

    def __init__(self, seconds: float):
        self.fired = threading.Event()
        self.timer = threading.Timer(max(seconds, 1.0), self._fire)

    def _fire(self) -> None:
        self.fired.set()
        os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, kind, value, traceback):
        self.timer.cancel()
        # fit() leaves Ray Train's handler installed, bound to a finished run: restore Python's own.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return self.fired.is_set() and kind in (SystemExit, KeyboardInterrupt)


def sslray_run(case: Case, overrides: list[str], run_dir: Path, budget: Budget) -> dict:
    """``sslray train`` on the case's recipe; epoch 2's figures from the run's result.json."""
    from sslray.cli import main as sslray_main

    start = time.perf_counter()
    code = None
    with BudgetStop(budget.left()) as stop:
        code = sslray_main(["train", str(case.recipe), "--out", str(run_dir), *overrides])
    wall_s = round(time.perf_counter() - start, 1)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if stop.fired.is_set():
        return {"status": "stopped: the budget ran out during the run", "wall_s": wall_s}
    summary_file = run_dir / "result.json"
    if code != 0 or not summary_file.is_file():
        return {"status": f"failed: sslray train exited with {code}", "wall_s": wall_s}
    metrics = json.loads(summary_file.read_text())["metrics"]
    if metrics.get("epoch") != 2 or "images_per_s" not in metrics:
        return {
            "status": f"failed: the run ended at epoch {metrics.get('epoch')} "
            f"({metrics.get('stop_reason', 'no reason given')})",
            "wall_s": wall_s,
        }
    result = {
        "status": "ok",
        "images_per_s": round(metrics["images_per_s"], 1),
        "data_wait_frac": round(metrics["data_wait_frac"], 4),
        "epoch_seconds": round(metrics["seconds"], 2),
        "wall_s": wall_s,
        "run_dir": str(run_dir),
        "last_loss": metrics.get("loss"),
    }
    if "peak_gpu_memory_gb" in metrics:
        result["peak_gpu_memory_gb"] = round(metrics["peak_gpu_memory_gb"], 2)
    return result


# ------------------------------------------------------------------ results


def machine_info(device: torch.device) -> dict:
    import ray

    info = {"cpus": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__, "device": device.type}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name, gpu_memory_gb=round(properties.total_memory / 2**30, 1), cuda=torch.version.cuda
        )
    return info


def _fmt(value, pattern: str, missing: str = "-") -> str:
    return missing if value is None else format(value, pattern)


def markdown(report: dict) -> str:
    """``gpu_bench.md``: the table of cases, then the feed alone."""
    machine, data = report["machine"], report["data"]
    where = (
        f"{machine['gpu']} ({machine['gpu_memory_gb']} GiB), CUDA {machine['cuda']}" if "gpu" in machine else "no GPU"
    )
    lines = ["# GPU benchmark: `sslray train` vs a plain PyTorch loop", ""]
    if report["smoke"]:
        lines += [
            "**SMOKE on CPU: tiny stand-in models at 32 px; a check of the code paths, not a GPU measurement.**",
            "",
        ]
    lines += [
        f"{where}; {machine['cpus']} CPU cores; torch {machine['torch']}, ray {machine['ray']}. "
        f"{data['images']:,} synthetic JPEGs ({data['sides_px'][0]}-{data['sides_px'][1]} px, "
        f"{data['mean_kb']} KB mean), {report['view_px']} px views, bf16. Wall time "
        f"{report['wall_s'] / 60:.1f} min (budget {report['budget_s'] / 60:g} min).",
        "",
        "| case | compile | batch | plain img/s | sslray img/s | ratio | data wait | timed epoch | "
        "peak GPU mem plain / sslray (GiB) | feed img/s per CPU core | CPU cores per GPU for the feed | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in report["runs"]:
        plain, ours = run.get("plain") or {}, run.get("sslray") or {}
        memory = (
            f"{_fmt(plain.get('peak_gpu_memory_gb'), '.1f')} / {_fmt(ours.get('peak_gpu_memory_gb'), '.1f')}"
            if "peak_gpu_memory_gb" in plain or "peak_gpu_memory_gb" in ours
            else "- (CPU)"
        )
        epoch = f"{ours['epoch_images']:,} img, {ours['epoch_seconds']:.1f} s" if "epoch_seconds" in ours else "-"
        goal = run.get("goal_met")
        verdict = "" if goal is None or report["smoke"] else " (goal met)" if goal else " (goal not met)"
        status = run["status"] + verdict
        lines.append(
            f"| {run['title']} | {'yes' if run['compile'] else 'no'} | {_fmt(run.get('batch'), 'd')} | "
            f"{_fmt(plain.get('images_per_s'), ',.0f')} | {_fmt(ours.get('images_per_s'), ',.0f')} | "
            f"{_fmt(run.get('ratio'), '.3f')} | {_fmt(ours.get('data_wait_frac'), '.1%')} | {epoch} | "
            f"{memory} | {_fmt(run.get('feed_images_per_s_per_cpu'), ',.1f')} | "
            f"{_fmt(run.get('cpu_cores_per_gpu_for_feed'), '.3g')} | {status} |"
        )
    lines += [
        "",
        f"Goal: ratio >= {GOAL_RATIO} and data wait < {GOAL_DATA_WAIT:.0%}. Ratio = sslray img/s (epoch 2 "
        "of `sslray train`, that epoch's Ray Data start-up included) / plain-loop img/s (random uint8 views "
        "already on the device). CPU cores per GPU for the feed = plain img/s / feed img/s per CPU core.",
        "",
        "Feed alone (Ray Data read + decode + augment, no model; per CPU core = images / CPU seconds of "
        "Ray's worker processes):",
        "",
        "| case | views | Ray Data CPUs | images | first batch after (s) | img/s | CPUs kept busy | "
        "img/s per CPU core |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, feed in report["feed"].items():
        cut = "" if feed["complete_pass"] else " (cut at the time limit)"
        lines.append(
            f"| {name} | {feed['views']} x {feed['view_px']} px | {feed['ray_data_cpus']:g} | "
            f"{feed['images']:,}{cut} | {feed['first_batch_s']:.1f} | {feed['images_per_s']:,.0f} | "
            f"{feed['cpus_busy']:.1f} | {feed['images_per_s_per_cpu']:,.1f} |"
        )
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict, budget: Budget) -> None:
    report["wall_s"] = round(budget.elapsed(), 1)
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_bench.md").write_text(markdown(report))


# ------------------------------------------------------------------ main


class Bench:
    """The stages in order, each adding to ``report`` (written out after every stage)."""

    def __init__(
        self,
        args: argparse.Namespace,
        sizes: Sizes,
        data_path: Path,
        prepared,
        device: torch.device,
        budget: Budget,
        report: dict,
    ):
        self.args, self.sizes, self.data_path, self.prepared = args, sizes, data_path, prepared
        self.device, self.budget, self.report = device, budget, report
        self.batches: dict[str, int] = {}  # case -> the batch found by its first plain loop

    def overrides(self, case: Case, *, compiled: bool, batch: int, limit: int) -> list[str]:
        return run_overrides(
            case,
            self.sizes,
            self.args.smoke,
            self.data_path,
            compiled=compiled,
            batch=batch,
            limit=limit,
            use_gpu=self.device.type == "cuda",
        )

    def recipe(self, case: Case, *, compiled: bool, batch: int):
        from sslray.recipe import load_recipe

        return load_recipe(
            case.recipe, self.overrides(case, compiled=compiled, batch=batch, limit=self.prepared.num_rows)
        )

    def save(self) -> None:
        write_report(self.args.out, self.report, self.budget)

    def run(self, name: str) -> dict:
        """One row of the table: the plain loop, the feed alone (once per case), then ``sslray train``."""
        compiled = name.endswith(COMPILED)
        case = CASES[name.removesuffix(COMPILED)]
        row: dict = {
            "name": name,
            "case": case.name,
            "title": case.smoke_title if self.args.smoke else case.title,
            "compile": compiled,
            "status": "ok",
        }
        self.report["runs"].append(row)
        needs = PLAIN_EAGER_S + (COMPILE_S if compiled else 0.0)
        if self.budget.left() < needs:
            row["status"] = (
                f"skipped: {self.budget.left():.0f} s of the budget left, the plain loop needs ~{needs:.0f} s"
            )
            return row
        self.plain(row, case, compiled)
        self.save()
        if case.name not in self.report["feed"]:
            self.feed(case, row["batch"])
            self.save()
        feed = self.report["feed"][case.name]
        row["feed_images_per_s_per_cpu"] = feed["images_per_s_per_cpu"]
        row["cpu_cores_per_gpu_for_feed"] = float(f"{row['plain']['images_per_s'] / feed['images_per_s_per_cpu']:.3g}")

        # The timed epoch: ~epoch_seconds at the slower of the plain loop and the feed, within the budget.
        overhead = TRAIN_OVERHEAD_S + (COMPILE_S / 3 if compiled else 0.0)  # the compile cache is warm by now
        rate = min(row["plain"]["images_per_s"], feed["images_per_s"])
        target_s = min(self.sizes.epoch_seconds, (self.budget.left() - overhead) / 2)
        limit = min(self.prepared.num_rows, max(MIN_EPOCH_STEPS * row["batch"], int(rate * target_s)))
        limit -= limit % row["batch"]
        needs = overhead + 2 * limit / rate
        if target_s < MIN_EPOCH_SECONDS or needs > self.budget.left():
            row["status"] = (
                f"skipped sslray side: {self.budget.left():.0f} s of the budget left, "
                f"2 epochs of {limit:,} images at {rate:,.0f} img/s need ~{needs:.0f} s"
            )
            return row
        overrides = self.overrides(case, compiled=compiled, batch=row["batch"], limit=limit)
        row["sslray"] = sslray_run(case, overrides, self.args.out / "runs" / name, self.budget)
        row["sslray"]["epoch_images"] = limit
        row["status"] = row["sslray"].pop("status")
        if row["status"] == "ok":
            row["ratio"] = round(row["sslray"]["images_per_s"] / row["plain"]["images_per_s"], 3)
            row["goal_met"] = row["ratio"] >= GOAL_RATIO and row["sslray"]["data_wait_frac"] < GOAL_DATA_WAIT
        return row

    def worker_cpus(self, recipe) -> float:
        """The CPUs ``sslray train``'s Train worker holds on this Ray (the rest go to Ray Data)."""
        import ray

        from sslray.train.trainer import worker_resources

        return worker_resources(recipe, ray.cluster_resources()["CPU"])["CPU"]

    def plain(self, row: dict, case: Case, compiled: bool) -> None:
        if self.device.type == "cpu":  # as many threads as the Train worker (Ray sets its OMP_NUM_THREADS)
            torch.set_num_threads(
                max(1, int(self.worker_cpus(self.recipe(case, compiled=compiled, batch=self.sizes.batch))))
            )
        start = time.perf_counter()
        try:
            if case.name in self.batches:
                row["batch"] = self.batches[case.name]
                row["plain"] = plain_loop(
                    self.recipe(case, compiled=compiled, batch=row["batch"]), self.device, self.sizes, self.budget
                )
            else:
                row["batch"], row["plain"] = plain_with_batch_search(
                    lambda batch: self.recipe(case, compiled=compiled, batch=batch),
                    self.device,
                    self.sizes,
                    self.budget,
                )
                self.batches[case.name] = row["batch"]
        finally:
            release_memory(self.device)
        row["plain"]["wall_s"] = round(time.perf_counter() - start, 1)
        print(f"plain loop {row['name']}: batch {row['batch']}, {row['plain']}", flush=True)

    def feed(self, case: Case, batch: int) -> None:
        recipe = self.recipe(case, compiled=False, batch=batch)
        start = time.perf_counter()
        feed = measure_feed(
            recipe,
            self.prepared,
            self.worker_cpus(recipe),
            self.sizes.rows_per_group,
            min(self.prepared.num_rows, self.sizes.feed_images),
            max(1.0, min(self.sizes.feed_max_seconds, self.budget.left())),
        )
        feed["wall_s"] = round(time.perf_counter() - start, 1)
        self.report["feed"][case.name] = feed
        print(f"feed alone {case.name}: {feed}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the same code paths, tiny, on CPU")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results" / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}",
        help="folder for gpu_bench.json, gpu_bench.md and runs/ (must not exist or be empty)",
    )
    parser.add_argument("--minutes", type=float, help="wall-time budget (default: 8 on a GPU, 10 for --smoke)")
    parser.add_argument(
        "--cases",
        help=f"comma-separated, run in this order: {', '.join(RUNS)} "
        f"(default: all on a GPU, {', '.join(SMOKE_RUNS)} for --smoke)",
    )
    args = parser.parse_args()
    if args.cases is not None:
        chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in RUNS]
        if unknown or not chosen:
            parser.error(f"--cases: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(RUNS)}")
        args.cases = [r for r in RUNS if r in chosen]
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out: {args.out} already exists and is not empty; choose a new folder")
    if args.minutes is not None and args.minutes <= 0:
        parser.error(f"--minutes: {args.minutes} must be > 0")
    return args


def main() -> int:
    args = parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("gpu.py: no CUDA device; use --smoke on CPU", file=sys.stderr)
        return 2
    sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
    budget = Budget(60 * (args.minutes or sizes.minutes))
    device = torch.device("cpu" if args.smoke else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)

    from sslray.cluster import init_ray, use_loopback

    use_loopback()  # before `import ray`: a local Ray on 127.0.0.1, Ray Data progress bars off
    import ray

    from sslray.data.pipeline import open_prepared

    report: dict = {
        "smoke": args.smoke,
        "budget_s": budget.seconds,
        "view_px": sizes.view_size,
        "goal": {"ratio": GOAL_RATIO, "data_wait_frac": GOAL_DATA_WAIT},
        "runs": [],
        "feed": {},
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="sslray-gpu-bench-") as tmp:
        data_path, report["data"] = make_dataset(Path(tmp), sizes)
        init_ray(num_cpus=os.cpu_count())  # every core: Ray Data gets all but the Train worker's
        report["machine"] = machine_info(device)
        bench = Bench(args, sizes, data_path, open_prepared(str(data_path)), device, budget, report)
        bench.save()
        for name in args.cases or (SMOKE_RUNS if args.smoke else RUNS):
            try:
                row = bench.run(name)
            except Exception as error:  # one case failing must not lose the others' results
                traceback.print_exc()
                row = report["runs"][-1]
                row["status"] = f"failed: {type(error).__name__}: {error}"
            failed |= row["status"].startswith("failed")
            print(f"{name}: {row['status']}", flush=True)
            bench.save()
    ray.shutdown()
    bench.save()
    print(markdown(report))
    print(f"results: {args.out / 'gpu_bench.json'}, {args.out / 'gpu_bench.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
