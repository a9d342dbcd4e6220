"""``train_loop_per_worker``: what every Ray Train worker runs for one pretraining run.

Per epoch: this rank's views (``rank_views_dataset``: reproducible, fresh per epoch), uint8 -> float
normalisation on the device, forward/backward with mixed precision (``sslray.train.precision``: bf16,
or fp16 with a gradient scaler) and gradient accumulation,
per-step lr (warm-up + cosine) and the method's own schedules (``on_step``: momentum, teacher
temperature, EMA). Then online evaluation on rank 0 (weighted kNN, embed_std) and a report (``session.report``: Ray Train or Tune)
with the metrics and, every ``checkpoint_every`` epochs, a checkpoint (model, optimizer, epoch, step,
resolved recipe).

A non-finite loss (averaged over the ranks, so that all of them see it at the same step) ends the run
cleanly: a last report with ``stop_reason`` "diverged: ..." and no checkpoint, like a collapse. It is
not an error, because Ray's restart-on-failure would only meet the same NaN again. Rank 0 keeps
``progress.json`` and, after a restart, records in ``restarts.jsonl`` how many epochs are trained
again (``sslray.runs.restarts``).
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray.train
import torch

from sslray.data.augment import PixelNormalizer
from sslray.data.pipeline import open_prepared, rank_views_dataset, steps_per_epoch
from sslray.methods.registry import build_method
from sslray.nn.backbones import compile_backbones
from sslray.nn.dist import broadcast_object, mean_over_ranks
from sslray.nn.optim import build_optimizer, scaled_lr, set_lr
from sslray.nn.schedules import warmup_cosine
from sslray.recipe import Recipe, recipe_from_dict
from sslray.runs.checkpoint import MODEL, load_tensors, read_state, replace_atomically, write_checkpoint
from sslray.runs.restarts import EpochProgress
from sslray.runs.storage import RunMirror
from sslray.runs.tensorboard import RunLogger
from sslray.train.online_eval import online_knn
from sslray.train.precision import MixedPrecision
from sslray.train.session import WorkerSession

IMAGES_LOGGED = 8  # images per view in the TensorBoard grids
SHUFFLE_BUFFER_BATCHES = 4  # local shuffle buffer, in batches: mixes rows across this rank's row groups


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite (on some rank): the run stops instead of going on silently."""


@dataclass
class Progress:
    epoch: int = 0          # next epoch to run
    step: int = 0           # optimizer steps taken
    best_knn: float = -1.0
    history: list[dict] = field(default_factory=list)
    grad_scaler: dict = field(default_factory=dict)  # fp16's loss scale, carried through checkpoints
    precision: str = "fp32"  # what the steps ran in (train.precision resolved for the device)


def train_loop_per_worker(config: dict) -> None:
    """The ``TorchTrainer`` entry point: the loop on a Ray Train worker."""
    from sslray.train.session import RayTrainSession

    run_worker(config, RayTrainSession())


