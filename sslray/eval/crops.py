"""The eval crops of a small prepared split, decoded in this process once and kept for the next encoder.

``sslray eval`` and ``sslray report`` extract features of the same bank and queries for every encoder
(each run of a sweep, each checkpoint of ``--every``, both baselines). Starting a Ray Data pipeline for
that costs seconds every time (7 s for 1,500 crops of 28 px that decode in a fraction of a second,
``sslray.train.online_eval``), so a split whose crops fit in ``LOCAL_DECODE_BYTES`` is decoded here,
exactly as the online kNN decodes its splits: the same ``make_eval_images`` on the same first rows in
file order, hence the same uint8 crops as the Ray Data path. Larger splits stream through Ray Data.

The last ``KEPT`` splits stay in memory (a bank and its queries), keyed by everything the crops depend
on: the split's files and row groups, the limit, the eval view and the channels.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from sslray.data.augment import EvalViewSpec
from sslray.data.pipeline import PreparedDataset, first_rows, make_eval_images

LOCAL_DECODE_BYTES = 256 << 20  # the online kNN's bound: 28 px grayscale x 70,000 images is 55 MB
KEPT = 2  # a bank and its queries

_kept: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()


def local_crops(
    prepared: PreparedDataset, spec: EvalViewSpec, channels: int, limit: int | None
) -> tuple[Tensor, Tensor] | None:
    """uint8 crops ``[N, C, S, S]`` and int64 labels ``[N]`` (-1: unlabelled) of the first ``limit`` rows,
    decoded in this process; None when they would take more than ``LOCAL_DECODE_BYTES``."""
    rows = prepared.num_rows if limit is None else min(limit, prepared.num_rows)
    if rows * channels * spec.size**2 > LOCAL_DECODE_BYTES:
        return None
    key = (prepared.path, tuple(prepared.row_groups), rows, spec.size, spec.crop_fraction, channels)
    if key in _kept:
        _kept.move_to_end(key)
        return _kept[key]
    parts = [make_eval_images(table, spec=spec, channels=channels) for table in first_rows(prepared, limit)]
    images = torch.from_numpy(np.concatenate([part["image"] for part in parts]))
    labels = torch.from_numpy(np.concatenate([part["label"] for part in parts])).long()
    _kept[key] = (images, labels)
    while len(_kept) > KEPT:
        _kept.popitem(last=False)
    return images, labels
