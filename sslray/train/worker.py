"""``train_loop_per_worker``: what every Ray Train worker runs for one pretraining run.

Per epoch: this rank's views (``rank_views_dataset``: reproducible, fresh per epoch), uint8 -> float
normalisation on the device, forward/backward with mixed precision (``sslray.train.precision``: bf16,
or fp16 with a gradient scaler) and gradient accumulation,
per-step lr (warm-up + cosine) and the method's own schedules (``on_step``: momentum, teacher
temperature, EMA): ``sslray.train.epoch``. Then online evaluation on rank 0 (weighted kNN, embed_std)
and a report (``session.report``: Ray Train or Tune) with the metrics and, every ``checkpoint_every``
epochs, a checkpoint (model, optimizer, epoch, step, resolved recipe): ``sslray.train.reporting``.

A non-finite loss (averaged over the ranks, so that all of them see it at the same step) ends the run
cleanly: a last report with ``stop_reason`` "diverged: ..." and no checkpoint, like a collapse. It is
not an error, because Ray's restart-on-failure would only meet the same NaN again. Rank 0 keeps
``progress.json`` and, after a restart, records in ``restarts.jsonl`` how many epochs are trained
again (``sslray.runs.restarts``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from sslray.cluster import no_progress_bars
from sslray.data.pipeline import open_prepared, steps_per_epoch
from sslray.methods.registry import build_method
from sslray.nn.backbones import compile_backbones
from sslray.nn.dist import broadcast_object
from sslray.nn.optim import build_optimizer
from sslray.recipe import recipe_from_dict
from sslray.runs.restarts import EpochProgress
from sslray.runs.storage import RunMirror
from sslray.runs.tensorboard import RunLogger, run_status
from sslray.train.data_wait import DataWait
from sslray.train.epoch import Learner, NonFiniteLoss, RankData, StepSettings, train_epoch
from sslray.train.online_eval import OnlineEval
from sslray.train.reporting import RunOutputs, hparams_metrics, restore, stop_reason
from sslray.train.session import WorkerSession


def train_loop_per_worker(config: dict) -> None:
    """The ``TorchTrainer`` entry point: the loop on a Ray Train worker."""
    from sslray.train.session import RayTrainSession

    run_worker(config, RayTrainSession())


def run_worker(config: dict, session: WorkerSession) -> None:
    """Pretrain ``config["recipe"]`` in ``config["run_dir"]`` (rank 0 logs there). ``config["hparams"]``,
    when given (a sweep's sampled knobs), is what the TensorBoard HParams tab shows; else the recipe."""
    recipe = recipe_from_dict(config["recipe"])
    no_progress_bars()  # after Ray Train has set the driver's DataContext here; before any dataset
    rank, world, device = session.rank, session.world, session.device
    if config.get("torch_threads"):  # the measured plan's share of the cores, not Ray's CPU count
        torch.set_num_threads(config["torch_threads"])
    torch.manual_seed(recipe.train.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)

    method = build_method(recipe)
    if recipe.train.sync_batchnorm and world > 1:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if recipe.train.compile:
        # Before DDP wraps the model; compiled lazily at the first step (that step takes longer).
        compile_backbones(method)
    model = session.prepare_model(method)
    optimizer = build_optimizer(method, recipe.optim, recipe.train.batch_size)
    progress, restored = restore(method, optimizer, device, session.get_checkpoint(), config.get("resume_from"))
    epochs_file = EpochProgress(Path(config["run_dir"]) if rank == 0 else None)
    epochs_file.record_start(progress.epoch, restored)

    prepared = open_prepared(recipe.data.path)
    batch_per_worker = recipe.train.batch_size // world
    steps = [
        steps_per_epoch(
            prepared,
            seed=recipe.train.seed,
            epoch=e,
            world=world,
            batch_per_worker=batch_per_worker,
            limit=recipe.data.limit,
        )
        for e in range(recipe.train.epochs)
    ]
    if min(steps) == 0:
        raise ValueError(
            f"data.path: {prepared.num_rows} images give each of {world} workers less than one "
            f"batch of {batch_per_worker}; lower train.batch_size or add data"
        )
    settings = StepSettings.of(recipe, sum(steps) // recipe.train.grad_accum_steps, device)
    settings.precision.load_state_dict(progress.grad_scaler)
    progress.precision = settings.precision.name
    learner = Learner(model, method, optimizer, settings, progress)
    wait = DataWait(recipe.data.label_selector if rank == 0 else None)  # one line per run, not one per rank
    data = RankData(recipe, prepared, rank, world, device, wait)
    if rank == 0:
        sys.stdout.write(
            f"training on {world} x {device.type}"
            f"{f' ({torch.get_num_threads()} torch threads)' if device.type == 'cpu' else ''}"
            f", precision {settings.precision.name}"
            f"{', compiled backbones' if recipe.train.compile else ''}\n"
        )
    # Scalars are logged at step = epoch number; on resume, drop anything past the checkpoint's epoch.
    logger = RunLogger(
        config["run_dir"] if rank == 0 else None, resume_from_step=progress.epoch + 1 if progress.epoch else None
    )
    # Results in object storage: rank 0 trains in a node-local folder and copies it there every epoch
    # (Ray Train V2 persists checkpoints only; other artifacts are the loop's own business).
    mirror = RunMirror(Path(config["run_dir"]), config["storage"]) if rank == 0 and config.get("storage") else None
    outputs = RunOutputs(session, recipe, Path(config["run_dir"]), logger, mirror)
    online_eval = OnlineEval(recipe, device)  # rank 0 decodes the kNN splits at its first evaluation, once
    last_epoch = recipe.train.stop_at_epoch or recipe.train.epochs
    resumed_from = progress.epoch  # 0 for a fresh run; reported so a sweep can tell restores apart
    if progress.history and progress.epoch >= last_epoch:
        # Restored with nothing left to train: PBT cloned a trial that had already finished, or a
        # restart came after the last checkpoint. Report the restored model's last metrics once, so
        # the trial's results end at its final epoch (with its own config) instead of silently ending.
        metrics = {**progress.history[-1], "resumed_from_epoch": resumed_from}
        outputs.report(learner, metrics, final=True)
    stop = None
    for epoch in range(progress.epoch, last_epoch):
        # Reseeded per (epoch, rank): random masking etc. repeat exactly whether or not the run was resumed.
        torch.manual_seed(recipe.train.seed * 1_000_003 + epoch * 1009 + rank)
        epochs_file.started(epoch + 1)
        try:
            metrics, sample = train_epoch(learner, data, epoch, steps[epoch])
        except NonFiniteLoss as diverged:
            outputs.stop_diverged(str(diverged), epoch, resumed_from)
            stop = "diverged"
            break
        outputs.log_images(method, sample, settings.normalizer, epoch)
        probe_now = epoch + 1 == recipe.train.epochs and recipe.train.linear_probe_epochs > 0
        if rank == 0 and (probe_now or recipe.train.knn_every and (epoch + 1) % recipe.train.knn_every == 0):
            eval_start = time.perf_counter()
            metrics.update(online_eval(method, linear_probe=probe_now))
            metrics["eval_seconds"] = time.perf_counter() - eval_start
        metrics["resumed_from_epoch"] = resumed_from
        progress.epoch = epoch + 1
        progress.grad_scaler = settings.precision.state_dict()
        progress.history.append(metrics)
        epochs_file.finished(epoch + 1)
        outputs.log_epoch(metrics)
        # HParams every epoch and before the report: a trial that a scheduler stops (its process ends
        # inside or after the report) still gets its row, with its last metrics, in the HParams tab.
        logger.hparams(
            config.get("hparams") or recipe.to_dict(), hparams_metrics(progress.history), step=progress.epoch
        )
        logger.flush()  # a stopped trial's process ends without closing the file
        # Only rank 0 evaluates: its verdict goes to every rank so that all of them stop together.
        stop = broadcast_object(stop_reason(metrics, recipe.train.collapse_std))
        if stop:
            # Recorded in the last report (Tune's result, result.json) and stops here on every rank.
            metrics["stop_reason"] = stop
            if rank == 0:
                sys.stdout.write(f"stopping: {stop}\n")
        if stop and stop.startswith("diverged"):  # NaN weights: not worth a checkpoint
            session.report(metrics)
            break
        outputs.report(learner, metrics, final=bool(stop))
        if stop:
            break
    # The HParams table's status (a sweep trial that a scheduler stops never gets here: the sweep writes it).
    logger.session_end(run_status(stop, progress.epoch >= last_epoch), step=progress.epoch)
    logger.close()
    if mirror:
        mirror.sync()
