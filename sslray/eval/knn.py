"""Weighted k-nearest-neighbour classification on frozen features: the online ``knn_top1`` monitor.

Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", sec. 3.4:
a query is compared by cosine similarity with every labelled feature of a bank; its k most similar
neighbours vote for their class, neighbour i with weight

    w_i = exp(s_i / T)

so close neighbours count far more than distant ones. Defaults k = 200, T = 0.1 are those of the
MoCo CIFAR-10 demo (facebookresearch/moco, colab notebook) and lightly's ``knn_predict``, the usual
online monitor on small datasets like ours. Wu et al. themselves use k = 200 with their training
temperature T = 0.07; DINO (Caron et al. 2021, ``eval_knn.py``) and solo-learn use the same vote with
k = 20, T = 0.07 on ImageNet, so pass those to compare with their tables.

Bank labels must be real classes: a label < 0 (an unlabelled image, see the prepared-data format in
docs/architecture.md) is a ``ValueError`` rather than silently dropped, because a bank that is mostly unlabelled
is a data bug the caller should see. Select the labelled rows first: ``features[labels >= 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


def _check_labels(labels: Tensor, num_classes: int, name: str) -> Tensor:
    """``labels`` as int64, after checking every one is a class id in [0, num_classes)."""
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    unlabelled = int((labels < 0).sum())
    if unlabelled:
        raise ValueError(
            f"{name} has {unlabelled} negative labels (unlabelled images); kNN needs a labelled bank, "
            f"so pass only the labelled rows, e.g. features[labels >= 0], labels[labels >= 0]"
        )
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"{name} has label {int(labels.max())}, but num_classes is {num_classes}")
    return labels.long()


@dataclass(frozen=True)
class KNNConfig:
    k: int = 200  # neighbours that vote (MoCo CIFAR-10 demo, lightly; DINO: 20 on ImageNet)
    temperature: float = 0.1  # T of the vote weight exp(s / T) (Wu et al. 2018 and DINO: 0.07)
    chunk_size: int = 1024  # queries per similarity matrix: memory O(chunk_size * N)
    topk: tuple[int, ...] = (1, 5)  # knn_accuracy reports knn_top{j} for each j


@torch.no_grad()
def knn_predict(
    bank_features: Tensor,
    bank_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    cfg: KNNConfig = KNNConfig(),
) -> Tensor:
    """Class scores of each query from a similarity-weighted vote of its k nearest bank features.

    Shapes: ``bank_features`` [N, D], ``bank_labels`` [N] (class ids in [0, num_classes)),
    ``query_features`` [M, D] -> ``scores`` [M, num_classes], float32 on the features' device.

    ``scores[m, c]`` is class c's share of query m's total vote ``sum_i exp(s_i / T)`` over its
    ``min(k, N)`` nearest neighbours (rows sum to 1; classes no neighbour voted for score 0). Sharing
    rather than raw sums lets us subtract each row's top similarity before ``exp``: raw weights
    overflow float32 once 1 / T > 88 (T < 0.0113), shares never do.

    Queries are processed ``chunk_size`` at a time, so memory is O(chunk_size * N), not O(M * N).
    Features may be any float dtype; similarities are computed in float32 because T = 0.1 multiplies
    an error of 0.004 in s (bfloat16's rounding near 1) into a 4% error in the weight.
    """
    if bank_features.dim() != 2 or query_features.dim() != 2:
        raise ValueError(
            f"features must be [N, D] and [M, D], got {tuple(bank_features.shape)} and {tuple(query_features.shape)}"
        )
    if bank_features.shape[1] != query_features.shape[1]:
        raise ValueError(f"bank has {bank_features.shape[1]} feature dims, queries {query_features.shape[1]}")
    if bank_labels.shape[:1] != bank_features.shape[:1]:
        raise ValueError(f"{bank_features.shape[0]} bank features but bank_labels has shape {tuple(bank_labels.shape)}")
    if bank_features.shape[0] == 0:
        raise ValueError("the bank is empty: kNN needs at least one labelled feature")
    if num_classes < 1 or cfg.k < 1 or cfg.chunk_size < 1:
        raise ValueError(f"num_classes, k and chunk_size must be >= 1, got {num_classes}, {cfg.k}, {cfg.chunk_size}")
    if cfg.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
    bank_labels = _check_labels(bank_labels, num_classes, "bank_labels").to(bank_features.device)

    bank = F.normalize(bank_features.float(), dim=1)  # [N, D]
    k = min(cfg.k, bank.shape[0])
    scores = []
    for queries in query_features.split(cfg.chunk_size):
        similarity = F.normalize(queries.float(), dim=1) @ bank.T  # [c, N] cosine similarities
        top_similarity, top_index = similarity.topk(k, dim=1)  # [c, k], most similar first
        # exp((s - s_max) / T) = exp(s / T) * const per row: the same shares, and every weight <= 1.
        weights = ((top_similarity - top_similarity[:, :1]) / cfg.temperature).exp()
        votes = torch.zeros(queries.shape[0], num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[top_index], weights)  # each neighbour adds to its class
        scores.append(votes / votes.sum(dim=1, keepdim=True))
    if not scores:  # no queries
        return torch.zeros(0, num_classes, device=bank.device)
    return torch.cat(scores)


def knn_accuracy(
    bank_features: Tensor,
    bank_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    num_classes: int | None = None,
    cfg: KNNConfig = KNNConfig(),
) -> dict[str, float]:
    """Top-k accuracies of the weighted kNN classifier, e.g. ``{"knn_top1": 0.81, "knn_top5": 0.98}``.

    Values are fractions in [0, 1]. ``num_classes`` defaults to the largest label (bank or query) + 1.
    A ``knn_top{j}`` (j in ``cfg.topk``) is reported only when there are at least j classes (top-5 of 3
    classes is meaningless). A query counts as a top-j hit only if its class is among the j best scores *and* got
    a vote: with few classes voted for, ``topk`` would otherwise fill the j slots with tied zero-score
    classes and reward guesses no neighbour made.
    """
    if query_labels.shape[:1] != query_features.shape[:1]:
        raise ValueError(f"{query_features.shape[0]} queries but query_labels has shape {tuple(query_labels.shape)}")
    if query_features.shape[0] == 0:
        raise ValueError("no queries: accuracy of an empty set is undefined")
    if num_classes is None:
        num_classes = max(int(labels.max()) for labels in (bank_labels, query_labels) if labels.numel()) + 1
    query_labels = _check_labels(query_labels, num_classes, "query_labels")
    scores = knn_predict(bank_features, bank_labels, query_features, num_classes, cfg)

    ranked_scores, ranked_classes = scores.topk(min(max(cfg.topk), num_classes), dim=1)  # [M, j_max]
    hit = (ranked_classes == query_labels.to(scores.device)[:, None]) & (ranked_scores > 0)
    return {f"knn_top{j}": hit[:, :j].any(dim=1).float().mean().item() for j in cfg.topk if j <= num_classes}
