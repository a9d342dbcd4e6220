"""Frozen features of an encoder on a prepared split: extracted once through Ray Data, then cached.

An ``Encoder`` is what turns images into features for evaluation:

- a pretraining checkpoint: the network the method evaluates (``SSLMethod.evaluation_backbone``:
  DINO's teacher, everyone else's online backbone), in eval mode (BN running statistics);
- ``random init``: the same architecture with the recipe's seed and no training, the baseline a
  pretraining run has to beat;
- ``raw pixels``: the flattened normalised eval view, the other classic baseline (Fashion-MNIST's
  benchmark table: 85.5% kNN with k = 5 on raw pixels, Xiao et al. 2017).

Features of a (encoder, split, limit, eval view) combination are cached as ``features-<key>.pt``
(tensors only, loaded with ``weights_only=True``) so a probe with other options, a report or a
``--every`` series re-reads them instead of running the backbone again. The key covers the model
file's size and modification time, so a changed checkpoint is never matched to stale features.
The caller picks the folder: ``sslray eval`` uses ``RUN_DIR/eval/cache``, ``sslray report`` its own
``OUT/cache/<run>/`` (it never writes into the runs it reads).

The images come from ``sslray.eval.crops`` when their crops are small (decoded in this process once
and kept for the next encoder: the same crops, without starting a Ray Data pipeline per extraction),
else from a Ray Data pipeline.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sslray.data.augment import PixelNormalizer, ViewSpec
from sslray.data.pipeline import EpochViews, MapTasks, PreparedDataset, eval_dataset, open_prepared, views_dataset
from sslray.errors import UserError
from sslray.eval.crops import local_crops
from sslray.methods.registry import build_method
from sslray.recipe import Recipe, recipe_from_dict
from sslray.runs.checkpoint import (
    MODEL,
    checkpoint_folders,
    damaged_because,
    find_checkpoint,
    load_tensors,
    read_state,
)

EXTRACT_BATCH = 512


@dataclass(frozen=True)
class Encoder:
    """Something that maps images to features: a checkpoint, or one of the two baselines."""

    name: str  # "epoch 20", "random init", "raw pixels": shown in tables and legends
    kind: str  # "checkpoint" | "random" | "pixels"
    recipe: Recipe  # architecture, data geometry (eval view, channels, mean/std)
    checkpoint: Path | None = None
    epoch: int | None = None  # pretraining epochs behind the weights (0 for random init)

    def build(self, device: torch.device | str = "cpu") -> nn.Module:
        """The frozen feature network, in eval mode on ``device``."""
        if self.kind == "pixels":
            return nn.Flatten().to(device).eval()
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
            torch.manual_seed(self.recipe.train.seed)  # random init: the run's own initial weights
            method = build_method(self.recipe)
        if self.kind == "checkpoint":
            damaged = damaged_because(self.checkpoint)  # digests checked here, where tensors load: once
            if damaged is not None:
                raise UserError(f"{self.checkpoint}: damaged checkpoint ({damaged}); use another checkpoint of the run")
            try:
                method.load_state_dict(load_tensors(self.checkpoint / MODEL))
            except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise UserError(
                    f"{self.checkpoint / MODEL}: not a readable checkpoint of this recipe ({first})"
                ) from None
        return method.evaluation_backbone().to(device).eval()

    def cache_identity(self) -> dict:
        if self.kind != "checkpoint":
            return {
                "kind": self.kind,
                "recipe": {k: self.recipe.to_dict()[k] for k in ("method", "backbone")},
                "seed": self.recipe.train.seed,
            }
        stat = (self.checkpoint / MODEL).stat()
        return {
            "kind": self.kind,
            "model": str((self.checkpoint / MODEL).resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }


def checkpoint_encoder(folder: Path) -> Encoder:
    """The encoder of one checkpoint folder; a missing or corrupt ``state.json`` is a UserError."""
    try:
        state = read_state(folder)
        recipe = recipe_from_dict(state["recipe"])
        epoch = int(state["epoch"]) + 1
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{folder}: not a readable checkpoint (state.json: {err})") from None
    return Encoder(name=f"epoch {epoch}", kind="checkpoint", recipe=recipe, checkpoint=folder, epoch=epoch)


def find_encoder(run_or_checkpoint: Path) -> Encoder:
    """A run folder's best checkpoint (else its latest), or a checkpoint folder itself."""
    return checkpoint_encoder(find_checkpoint(Path(run_or_checkpoint)))


