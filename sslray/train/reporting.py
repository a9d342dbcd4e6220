"""What a run leaves behind after each epoch: reports, checkpoints, TensorBoard logs, and why it stops.

``RunOutputs`` holds one rank's outlets: the session's ``report`` (Ray Train or Tune), rank 0's run
folder and TensorBoard writer, and the mirror of that folder in object storage. ``report`` sends the
epoch's metrics from every rank and, every ``checkpoint_every`` epochs (and at the last one), rank 0's
checkpoint: model, optimizer, epoch, step, best kNN, history, the resolved recipe and fp16's loss
scale; ``restore`` reads one back. ``stop_reason`` tells a collapsed or diverged run from a healthy
one after an epoch; ``stop_diverged`` is the last report of a run whose loss became non-finite.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray.train
import torch

from sslray.data.augment import PixelNormalizer
from sslray.recipe import Recipe
from sslray.runs.checkpoint import (
    MODEL,
    damaged_because,
    load_tensors,
    read_state,
    replace_atomically,
    write_checkpoint,
)
from sslray.runs.storage import RunMirror
from sslray.runs.tensorboard import RunLogger
from sslray.train.epoch import Learner, Progress
from sslray.train.session import WorkerSession

EVAL_METRICS = ("knn_top1", "knn_top5", "embed_std", "linear_top1")
PERF_METRICS = ("images_per_s", "data_wait_frac", "seconds", "eval_seconds", "peak_gpu_memory_gb")


@dataclass(frozen=True)
class RunOutputs:
    """Where one rank's results go. Only rank 0 writes files: the others' logger is disabled and they
    have no mirror."""

    session: WorkerSession
    recipe: Recipe
    run_dir: Path  # rank 0's run folder: checkpoints/best, TensorBoard, progress files
    logger: RunLogger
    mirror: RunMirror | None  # the run folder's copy in object storage (``storage``), synced every epoch

    def report(self, learner: Learner, metrics: dict, final: bool = False) -> None:
        """Report the epoch's metrics (every rank) and, when due, rank 0's checkpoint. The run folder is
        mirrored to storage first: a scheduler may end the trial inside the report."""
        recipe, progress, session = self.recipe, learner.progress, self.session
        epoch = progress.epoch - 1
        due = (
            final
            or (epoch + 1) % recipe.train.checkpoint_every == 0
            or progress.epoch in (recipe.train.epochs, recipe.train.stop_at_epoch)
        )
        if session.rank != 0 or not due:
            if self.mirror:
                self.mirror.sync()
            session.report(metrics)
            return
        knn = metrics.get("knn_top1", -1.0)
        improved = knn > progress.best_knn
        progress.best_knn = max(progress.best_knn, knn)
        state = {
            "epoch": epoch,
            "step": progress.step,
            "best_knn": progress.best_knn,
            "metrics": metrics,
            "history": progress.history,
            "recipe": recipe.to_dict(),
            "grad_scaler": progress.grad_scaler,
            "precision": progress.precision,
        }
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_checkpoint(
                Path(tmp) / "ckpt", learner.method.state_dict(), learner.optimizer.state_dict(), state
            )
            if improved:
                replace_atomically(folder, self.run_dir / "checkpoints" / "best")
            if self.mirror:
                self.mirror.sync()
            session.report(metrics, checkpoint=session.checkpoint(str(folder)))

    def stop_diverged(self, why: str, epoch: int, resumed_from: int) -> None:
        """The last report of a run whose loss became non-finite: the reason, no metrics to rank it by and
        no checkpoint (its weights are no use); earlier checkpoints stay. Every rank gets here together."""
        reason = f"diverged: {why}"
        if self.session.rank == 0:
            sys.stdout.write(f"stopping: {reason}\n")
            sys.stdout.flush()
        self.logger.flush()
        if self.mirror:
            self.mirror.sync()
        self.session.report({"epoch": epoch + 1, "stop_reason": reason, "resumed_from_epoch": resumed_from})

    def log_epoch(self, metrics: dict) -> None:
        """TensorBoard scalars (train/, eval/, perf/) and one compact progress line from rank 0."""
        logger, epochs, epoch = self.logger, self.recipe.train.epochs, metrics["epoch"]
        for prefix, names in (("eval", EVAL_METRICS), ("perf", PERF_METRICS)):
            logger.scalars({n: metrics[n] for n in names if n in metrics}, step=epoch, prefix=prefix)
        logger.scalars(
            {
                n: v
                for n, v in metrics.items()
                if n not in EVAL_METRICS + PERF_METRICS + ("epoch", "resumed_from_epoch")
            },
            step=epoch,
            prefix="train",
        )
        logger.flush()
        if self.session.rank == 0:
            eta = (epochs - epoch) * metrics["seconds"]
            knn = f"  knn {metrics['knn_top1']:.3f}" if "knn_top1" in metrics else ""
            # Not print(): Ray Train V2 patches print in workers to log *and* tee it, so each line came twice.
            sys.stdout.write(
                f"epoch {epoch}/{epochs}  loss {metrics['loss']:.4f}{knn}  "
                f"{metrics['images_per_s']:,.0f} img/s  data wait {metrics['data_wait_frac']:.0%}  "
                f"ETA {eta / 60:.1f} min\n"
            )
            sys.stdout.flush()

    def log_images(self, method, sample: list[torch.Tensor], normalizer: PixelNormalizer, epoch: int) -> None:
        """The first epoch's augmented views (what the model is trained on, worth one look), and for
        masked methods, each epoch, original | masked | reconstruction rows of the same images."""
        logger = self.logger
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


RANKED_METRICS = ("knn_top1", "knn_top5", "linear_top1")  # higher is better: best and epoch of best kept


def best_of(curve: list[tuple[int, float]], mode: str = "max") -> tuple[float | None, int | None]:
    """The best value of an ``(epoch, value)`` curve sorted by epoch and the first epoch that reached it
    (``mode`` "max" or "min"); ``(None, None)`` for an empty curve."""
    values = [value for _, value in curve]
    if not values:
        return None, None
    best = max(values) if mode == "max" else min(values)
    return best, next(epoch for epoch, value in curve if value == best)


def hparams_metrics(history: list[dict]) -> dict[str, float]:
    """The HParams columns after the last epoch of ``history``: its float metrics (the last values), and
    for each evaluation metric its best value and the epoch of that best (``best_knn_top1``,
    ``best_epoch_knn_top1``): a run may peak before its last epoch, and the leaderboard ranks by the best."""
    metrics = {k: v for k, v in history[-1].items() if isinstance(v, float)}
    for name in RANKED_METRICS:
        best, best_epoch = best_of([(e["epoch"], e[name]) for e in history if isinstance(e.get(name), float)])
        if best is not None:
            metrics[f"best_{name}"], metrics[f"best_epoch_{name}"] = best, float(best_epoch)
    return metrics


def stop_reason(metrics: dict, threshold: float) -> str | None:
    """Why the run stops after an epoch, or None. Non-finite embeddings (rank 0's online eval): the
    weights became NaN in the epoch's last steps. ``embed_std`` below the threshold: a collapse, every
    image maps to nearly the same point, and more epochs will not undo it."""
    std = metrics.get("embed_std")
    if std is not None and not math.isfinite(std):
        return (
            f"diverged: non-finite embeddings (embed_std {std}) after epoch {metrics['epoch']}: "
            "lower optim.base_lr or check the data"
        )
    if threshold <= 0 or std is None or not std < threshold:
        return None
    return f"collapsed: embed_std {std:.2g} < train.collapse_std {threshold:g} at epoch {metrics['epoch']}"


def restore(method, optimizer, device, checkpoint, resume_from: str | None) -> tuple[Progress, bool]:
    """From the session's checkpoint (Ray Train after a worker-group restart or when a run is resumed in
    its folder, Tune after PBT's exploit or a restored sweep), else from ``--resume``'s (the newest intact
    one), else fresh; and whether a checkpoint was restored. A damaged one (``damaged_because``: bytes
    changed since written) is passed over with a warning, never loaded."""
    candidates = [c for c in (checkpoint, resume_from and ray.train.Checkpoint.from_directory(resume_from)) if c]
    for candidate in candidates:
        with candidate.as_directory() as folder:
            folder = Path(folder)
            reason = damaged_because(folder)
            if reason is not None:
                print(f"warning: ignoring checkpoint {candidate.path}: {reason}", file=sys.stderr)
                continue
            method.load_state_dict(load_tensors(folder / MODEL, device))
            optimizer.load_state_dict(load_tensors(folder / "optimizer.pt", device))
            state = read_state(folder)
        break
    else:
        return Progress(), False
    return Progress(
        epoch=state["epoch"] + 1,
        step=state["step"],
        best_knn=state.get("best_knn", -1.0),
        history=state.get("history", []),
        grad_scaler=state.get("grad_scaler", {}),
    ), True
