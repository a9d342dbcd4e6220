"""One epoch of one rank's training: this rank's batches, and the step each of them goes through.

``train_epoch`` iterates this rank's views (``rank_views_dataset``: reproducible, fresh per epoch,
shuffled locally) and averages the step outputs into the epoch's metrics; rank 0's ``DataWait`` says so
when the batches stop because no live node carries ``data.label_selector``'s labels. ``train_step`` normalises a
batch's uint8 views on the device (channels-last for ResNets), sets the step's lr (warm-up + cosine),
runs forward/backward under mixed precision (``sslray.train.precision``) with gradient accumulation,
and on every ``grad_accum_steps``-th batch takes the optimizer step and the method's own schedules
(``on_step``: momentum, teacher temperature, EMA).

A step whose loss is non-finite on any rank raises ``NonFiniteLoss`` on every rank at the same step
(the loss is averaged over the ranks first); the worker loop turns it into a clean stop.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from sslray.data.augment import PixelNormalizer
from sslray.data.pipeline import EpochViews, MapTasks, PreparedDataset, rank_views_dataset
from sslray.methods.base import SSLMethod
from sslray.nn.dist import mean_over_ranks
from sslray.nn.optim import scaled_lr, set_lr
from sslray.nn.schedules import warmup_cosine
from sslray.recipe import Recipe
from sslray.train.data_wait import DataWait
from sslray.train.precision import MixedPrecision

IMAGES_LOGGED = 8  # images per view in the TensorBoard grids
SHUFFLE_BUFFER_BATCHES = 4  # local shuffle buffer, in batches: mixes rows across this rank's row groups


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite (on some rank): the run stops instead of going on silently."""


@dataclass
class Progress:
    epoch: int = 0  # next epoch to run
    step: int = 0  # optimizer steps taken
    best_knn: float = -1.0
    history: list[dict] = field(default_factory=list)
    grad_scaler: dict = field(default_factory=dict)  # fp16's loss scale, carried through checkpoints
    precision: str = "fp32"  # what the steps ran in (train.precision resolved for the device)


@dataclass
class StepSettings:
    """What every step of a run needs, computed once."""

    normalizer: PixelNormalizer
    total_steps: int
    warmup_steps: int
    peak_lr: float
    final_lr: float
    accum: int
    precision: MixedPrecision
    channels_last: bool  # CNNs run faster on NHWC tensors (cuDNN's tensor-core kernels are NHWC)

    @classmethod
    def of(cls, recipe: Recipe, total_steps: int, device) -> StepSettings:
        peak = scaled_lr(recipe.optim.base_lr, recipe.train.batch_size)
        return cls(
            PixelNormalizer(recipe.data.mean, recipe.data.std, device),
            total_steps,
            recipe.train.warmup_epochs * total_steps // recipe.train.epochs,
            peak,
            peak * recipe.train.final_lr_fraction,
            recipe.train.grad_accum_steps,
            MixedPrecision(recipe.train.precision, device),
            recipe.backbone.name.startswith("resnet"),
        )


@dataclass(frozen=True)
class Learner:
    """What a train step works on; the same objects for the whole run (``progress`` changes in place)."""

    model: torch.nn.Module  # forward/backward: the method, wrapped in DDP when there are several ranks
    method: SSLMethod  # the method itself: on_step's schedules, checkpoints, online evaluation
    optimizer: torch.optim.Optimizer
    settings: StepSettings
    progress: Progress  # the optimizer step count here; the epoch, best kNN and history for the loop


@dataclass(frozen=True)
class RankData:
    """Where this rank's batches come from, and where they go."""

    recipe: Recipe  # data (views, limit, Ray Data tasks), train.seed and train.batch_size
    prepared: PreparedDataset  # the training split (data.path), checked once
    rank: int
    world: int
    device: torch.device
    wait: DataWait  # says so when the batches stop because no live node has data.label_selector's labels