def series_encoders(run_dir: Path, every: int) -> list[Encoder]:
    """The run's checkpoints at pretraining epochs every, 2*every, ... up to its last epoch; an epoch
    whose checkpoint the run did not keep is a UserError naming it (and how to keep more)."""
    kept = {e.epoch: e for e in (checkpoint_encoder(f) for f in checkpoint_folders(Path(run_dir)))}
    if not kept:
        raise UserError(f"{run_dir}: no checkpoint found (expected {run_dir}/checkpoints/checkpoint_*/model.pt)")
    last = max(kept)
    wanted = list(range(every, last + 1, every))
    if not wanted:
        raise UserError(f"--every {every}: the run's last checkpoint is at epoch {last}; choose --every <= {last}")
    missing = [e for e in wanted if e not in kept]
    if missing:
        raise UserError(
            f"{run_dir}: no checkpoint kept for epoch(s) {', '.join(map(str, missing))} "
            f"(kept: {', '.join(map(str, sorted(kept)))}); pretrain with train.checkpoint_every "
            f"dividing {every} and train.keep_checkpoints large enough to keep them"
        )
    return [kept[e] for e in wanted]


def baseline_encoders(recipe: Recipe) -> list[Encoder]:
    return [Encoder("random init", "random", recipe, epoch=0), Encoder("raw pixels", "pixels", recipe)]


def cache_file(encoder: Encoder, prepared: PreparedDataset, limit: int | None, cache_dir: Path) -> Path:
    """Where ``extract_features`` keeps this extraction: ``cache_dir/features-<key>.pt``, the key a hash
    of everything the features depend on (the encoder's weights, the split, the limit, the eval view)."""
    data = encoder.recipe.data
    identity = {
        "encoder": encoder.cache_identity(),
        "split": str(Path(prepared.path).resolve()),
        "rows": prepared.num_rows,
        "limit": limit,
        "view": [data.eval_view.size, data.eval_view.crop_fraction],  # size resolved by recipe_from_dict
        "channels": data.channels,
        "mean": data.mean,
        "std": data.std,
    }
    key = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"features-{key}.pt"


@torch.no_grad()
def extract_features(
    encoder: Encoder,
    split: str,
    limit: int | None = None,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    where: str = "--data",
) -> tuple[Tensor, Tensor]:
    """Features [N, D] (float32, CPU) and labels [N] of the first ``limit`` images of a prepared split.

    Read from ``cache_dir`` when an identical extraction is there, else computed and written there."""
    prepared = open_prepared(split, where=where)
    recipe = encoder.recipe
    cached = cache_file(encoder, prepared, limit, cache_dir) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        stored = load_tensors(cached)
        return stored["features"], stored["labels"]

    network = encoder.build(device)
    normalizer = PixelNormalizer(recipe.data.mean, recipe.data.std, device)
    features, labels = [], []
    for images, batch_labels in _eval_crops(prepared, recipe, limit, device):
        features.append(network(normalizer.to_float(images)).float().cpu())
        labels.append(batch_labels.cpu())
    out = torch.cat(features), torch.cat(labels)
    if cached is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        torch.save({"features": out[0], "labels": out[1]}, partial)
        partial.rename(cached)  # a reader never sees half a file
    return out


