"""Online evaluation during pretraining (rank 0, every ``train.knn_every`` epochs), and the baselines a
result is judged against.

Backbone features of a labeled bank and a held-out query split (deterministic centre crops, capped by
``data.knn_bank_limit`` / ``data.knn_query_limit``) feed a weighted kNN (``sslray.eval.knn``);
``embed_std`` on the query features watches for collapse (-> 0). The crops never change, so they are
decoded once (one Ray Data pass per split) and kept as uint8 tensors: each later evaluation costs only
the forward passes, not a new pipeline (which took longer than a small epoch's training).

``baselines`` runs the same protocol on the recipe's backbone at random initialisation and on raw
pixels: a pretrained network is worth something only above both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sslray.data.augment import PixelNormalizer
from sslray.data.pipeline import MapTasks, eval_dataset, first_rows, make_eval_images, open_prepared
from sslray.eval.knn import KNNConfig, knn_accuracy
from sslray.eval.linear_probe import ProbeConfig, ProbeData, train_linear_probe
from sslray.methods.base import SSLMethod, embedding_std
from sslray.methods.registry import build_method
from sslray.recipe import Recipe

EVAL_BATCH = 256
# Decoded crops are kept up to this size (bank + queries); beyond it (large crops, large banks) they are
# decoded again for each evaluation. 28 px grayscale x 12,000 images is 9 MB; 224 px RGB, 1.8 GB.
MAX_KEPT_BYTES = 1 << 30
LOCAL_DECODE_BYTES = 256 << 20  # crops up to this size are decoded in-process, larger sets by Ray Data


@dataclass(frozen=True)
class EvalImages:
    images: Tensor  # uint8 [N, C, S, S] on the CPU: the split's deterministic eval crops
    labels: Tensor  # int64 [N]; -1 for unlabeled images


def decode_split(recipe: Recipe, path: str, limit: int | None) -> EvalImages:
    """The first ``limit`` eval crops of a prepared split (file order): decoded in this process when
    they are small (``LOCAL_DECODE_BYTES``: starting a Ray Data pipeline took 7 s for 1,500 crops of
    28 px that decode in a fraction of that), else in one pass of Ray Data."""
    data = recipe.data
    prepared = open_prepared(path)
    rows = prepared.num_rows if limit is None else min(limit, prepared.num_rows)
    if rows * data.channels * data.eval_view.size**2 <= LOCAL_DECODE_BYTES:
        parts = [
            make_eval_images(table, spec=data.eval_view, channels=data.channels)
            for table in first_rows(prepared, limit)
        ]
        images = torch.from_numpy(np.concatenate([part["image"] for part in parts]))
        return EvalImages(images, torch.from_numpy(np.concatenate([part["label"] for part in parts])).long())
    dataset = eval_dataset(path, data.eval_view, channels=data.channels, tasks=MapTasks.of(data))
    # "The first N images" in file order, as `sslray eval` takes them: the same bank for every trial.
    dataset.context.execution_options.preserve_order = True
    if limit is not None:
        dataset = dataset.limit(limit)
    images, labels = [], []
    for batch in dataset.iter_torch_batches(batch_size=EVAL_BATCH):
        images.append(batch["image"])
        labels.append(batch["label"])
    return EvalImages(torch.cat(images), torch.cat(labels).long())


class OnlineEval:
    """kNN (and optionally a linear probe) on the recipe's bank and query splits, for any embedding
    function; the splits are decoded on first use and kept (up to ``MAX_KEPT_BYTES``)."""

    def __init__(self, recipe: Recipe, device: torch.device | str = "cpu") -> None:
        self.recipe, self.device = recipe, torch.device(device)
        self.normalizer = PixelNormalizer(recipe.data.mean, recipe.data.std, self.device)
        self._kept: tuple[EvalImages, EvalImages] | None = None
        self.decodes = 0  # how many times the splits were decoded (1 when they are kept)

    @property
    def enabled(self) -> bool:
        return self.recipe.data.knn_bank is not None and self.recipe.data.knn_query is not None

    def splits(self) -> tuple[EvalImages, EvalImages]:
        if self._kept is not None:
            return self._kept
        data = self.recipe.data
        splits = (
            decode_split(self.recipe, data.knn_bank, data.knn_bank_limit),
            decode_split(self.recipe, data.knn_query, data.knn_query_limit),
        )
        self.decodes += 1
        if sum(split.images.numel() for split in splits) <= MAX_KEPT_BYTES:
            self._kept = splits
        return splits

    def features(self, embed: Callable[[Tensor], Tensor], split: EvalImages) -> Tensor:
        """``embed`` of every normalised crop: [N, D] float32 on the CPU."""
        chunks = split.images.split(EVAL_BATCH)
        return torch.cat([embed(self.normalizer.to_float(chunk.to(self.device))).float().cpu() for chunk in chunks])

    def evaluate(self, embed: Callable[[Tensor], Tensor], linear_probe: bool = False) -> dict[str, float]:
        """``knn_top1``, ``knn_top5`` and ``embed_std`` of ``embed``'s features; with ``linear_probe`` also
        ``linear_top1``: a ``train.linear_probe_epochs`` probe on the same features. {} without kNN splits."""
        if not self.enabled:
            return {}
        train = self.recipe.train
        bank_split, query_split = self.splits()
        with torch.no_grad():
            bank, query = self.features(embed, bank_split), self.features(embed, query_split)
        labeled = bank_split.labels >= 0  # an unlabeled row cannot vote
        bank, bank_labels, query_labels = bank[labeled], bank_split.labels[labeled], query_split.labels
        knn = KNNConfig(train.knn_k, train.knn_temperature)
        metrics = knn_accuracy(bank, bank_labels, query, query_labels, cfg=knn)
        metrics["embed_std"] = float(embedding_std(query))
        if linear_probe:
            cfg = ProbeConfig(epochs=train.linear_probe_epochs, batch_size=min(512, len(bank_labels)), seed=train.seed)
            num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
            probe_data = ProbeData.of_features((bank, bank_labels), (query, query_labels), num_classes, cfg)
            metrics["linear_top1"] = train_linear_probe(probe_data, cfg).history[-1]["val_top1"]
        return metrics

    def __call__(self, method: SSLMethod, linear_probe: bool = False) -> dict[str, float]:
        return self.evaluate(method.embed, linear_probe)

    def describe(self) -> str:
        """The protocol in words, e.g. "kNN k=200 T=0.1, bank 1000 x queries 500" (decodes the splits
        if no evaluation has yet)."""
        bank, query = self.splits()
        train = self.recipe.train
        return f"kNN k={train.knn_k} T={train.knn_temperature:g}, bank {len(bank.labels)} x queries {len(query.labels)}"


BASELINES = ("random-init", "raw-pixels")


def baselines(online: OnlineEval, linear_probe: bool = False) -> dict[str, dict]:
    """``online``'s metrics for its recipe's backbone at random initialisation (seeded with
    ``train.seed``) and for raw pixels (the normalised crop, flattened), keyed by ``BASELINES``."""
    recipe = online.recipe
    torch.manual_seed(recipe.train.seed)
    random_init = build_method(recipe).to(online.device)
    return {
        "random-init": online(random_init, linear_probe),
        "raw-pixels": online.evaluate(lambda images: images.flatten(1), linear_probe),
    }
