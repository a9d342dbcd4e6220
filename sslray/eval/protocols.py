"""The three evaluation protocols on one encoder: weighted kNN, linear probe, fine-tuning.

Each takes an ``Encoder`` (a checkpoint or a baseline, ``sslray.eval.features``), an ``EvalSplits``
(a labelled train split and a held-out val split), the ``EvalOptions`` of ``sslray eval`` (each reads
its own section) and an ``EvalContext`` (device, feature cache, per-epoch callback), and returns a
flat result dict (the row of a table, JSON-ready) or, for the trained protocols, a ``Trained`` with
that row, the per-epoch history and the val predictions that the per-class report and the confusion
matrix need. ``sslray.eval.registry`` lists them by name.

- kNN and the linear probe on cached features run on frozen features extracted once;
- the linear probe with ``augment=True`` trains on random-resized-crop + flip views of the train
  split passed through the frozen backbone every epoch, as MoCo v3 and MAE do (slower: the backbone
  runs every epoch);
- fine-tuning trains backbone and head on augmented views, with layer-wise lr decay for ViTs and
  optionally a fraction of the labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sslray.data.pipeline import open_prepared, split_index
from sslray.errors import UserError
from sslray.eval.features import (
    Batching,
    Encoder,
    augmented_batches,
    eval_batches,
    extract_features,
    labelled,
    num_classes_of,
)
from sslray.eval.finetune import Classifier, FinetuneConfig, FinetuneData, finetune, label_subset
from sslray.eval.knn import KNNConfig, knn_accuracy
from sslray.eval.linear_probe import ProbeConfig, ProbeData, train_linear_probe
from sslray.locations import absolute
from sslray.recipe import Recipe


@dataclass
class EvalSplits:
    """Labelled images to fit on and held-out images to score, both prepared splits."""

    train: str
    val: str
    train_limit: int | None = None  # first N images of each, in file order (None: all)
    val_limit: int | None = None

    @classmethod
    def of(cls, encoder: Encoder, data_root: str | None, train_limit: int | None, val_limit: int | None) -> EvalSplits:
        """``DATA/train`` + ``DATA/test`` (else ``DATA/val``) when ``--data`` is given, else the run's
        own kNN bank and query splits with its own limits (``data.knn_bank_limit`` / ``knn_query_limit``):
        the online protocol's images. A limit of 0 (``--train-limit all``) takes every image."""
        if data_root is not None:
            root = Path(absolute(data_root))  # Ray Data's tasks read it from their own working folder
            val = root / "test" if (root / "test").exists() or not (root / "val").exists() else root / "val"
            splits = cls(str(root / "train"), str(val), train_limit or None, val_limit or None)
        else:
            data = encoder.recipe.data
            if data.knn_bank is None or data.knn_query is None:
                raise UserError(
                    "the run's recipe has no data.knn_bank / data.knn_query; "
                    "pass --data PREPARED (a folder with train/ and test/ splits)"
                )
            train_limit = data.knn_bank_limit if train_limit is None else train_limit
            val_limit = data.knn_query_limit if val_limit is None else val_limit
            splits = cls(data.knn_bank, data.knn_query, train_limit or None, val_limit or None)
        open_prepared(splits.train, where="--data (train split)")
        open_prepared(splits.val, where="--data (val split)")
        return splits

    def describe(self) -> str:
        """E.g. "bank data/fmnist/train (first 1000) x queries data/fmnist/test (first 500)"."""
        first = lambda limit: f"first {limit}" if limit else "all"  # noqa: E731
        return f"bank {self.train} ({first(self.train_limit)}) x queries {self.val} ({first(self.val_limit)})"


@dataclass
class KNNOptions:
    # None: the run's own online protocol (train.knn_k, train.knn_temperature; 200 and 0.1 by default,
    # Wu et al. 2018), so `sslray eval` reproduces the number its leaderboard shows. DINO / solo-learn
    # report ImageNet kNN with k=20, T=0.07: pass those to compare with their tables.
    k: int | None = None
    temperature: float | None = None

    def validate(self) -> None:
        if self.k is not None and self.k < 1:
            raise UserError(f"--k: {self.k} is out of range; need at least 1 neighbour")
        if self.temperature is not None and not self.temperature > 0:
            raise UserError(f"--temperature: {self.temperature} is out of range; need > 0")

    def resolved(self, recipe: Recipe) -> KNNOptions:
        """These options with the run's own values where none were given."""
        return KNNOptions(
            k=self.k if self.k is not None else recipe.train.knn_k,
            temperature=self.temperature if self.temperature is not None else recipe.train.knn_temperature,
        )


@dataclass
class EvalOptions:
    """What ``sslray eval`` / ``sslray report`` evaluate, and each protocol's own options."""

    protocol: str = "linear"  # a name in sslray.eval.registry.PROTOCOLS
    data: str | None = None  # a prepared root with train/ and test/; None: the run's kNN splits
    train_limit: int | None = None
    val_limit: int | None = None
    every: int | None = None  # probe checkpoints at epochs every, 2*every, ...
    augment: bool = False  # linear probe on augmented images through the frozen backbone
    knn: KNNOptions = field(default_factory=KNNOptions)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass(frozen=True)
