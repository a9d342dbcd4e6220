"""Online evaluation during pretraining (rank 0, every ``train.knn_every`` epochs).

Backbone features of a labeled bank and a held-out query split (deterministic eval crops from Ray
Data, capped by ``data.knn_bank_limit`` / ``data.knn_query_limit``) feed a weighted kNN
(``sslray.eval.knn``); ``embed_std`` on the query features watches for collapse (-> 0).
"""

from __future__ import annotations

import torch

from sslray.data.augment import PixelNormalizer
from sslray.data.pipeline import MapTasks, eval_dataset
from sslray.eval.knn import KNNConfig, knn_accuracy
from sslray.eval.linear_probe import ProbeConfig, ProbeData, train_linear_probe
from sslray.methods.base import SSLMethod, embedding_std
from sslray.recipe import Recipe

EVAL_BATCH = 256


def embed_split(
    method: SSLMethod, recipe: Recipe, path: str, limit: int | None, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, num_features] (on CPU) and labels [N] of a prepared split."""
    data = recipe.data
    dataset = eval_dataset(path, data.eval_view, channels=data.channels, tasks=MapTasks.of(data))
    if limit is not None:
        dataset = dataset.limit(limit)
    normalizer = PixelNormalizer(data.mean, data.std, device)
    features, labels = [], []
    for batch in dataset.iter_torch_batches(batch_size=EVAL_BATCH, device=device):
        features.append(method.embed(normalizer.to_float(batch["image"])).float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(features), torch.cat(labels)


def online_knn(method: SSLMethod, recipe: Recipe, device, linear_probe: bool = False) -> dict[str, float]:
    """``knn_top1`` (and ``knn_top5``) of the current backbone, plus ``embed_std``; {} when no kNN splits.
    With ``linear_probe``, also ``linear_top1``: a ``train.linear_probe_epochs`` probe on the same features."""
    data, train = recipe.data, recipe.train
    if data.knn_bank is None or data.knn_query is None:
        return {}
    bank, bank_labels = embed_split(method, recipe, data.knn_bank, data.knn_bank_limit, device)
    query, query_labels = embed_split(method, recipe, data.knn_query, data.knn_query_limit, device)
    labeled = bank_labels >= 0  # an unlabeled row cannot vote
    bank, bank_labels = bank[labeled], bank_labels[labeled]
    metrics = knn_accuracy(bank, bank_labels, query, query_labels, cfg=KNNConfig(train.knn_k, train.knn_temperature))
    metrics["embed_std"] = float(embedding_std(query))
    if linear_probe:
        cfg = ProbeConfig(epochs=train.linear_probe_epochs, batch_size=min(512, len(bank_labels)), seed=train.seed)
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
        probe_data = ProbeData.of_features((bank, bank_labels), (query, query_labels), num_classes, cfg)
        probe = train_linear_probe(probe_data, cfg)
        metrics["linear_top1"] = probe.history[-1]["val_top1"]
    return metrics