def run_worker(config: dict, session: WorkerSession) -> None:
    """Pretrain ``config["recipe"]`` in ``config["run_dir"]`` (rank 0 logs there). ``config["hparams"]``,
    when given (a sweep's sampled knobs), is what the TensorBoard HParams tab shows; else the recipe."""
    recipe = recipe_from_dict(config["recipe"])
    rank, world, device = session.rank, session.world, session.device
    torch.manual_seed(recipe.train.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)

    method = build_method(recipe.to_dict())
    if recipe.train.sync_batchnorm and world > 1:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if recipe.train.compile:
        # Before DDP wraps the model; compiled lazily at the first step (that step takes longer).
        compile_backbones(method)
    model = session.prepare_model(method)
    optimizer = build_optimizer(method, recipe.optim, recipe.train.batch_size)
    progress, restored = _restore(method, optimizer, device, session.get_checkpoint(), config.get("resume_from"))
    epochs_file = EpochProgress(Path(config["run_dir"]) if rank == 0 else None)
    epochs_file.record_start(progress.epoch, restored)

    prepared = open_prepared(recipe.data.path)
    batch_per_worker = recipe.train.batch_size // world
    steps = [steps_per_epoch(prepared, seed=recipe.train.seed, epoch=e, world=world,
                             batch_per_worker=batch_per_worker, limit=recipe.data.limit)
             for e in range(recipe.train.epochs)]
    if min(steps) == 0:
        raise ValueError(f"data.path: {prepared.num_rows} images give each of {world} workers less than one "
                         f"batch of {batch_per_worker}; lower train.batch_size or add data")
    settings = StepSettings.of(recipe, sum(steps) // recipe.train.grad_accum_steps, device)
    settings.precision.load_state_dict(progress.grad_scaler)
    progress.precision = settings.precision.name
    if rank == 0:
        sys.stdout.write(f"training on {world} x {device.type}, precision {settings.precision.name}"
                         f"{', compiled backbones' if recipe.train.compile else ''}\n")
    # Scalars are logged at step = epoch number; on resume, drop anything past the checkpoint's epoch.
    logger = RunLogger(config["run_dir"] if rank == 0 else None,
                       resume_from_step=progress.epoch + 1 if progress.epoch else None)
    # Results in object storage: rank 0 trains in a node-local folder and copies it there every epoch
    # (Ray Train V2 persists checkpoints only; other artifacts are the loop's own business).
    mirror = RunMirror(Path(config["run_dir"]), config["storage"]) if rank == 0 and config.get("storage") else None
    last_epoch = recipe.train.stop_at_epoch or recipe.train.epochs
    resumed_from = progress.epoch  # 0 for a fresh run; reported so a sweep can tell restores apart
    if progress.history and progress.epoch >= last_epoch:
        # Restored with nothing left to train: PBT cloned a trial that had already finished, or a
        # restart came after the last checkpoint. Report the restored model's last metrics once, so
        # the trial's results end at its final epoch (with its own config) instead of silently ending.
        metrics = {**progress.history[-1], "resumed_from_epoch": resumed_from}
        _report(session, method, optimizer, recipe, progress, metrics, rank, Path(config["run_dir"]), final=True,
                mirror=mirror)
    for epoch in range(progress.epoch, last_epoch):
        # Reseeded per (epoch, rank): random masking etc. repeat exactly whether or not the run was resumed.
        torch.manual_seed(recipe.train.seed * 1_000_003 + epoch * 1009 + rank)
        epochs_file.started(epoch + 1)
        try:
            metrics, sample = _train_epoch(model, method, optimizer, recipe, prepared, epoch, steps[epoch],
                                           settings, progress, rank, world, device)
        except NonFiniteLoss as diverged:
            _stop_diverged(session, str(diverged), epoch, resumed_from, rank, logger, mirror)
            break
        _log_images(logger, method, sample, settings.normalizer, epoch)
        probe_now = epoch + 1 == recipe.train.epochs and recipe.train.linear_probe_epochs > 0
        if rank == 0 and (probe_now or recipe.train.knn_every and (epoch + 1) % recipe.train.knn_every == 0):
            eval_start = time.perf_counter()
            metrics.update(online_knn(method, recipe, device, linear_probe=probe_now))
            metrics["eval_seconds"] = time.perf_counter() - eval_start
        metrics["resumed_from_epoch"] = resumed_from
        progress.epoch = epoch + 1
        progress.grad_scaler = settings.precision.state_dict()
        progress.history.append(metrics)
        epochs_file.finished(epoch + 1)
        _log_epoch(logger, metrics, recipe.train.epochs, rank)
        # HParams every epoch and before the report: a trial that a scheduler stops (its process ends
        # inside or after the report) still gets its row, with its last metrics, in the HParams tab.
        logger.hparams(config.get("hparams") or recipe.to_dict(),
                       {k: v for k, v in metrics.items() if isinstance(v, float)}, step=progress.epoch)
        logger.flush()  # a stopped trial's process ends without closing the file
        # Only rank 0 evaluates: its verdict goes to every rank so that all of them stop together.
        stop = broadcast_object(_stop_reason(metrics, recipe.train.collapse_std))
        if stop:
            # Recorded in the last report (Tune's result, result.json) and stops here on every rank.
            metrics["stop_reason"] = stop
            if rank == 0:
                sys.stdout.write(f"stopping: {stop}\n")
        if stop and stop.startswith("diverged"):  # NaN weights: not worth a checkpoint
            session.report(metrics)
            break
        _report(session, method, optimizer, recipe, progress, metrics, rank, Path(config["run_dir"]),
                final=bool(stop), mirror=mirror)
        if stop:
            break
    logger.close()
    if mirror:
        mirror.sync()


def _stop_diverged(session: WorkerSession, why: str, epoch: int, resumed_from: int, rank: int,
                   logger: RunLogger, mirror: RunMirror | None) -> None:
    """The last report of a run whose loss became non-finite: the reason, no metrics to rank it by and
    no checkpoint (its weights are no use); earlier checkpoints stay. Every rank gets here together."""
    reason = f"diverged: {why}"
    if rank == 0:
        sys.stdout.write(f"stopping: {reason}\n")
        sys.stdout.flush()
    logger.flush()
    if mirror:
        mirror.sync()
    session.report({"epoch": epoch + 1, "stop_reason": reason, "resumed_from_epoch": resumed_from})


def _stop_reason(metrics: dict, threshold: float) -> str | None:
    """Why the run stops after an epoch, or None. Non-finite embeddings (rank 0's online eval): the
    weights became NaN in the epoch's last steps. ``embed_std`` below the threshold: a collapse, every
    image maps to nearly the same point, and more epochs will not undo it."""
    std = metrics.get("embed_std")
    if std is not None and not math.isfinite(std):
        return (f"diverged: non-finite embeddings (embed_std {std}) after epoch {metrics['epoch']}: "
                "lower optim.base_lr or check the data")
    if threshold <= 0 or std is None or not std < threshold:
        return None
    return f"collapsed: embed_std {std:.2g} < train.collapse_std {threshold:g} at epoch {metrics['epoch']}"


EVAL_METRICS = ("knn_top1", "knn_top5", "embed_std", "linear_top1")
PERF_METRICS = ("images_per_s", "data_wait_frac", "seconds", "eval_seconds", "peak_gpu_memory_gb")


def _log_epoch(logger: RunLogger, metrics: dict, epochs: int, rank: int) -> None:
    """TensorBoard scalars (train/, eval/, perf/) and one compact progress line from rank 0."""
    epoch = metrics["epoch"]
    for prefix, names in (("eval", EVAL_METRICS), ("perf", PERF_METRICS)):
        logger.scalars({n: metrics[n] for n in names if n in metrics}, step=epoch, prefix=prefix)
    logger.scalars({n: v for n, v in metrics.items()
                    if n not in EVAL_METRICS + PERF_METRICS + ("epoch", "resumed_from_epoch")},
                   step=epoch, prefix="train")
    logger.flush()
    if rank == 0:
        eta = (epochs - epoch) * metrics["seconds"]
        knn = f"  knn {metrics['knn_top1']:.3f}" if "knn_top1" in metrics else ""
        # Not print(): Ray Train V2 patches print in workers to log *and* tee it, so each line came twice.
        sys.stdout.write(f"epoch {epoch}/{epochs}  loss {metrics['loss']:.4f}{knn}  {metrics['images_per_s']:,.0f}"
                         f" img/s  data wait {metrics['data_wait_frac']:.0%}  ETA {eta / 60:.1f} min\n")
        sys.stdout.flush()


def _restore(method, optimizer, device, checkpoint, resume_from: str | None) -> tuple[Progress, bool]:
    """From the session's checkpoint (Ray Train after a worker-group restart, Tune after PBT's exploit
    or a restored sweep), else from ``--resume``'s, else fresh; and whether a checkpoint was restored."""
    if checkpoint is None and resume_from is not None:
        checkpoint = ray.train.Checkpoint.from_directory(resume_from)
    if checkpoint is None:
        return Progress(), False
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        method.load_state_dict(load_tensors(folder / MODEL, device))
        optimizer.load_state_dict(load_tensors(folder / "optimizer.pt", device))
        state = read_state(folder)
    return Progress(epoch=state["epoch"] + 1, step=state["step"], best_knn=state.get("best_knn", -1.0),
                    history=state.get("history", []), grad_scaler=state.get("grad_scaler", {})), True


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
        return cls(PixelNormalizer(recipe.data.mean, recipe.data.std, device), total_steps,
                   recipe.train.warmup_epochs * total_steps // recipe.train.epochs, peak,
                   peak * recipe.train.final_lr_fraction, recipe.train.grad_accum_steps,
                   MixedPrecision(recipe.train.precision, device), recipe.backbone.name.startswith("resnet"))


def _train_epoch(model, method, optimizer, recipe: Recipe, prepared, epoch: int, num_steps: int,
                 settings: StepSettings, progress: Progress, rank: int, world: int, device):
    """One pass over this rank's views; returns the epoch's metrics and a few uint8 views to log."""
    seed, batch = recipe.train.seed, recipe.train.batch_size // world
    dataset = rank_views_dataset(prepared, recipe.data.augment.view_specs(), channels=recipe.data.channels,
                                 seed=seed, epoch=epoch, rank=rank, world=world, limit=recipe.data.limit,
                                 num_cpus=recipe.data.cpus_per_task, label_selector=recipe.data.label_selector)
    on_gpu = device.type == "cuda"
    # Pinned host memory: the uint8 batch's copy to the GPU runs asynchronously with compute.
    batches = dataset.iter_torch_batches(batch_size=batch, drop_last=True, device=device, pin_memory=on_gpu,
                                         local_shuffle_buffer_size=SHUFFLE_BUFFER_BATCHES * batch,
                                         local_shuffle_seed=seed * 1_000_003 + epoch * 1009 + rank)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    sums: dict[str, float] = {}
    scheduled: dict[str, float] = {}
    sample: list[torch.Tensor] = []
    model.train()
    start = wait_start = time.perf_counter()
    waited = 0.0
    for index, data in enumerate(batches):
        if index == num_steps:
            break
        waited += time.perf_counter() - wait_start
        uint8_views = [data[f"view_{v}"] for v in range(len(data) - 1)]
        sample = sample or [v[:IMAGES_LOGGED] for v in uint8_views]
        out, stepped = _step(model, method, optimizer, uint8_views, index, epoch, settings, progress)
        scheduled = stepped or scheduled  # keep the last optimizer step's scheduled values
        for name, value in out.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        wait_start = time.perf_counter()
    seconds = time.perf_counter() - start
    metrics = {name: value / num_steps for name, value in sums.items()}
    metrics.update(scheduled)  # their values at the end of the epoch
    metrics.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], seconds=seconds,
                   images_per_s=num_steps * batch * world / seconds, data_wait_frac=waited / seconds)
    if on_gpu:
        metrics["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return metrics, sample


def _step(model, method, optimizer, uint8_views: list[torch.Tensor], index: int, epoch: int,
          settings: StepSettings, progress: Progress) -> tuple[dict, dict]:
    """Forward/backward of one batch; an optimizer step (and the method's schedules) every ``accum``."""
    views = [settings.normalizer.to_float(v, settings.channels_last) for v in uint8_views]
    set_lr(optimizer, warmup_cosine(progress.step, settings.total_steps, settings.warmup_steps,
                                    settings.peak_lr, settings.final_lr))
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
            raise NonFiniteLoss(f"non-finite loss ({loss}) at epoch {epoch + 1}, optimizer step "
                                f"{progress.step}: lower optim.base_lr or check the data")
        settings.precision.backward(out["loss"] / settings.accum)
    scheduled = {}
    if stepping:
        settings.precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        scheduled = method.on_step(progress.step, settings.total_steps)  # momentum, teacher temperature, EMA
        progress.step += 1
    return out, scheduled


def _log_images(logger: RunLogger, method, sample: list[torch.Tensor], normalizer: PixelNormalizer,
                epoch: int) -> None:
    """The first epoch's augmented views (what the model is trained on, worth one look), and for
    masked methods, each epoch, original | masked | reconstruction rows of the same images."""
    if not logger.enabled or not sample:
        return
    if epoch == 0:
        for v, views in enumerate(sample):
            logger.images(f"views/view_{v}", views.cpu(), step=0)
    if not hasattr(method, "reconstruct"):
        return
    images = normalizer.to_float(sample[0])
    pred, mask = method.reconstruct(images, generator=torch.Generator(images.device).manual_seed(0))
    rows = torch.cat([images, images * (1 - mask), images * (1 - mask) + pred * mask])
    logger.images("reconstructions", normalizer.to_uint8(rows).cpu(), step=epoch + 1, nrow=len(images))


def _report(session: WorkerSession, method, optimizer, recipe: Recipe, progress: Progress, metrics: dict,
            rank: int, run_dir: Path, final: bool = False, mirror: RunMirror | None = None) -> None:
    """Report the epoch's metrics (every rank) and, when due, rank 0's checkpoint. The run folder is
    mirrored to storage first: a scheduler may end the trial inside the report."""
    epoch = progress.epoch - 1
    due = final or (epoch + 1) % recipe.train.checkpoint_every == 0 or progress.epoch in (
        recipe.train.epochs, recipe.train.stop_at_epoch)
    if rank != 0 or not due:
        if mirror:
            mirror.sync()
        session.report(metrics)
        return
    knn = metrics.get("knn_top1", -1.0)
    improved = knn > progress.best_knn
    progress.best_knn = max(progress.best_knn, knn)
    state = {"epoch": epoch, "step": progress.step, "best_knn": progress.best_knn, "metrics": metrics,
             "history": progress.history, "recipe": recipe.to_dict(), "grad_scaler": progress.grad_scaler,
             "precision": progress.precision}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_checkpoint(Path(tmp) / "ckpt", method.state_dict(), optimizer.state_dict(), state)
        if improved:
            replace_atomically(folder, run_dir / "checkpoints" / "best")
        if mirror:
            mirror.sync()
        session.report(metrics, checkpoint=session.checkpoint(str(folder)))