def train_epoch(learner: Learner, data: RankData, epoch: int, num_steps: int) -> tuple[dict, list[torch.Tensor]]:
    """One pass over this rank's views; returns the epoch's metrics and a few uint8 views to log."""
    recipe, rank, world, device = data.recipe, data.rank, data.world, data.device
    seed, batch = recipe.train.seed, recipe.train.batch_size // world
    views = EpochViews(recipe.data.augment.view_specs(), channels=recipe.data.channels, seed=seed, epoch=epoch)
    dataset = rank_views_dataset(
        data.prepared, views, MapTasks.of(recipe.data), rank=rank, world=world, limit=recipe.data.limit
    )
    on_gpu = device.type == "cuda"
    # Pinned host memory: the uint8 batch's copy to the GPU runs asynchronously with compute.
    batches = dataset.iter_torch_batches(
        batch_size=batch,
        drop_last=True,
        device=device,
        pin_memory=on_gpu,
        local_shuffle_buffer_size=SHUFFLE_BUFFER_BATCHES * batch,
        local_shuffle_seed=seed * 1_000_003 + epoch * 1009 + rank,
    )
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    sums: dict[str, float] = {}
    scheduled: dict[str, float] = {}
    sample: list[torch.Tensor] = []
    learner.model.train()
    start = wait_start = time.perf_counter()
    waited = 0.0
    with data.wait.watching():
        for index, batch_data in enumerate(batches):
            if index == num_steps:
                break
            waited += time.perf_counter() - wait_start
            data.wait.batch()
            uint8_views = [batch_data[f"view_{v}"] for v in range(len(batch_data) - 1)]
            sample = sample or [v[:IMAGES_LOGGED] for v in uint8_views]
            out, stepped = train_step(learner, uint8_views, index, epoch)
            scheduled = stepped or scheduled  # keep the last optimizer step's scheduled values
            for name, value in out.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            wait_start = time.perf_counter()
    seconds = time.perf_counter() - start
    metrics = {name: value / num_steps for name, value in sums.items()}
    metrics.update(scheduled)  # their values at the end of the epoch
    metrics.update(
        epoch=epoch + 1,
        lr=learner.optimizer.param_groups[0]["lr"],
        seconds=seconds,
        images_per_s=num_steps * batch * world / seconds,
        data_wait_frac=waited / seconds,
    )
    if on_gpu:
        metrics["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return metrics, sample


def train_step(learner: Learner, uint8_views: list[torch.Tensor], index: int, epoch: int) -> tuple[dict, dict]:
    """Forward/backward of one batch; an optimizer step (and the method's schedules) every ``accum``."""
    model, optimizer, settings, progress = learner.model, learner.optimizer, learner.settings, learner.progress
    views = [settings.normalizer.to_float(v, settings.channels_last) for v in uint8_views]
    set_lr(
        optimizer,
        warmup_cosine(progress.step, settings.total_steps, settings.warmup_steps, settings.peak_lr, settings.final_lr),
    )
    stepping = (index + 1) % settings.accum == 0
    # Between optimizer steps DDP need not all-reduce: gradients just accumulate locally.
    sync = contextlib.nullcontext() if stepping or not hasattr(model, "no_sync") else model.no_sync()
    with sync:
        with settings.precision.autocast():
            out = model(views)
        # The mean over ranks: a NaN on any rank reaches all of them at this step, so they stop together
        # (one rank stopping alone would leave the others waiting in DDP's all-reduce).
        loss = mean_over_ranks(out["loss"].detach().reshape(1)).item()
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"non-finite loss ({loss}) at epoch {epoch + 1}, optimizer step "
                f"{progress.step}: lower optim.base_lr or check the data"
            )
        settings.precision.backward(out["loss"] / settings.accum)
    scheduled = {}
    if stepping:
        settings.precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        scheduled = learner.method.on_step(progress.step, settings.total_steps)  # momentum, teacher temperature, EMA
        progress.step += 1
    return out, scheduled