def _eval_crops(
    prepared: PreparedDataset, recipe: Recipe, limit: int | None, device: torch.device | str
) -> Iterator[tuple[Tensor, Tensor]]:
    """(uint8 crops, labels) batches of the first ``limit`` images in file order: decoded in this
    process and kept when small (``sslray.eval.crops``), else streamed through Ray Data."""
    spec, channels = recipe.data.eval_view, recipe.data.channels
    crops = local_crops(prepared, spec, channels, limit)
    if crops is not None:
        for images, labels in zip(*(part.split(EXTRACT_BATCH) for part in crops)):
            yield images.to(device), labels
        return
    dataset = eval_dataset(prepared.path, spec, channels=channels, tasks=MapTasks.of(recipe.data))
    dataset.context.execution_options.preserve_order = True  # "the first N images": file order
    if limit is not None:
        dataset = dataset.limit(limit)
    for batch in dataset.iter_torch_batches(batch_size=EXTRACT_BATCH, device=device):
        yield batch["image"], batch["label"]


def probe_view(recipe: Recipe) -> ViewSpec:
    """Random-resized crop + horizontal flip, nothing else: the augmentation of linear probing and
    fine-tuning in MoCo / MAE (He et al. 2021, App. A.2), at the pretraining crop size."""
    return ViewSpec(size=recipe.data.eval_view.size, jitter_p=0.0, gray_p=0.0, blur_p=0.0)


@dataclass(frozen=True)
class Batching:
    """How ``augmented_batches`` cuts each epoch: the batch size and the seed of its augmentations
    and shuffle (a probe's or fine-tune's ``cfg.batch_size`` and ``cfg.seed``)."""

    batch_size: int = 256
    seed: int = 0  # with the epoch: the views and the local shuffle order


def augmented_batches(
    encoder: Encoder,
    split: str,
    keep_ids: list[str] | None,
    batching: Batching,
    device: torch.device | str = "cpu",
    network: nn.Module | None = None,
) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """``epoch -> (outputs, labels)`` batches of freshly augmented images of a split (only the rows in
    ``keep_ids`` when given), streamed by Ray Data and shuffled per epoch. With ``network`` (a frozen
    backbone) the outputs are its features, else the float images themselves (fine-tuning trains the
    network on them). Unlabelled rows are dropped."""
    recipe = encoder.recipe
    normalizer = PixelNormalizer(recipe.data.mean, recipe.data.std, device)
    batch_size, seed = batching.batch_size, batching.seed

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        views = EpochViews([probe_view(recipe)], channels=recipe.data.channels, seed=seed, epoch=epoch)
        dataset = views_dataset(split, views, MapTasks.of(recipe.data), keep_ids=keep_ids)
        for batch in dataset.iter_torch_batches(
            batch_size=batch_size,
            device=device,
            local_shuffle_buffer_size=4 * batch_size,
            local_shuffle_seed=seed * 1009 + epoch,
        ):
            keep = batch["label"] >= 0
            images = normalizer.to_float(batch["view_0"][keep])
            if network is not None:
                with torch.no_grad():
                    images = network(images).float()
            yield images, batch["label"][keep]

    return batches


def eval_batches(
    encoder: Encoder, split: str, limit: int | None, batch_size: int, device: torch.device | str = "cpu"
) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
    """``() -> (float images, labels)`` batches of the deterministic eval view of a split."""
    recipe = encoder.recipe
    normalizer = PixelNormalizer(recipe.data.mean, recipe.data.std, device)

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        dataset = eval_dataset(
            split, recipe.data.eval_view, channels=recipe.data.channels, tasks=MapTasks.of(recipe.data)
        )
        dataset.context.execution_options.preserve_order = True
        if limit is not None:
            dataset = dataset.limit(limit)
        for batch in dataset.iter_torch_batches(batch_size=batch_size, device=device):
            keep = batch["label"] >= 0
            yield normalizer.to_float(batch["image"][keep]), batch["label"][keep]

    return batches


def labelled(features: Tensor, labels: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Only the labelled rows; a split with none is a UserError (a probe needs labels)."""
    keep = labels >= 0
    if not bool(keep.any()):
        raise UserError(f"{what}: no labelled images (every label is missing); evaluation needs labels")
    return features[keep], labels[keep]


def num_classes_of(split: str, *label_sets: Tensor) -> int:
    classes = open_prepared(split).classes
    seen = max(int(labels.max()) for labels in label_sets) + 1
    return max(len(classes), seen) if classes else seen