class EvalContext:
    """Where a protocol runs, apart from what it computes."""

    device: torch.device | str = "cpu"
    cache_dir: Path | None = None  # features cached here (None: extracted every time)
    on_epoch: Callable[[dict], None] | None = None  # trained protocols call it with each epoch's history


def features_of(encoder: Encoder, splits: EvalSplits, device, cache_dir: Path | None):
    train = labelled(
        *extract_features(encoder, splits.train, splits.train_limit, device, cache_dir, where="--data (train split)"),
        what=splits.train,
    )
    val = labelled(
        *extract_features(encoder, splits.val, splits.val_limit, device, cache_dir, where="--data (val split)"),
        what=splits.val,
    )
    return train, val


def row(encoder: Encoder, protocol: str, **values) -> dict:
    return {
        "encoder": encoder.name,
        "epoch": encoder.epoch,
        "method": encoder.recipe.method_name,
        "backbone": encoder.recipe.backbone.name,
        "protocol": protocol,
        **values,
    }


def run_knn(encoder: Encoder, splits: EvalSplits, options: EvalOptions, context: EvalContext = EvalContext()) -> dict:
    knn = options.knn.resolved(encoder.recipe)
    (train_x, train_y), (val_x, val_y) = features_of(encoder, splits, context.device, context.cache_dir)
    num_classes = num_classes_of(splits.train, train_y, val_y)
    scores = knn_accuracy(train_x, train_y, val_x, val_y, num_classes, KNNConfig(k=knn.k, temperature=knn.temperature))
    return row(
        encoder,
        "knn",
        k=knn.k,
        temperature=knn.temperature,
        val_top1=scores["knn_top1"],
        val_top5=scores["knn_top5"],
        train_images=len(train_y),
        val_images=len(val_y),
    )


@dataclass
class Trained:
    """A trained protocol's outcome: the table row, per-epoch history, and val labels/predictions."""

    result: dict
    history: list[dict]
    val_labels: torch.Tensor
    val_predictions: torch.Tensor
    num_classes: int


def run_linear(
    encoder: Encoder, splits: EvalSplits, options: EvalOptions, context: EvalContext = EvalContext()
) -> Trained:
    cfg, augment, device = options.probe, options.augment, context.device
    cfg.validate("linear probe")
    (train_x, train_y), (val_x, val_y) = features_of(encoder, splits, device, context.cache_dir)
    num_classes = num_classes_of(splits.train, train_y, val_y)
    if augment:
        ids, _ = split_index(splits.train)
        keep_ids = ids[: splits.train_limit] if splits.train_limit is not None else None
        batches = augmented_batches(
            encoder, splits.train, keep_ids, Batching(cfg.batch_size, cfg.seed), device, network=encoder.build(device)
        )
        data = ProbeData(batches, train_x.shape[1], num_classes, math.ceil(len(train_y) / cfg.batch_size), val_x, val_y)
    else:
        data = ProbeData.of_features((train_x, train_y), (val_x, val_y), num_classes, cfg)
    probe = train_linear_probe(data, cfg, on_epoch=context.on_epoch, device=device)
    last = probe.history[-1]
    result = row(
        encoder,
        "linear",
        augment=augment,
        epochs=cfg.epochs,
        train_top1=last["train_top1"],
        val_top1=last["val_top1"],
        val_top5=last["val_top5"],
        train_images=len(train_y),
        val_images=len(val_y),
        config=asdict(cfg),
    )
    return Trained(result, probe.history, val_y, probe.val_predictions, num_classes)


def run_finetune(
    encoder: Encoder, splits: EvalSplits, options: EvalOptions, context: EvalContext = EvalContext()
) -> Trained:
    cfg, device = options.finetune, context.device
    cfg.validate("fine-tune")
    if encoder.kind == "pixels":
        raise UserError("fine-tuning needs a network; raw pixels have none")
    ids, labels = split_index(splits.train)
    ids, labels = ids[: splits.train_limit], torch.as_tensor(labels[: splits.train_limit])
    chosen = label_subset(labels, cfg.label_fraction, cfg.seed)  # stratified by class, labelled rows only
    if len(chosen) == 0:
        raise UserError(f"{splits.train}: no labelled images to fine-tune on")
    keep_ids = [ids[i] for i in chosen.tolist()]
    val_labels = torch.as_tensor(split_index(splits.val)[1][: splits.val_limit])
    num_classes = num_classes_of(splits.train, labels[chosen], val_labels[val_labels >= 0])
    model = Classifier(encoder.build(device), num_classes).to(device)
    train_batches = augmented_batches(encoder, splits.train, keep_ids, Batching(cfg.batch_size, cfg.seed), device)
    val_batches = eval_batches(encoder, splits.val, splits.val_limit, 512, device)
    data = FinetuneData(train_batches, math.ceil(len(keep_ids) / cfg.batch_size), val_batches)
    tuned = finetune(model, data, cfg, on_epoch=context.on_epoch, device=device)
    last = tuned.history[-1]
    result = row(
        encoder,
        "finetune",
        label_fraction=cfg.label_fraction,
        epochs=cfg.epochs,
        train_top1=last["train_top1"],
        val_top1=last["val_top1"],
        val_top5=last["val_top5"],
        train_images=len(keep_ids),
        val_images=int((val_labels >= 0).sum()),
        config=asdict(cfg),
    )
    return Trained(result, tuned.history, tuned.val_labels, tuned.val_predictions, num_classes)
