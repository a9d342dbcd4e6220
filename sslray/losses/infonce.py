"""Contrastive losses: NT-Xent (SimCLR), InfoNCE with in-batch or queued negatives (MoCo), and the
MoCo memory queue.

Both losses L2-normalise their inputs and return ``(loss, pos_top1)``, where ``pos_top1`` is the share
of anchors whose most similar candidate is their positive (positive-pair retrieval accuracy, the
metric ``pos_top1``). Negatives from other ranks are gathered through ``sslray.nn.dist``, so on one
process the losses are exactly the single-device formulas.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sslray.nn import dist


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy (Chen et al. 2020, SimCLR, eq. 1).

    For the 2N views of a batch (``z0[i]`` and ``z1[i]`` are two views of image i), each view is an
    anchor; its positive is the other view of the same image, every other view of the (global) batch
    is a negative:

        loss = mean_a -log( exp(sim(a, pos(a)) / T) / sum_{b != a} exp(sim(a, b) / T) )

    with ``sim`` the cosine similarity and the sum over the 2 * N * world_size - 1 other views.
    Views from other ranks are gathered with gradient, so every rank's loss trains every rank's rows.

    Shapes: ``z0``, ``z1``: [N, D] (any float dtype) -> float32 scalar loss, scalar pos_top1.
    Collapsed embeddings (all equal) give loss = log(2 * N * world_size - 1).
    """

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z0: Tensor, z1: Tensor) -> tuple[Tensor, Tensor]:
        n = z0.shape[0]
        local = F.normalize(torch.cat([z0, z1]), dim=1)  # [2N, D]: view 0 rows, then view 1 rows
        z0_all = dist.gather_with_grad(local[:n])  # [W*N, D]
        z1_all = dist.gather_with_grad(local[n:])
        candidates = torch.cat([z0_all, z1_all])  # [2*W*N, D]
        # The similarities in the inputs' dtype (bf16 on tensor cores under autocast), the softmax in
        # float32: a bf16 log-sum-exp over thousands of columns loses the loss's last digits.
        logits = (local @ candidates.T).float() / self.temperature  # [2N, 2*W*N]

        # Row j = (view v, image i) sits at column v*W*N + offset + i; its positive is the other view.
        total = z0_all.shape[0]
        image = torch.arange(n, device=z0.device) + dist.rank() * n
        self_cols = torch.cat([image, image + total])
        positive_cols = torch.cat([image + total, image])
        rows = torch.arange(2 * n, device=z0.device)
        is_self = torch.zeros_like(logits, dtype=torch.bool).index_put_((rows, self_cols), torch.tensor(True))
        logits = logits.masked_fill(is_self, float("-inf"))  # a view is not its own candidate
        loss = F.cross_entropy(logits, positive_cols)
        pos_top1 = (logits.argmax(dim=1) == positive_cols).float().mean()
        return loss, pos_top1.detach()


class InfoNCELoss(nn.Module):
    """InfoNCE of a query against its key and a set of negatives (Oord et al. 2018; He et al. 2020).

        loss = mean_i -log( exp(q_i . k_i / T) / (exp(q_i . k_i / T) + sum_n exp(q_i . n / T)) )

    on L2-normalised vectors. Negatives:

    * ``negatives=None`` (MoCo v3, Chen et al. 2021, alg. 1): the keys of the other images of the global
      batch; keys are gathered across ranks (with gradient if they carry one) and the logits are
      [N, W*N] with the positive of query i at column rank * N + i.
    * ``negatives`` [K, D] (MoCo v2, Chen et al. 2020b): a queue of past keys; logits are
      [N, 1 + K] with the positive in column 0.

    Shapes: ``query``, ``key``: [N, D], ``negatives``: [K, D] or None (any float dtype) -> float32 scalar
    loss, scalar pos_top1.
    """

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> tuple[Tensor, Tensor]:
        query = F.normalize(query, dim=1)
        key = F.normalize(key, dim=1)
        if negatives is None:
            keys = dist.gather_with_grad(key) if key.requires_grad else dist.gather(key)
            logits = query @ keys.T
            labels = torch.arange(query.shape[0], device=query.device) + dist.rank() * query.shape[0]
        else:
            positive = (query * key).sum(dim=1, keepdim=True)  # [N, 1]
            logits = torch.cat([positive, query @ F.normalize(negatives, dim=1).T], dim=1)
            labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        logits = logits.float() / self.temperature  # softmax in float32, as in NTXentLoss
        loss = F.cross_entropy(logits, labels)
        pos_top1 = (logits.argmax(dim=1) == labels).float().mean()
        return loss, pos_top1.detach()


class MemoryQueue(nn.Module):
    """FIFO queue of the last ``size`` keys (MoCo, He et al. 2020, sec. 3.2), stored as a buffer so it
    is checkpointed with the model.

    ``enqueue(keys [B, D])`` overwrites the oldest rows with L2-normalised ``keys``; ``negatives`` is a
    copy of the queue [size, D] (a copy, because the queue changes in place before the loss's backward
    pass reads it). Starts filled with random unit vectors, as the MoCo reference code does.
    """

    def __init__(self, dim: int, size: int = 65536):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    @property
    def negatives(self) -> Tensor:
        return self.queue.clone()

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        keys = F.normalize(keys.detach(), dim=1)[-self.size :]  # more keys than room: keep the newest
        start = int(self.pointer)
        rows = (torch.arange(keys.shape[0], device=keys.device) + start) % self.size
        self.queue[rows] = keys.to(self.queue.dtype)
        self.pointer.fill_((start + keys.shape[0]) % self.size)
