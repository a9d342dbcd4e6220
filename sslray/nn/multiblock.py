"""I-JEPA's multi-block masks: several target blocks and one context block per image, on the patch grid.

Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture" (sec. 3 "Targets" / "Context", App. A.1), as the official collator
(facebookresearch/ijepa ``src/masks/multiblock.py``) samples them:

* one target-block size (h, w) per batch: a scale s ~ U(target_scale) of the L = gh * gw patches and
  an aspect ratio a = h / w ~ U(aspect_ratio), then

      n = floor(s * L),   h = round(sqrt(n * a)),   w = round(sqrt(n / a))     (clipped to the grid)

  and ``num_targets`` independent uniform positions per image (target blocks may overlap);
* one context-block size per batch with scale ~ U(context_scale) and aspect ratio 1, one position per
  image, and every target patch removed from it (the context never sees a target patch);
* equal counts across the batch, so the index tensors stack: all target blocks share one size, and
  each context is cut to the smallest context of the batch by keeping its first patches in raster
  order (the official collator's ``cm[:min_keep_enc]``).

A context left with fewer than ``min_context`` patches is re-drawn at a new position (targets kept),
as the official collator does; after ``max_tries`` it becomes every patch outside the targets. The
official code then instead lets the context overlap the targets; here the context never contains a
target patch. (On a tiny grid the targets can tile the whole image; such an image gets new target
positions.)

Two small departures from the official code, both toward the paper's text: scale and aspect ratio are
independent draws (the official code reuses one uniform number for both), and a block may touch the
last row / column of the grid (the official ``randint(0, H - h)`` excludes it, and caps h at H - 1).

Everything is drawn on the CPU with ``generator`` (a CPU ``torch.Generator``, or the global RNG): a
few hundred integers per batch, and the per-batch counts must reach the host anyway to size tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class MultiBlockMasks(NamedTuple):
    """Patch indices (raster order, ``patchify`` / ``patchify_embed`` token order), int64 on the CPU."""

    context: Tensor  # [N, Kc]: ascending indices of the context patches, no target patch among them
    targets: Tensor  # [N, M, Kt]: ascending indices of each of the M target blocks, Kt = h * w


def block_size(
    grid_size: tuple[int, int],
    scale: tuple[float, float],
    aspect_ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """(h, w) of a block covering about ``s`` of the grid with h / w about ``a`` (formula in the module doc)."""
    gh, gw = grid_size
    u_scale, u_aspect = torch.rand(2, generator=generator).tolist()
    s = scale[0] + u_scale * (scale[1] - scale[0])
    a = aspect_ratio[0] + u_aspect * (aspect_ratio[1] - aspect_ratio[0])
    n = int(gh * gw * s)
    h = min(max(int(round(math.sqrt(n * a))), 1), gh)
    w = min(max(int(round(math.sqrt(n / a))), 1), gw)
    return h, w


def block_masks(
    shape: tuple[int, ...], h: int, w: int, grid_size: tuple[int, int], generator: torch.Generator | None = None
) -> np.ndarray:
    """``shape`` blocks of h x w patches at uniform positions -> bool [*shape, gh * gw] (True = in the block)."""
    gh, gw = grid_size
    tops = torch.randint(0, gh - h + 1, shape, generator=generator).numpy()[..., None]
    lefts = torch.randint(0, gw - w + 1, shape, generator=generator).numpy()[..., None]
    rows, cols = np.arange(gh), np.arange(gw)
    in_rows = (rows >= tops) & (rows < tops + h)  # [*shape, gh]
    in_cols = (cols >= lefts) & (cols < lefts + w)  # [*shape, gw]
    return (in_rows[..., :, None] & in_cols[..., None, :]).reshape(*shape, gh * gw)


@dataclass(frozen=True)
class MultiBlockConfig:
    """Block shapes and counts of ``sample_multiblock_masks``; the defaults are the paper's (App. A.1)."""

    num_targets: int = 4  # target blocks per image
    target_scale: tuple[float, float] = (0.15, 0.2)  # share of the grid per target block
    target_aspect_ratio: tuple[float, float] = (0.75, 1.5)  # height / width of the target blocks
    context_scale: tuple[float, float] = (0.85, 1.0)  # share of the grid of the context block (aspect 1)
    # A context with fewer patches is re-drawn: the official collator's min_keep default (its ImageNet
    # configs use 10 of 196 patches).
    min_context: int = 4


def sample_multiblock_masks(
    batch_size: int,
    grid_size: tuple[int, int],
    cfg: MultiBlockConfig | None = None,
    generator: torch.Generator | None = None,
    max_tries: int = 20,
) -> MultiBlockMasks:
    """Context and target patch indices for a batch of ``batch_size`` images on a ``grid_size`` patch grid,
    with the blocks ``cfg`` describes (the paper's by default).

    Returns ``MultiBlockMasks(context [N, Kc], targets [N, M, Kt])``. Raises ValueError when the targets
    of some image still cover its whole grid after ``max_tries`` new positions.
    """
    cfg = cfg or MultiBlockConfig()
    num_targets, min_context = cfg.num_targets, cfg.min_context
    if batch_size < 1 or num_targets < 1 or min_context < 1:
        raise ValueError(
            f"batch_size ({batch_size}), num_targets ({num_targets}) and min_context ({min_context}) must be >= 1"
        )
    # The boolean work is NumPy's: on [N, M, L] arrays torch's intra-op thread pool costs ~1000x the
    # arithmetic on a busy 2-core machine; the random numbers still come from ``generator``.
    th, tw = block_size(grid_size, cfg.target_scale, cfg.target_aspect_ratio, generator)
    ch, cw = block_size(grid_size, cfg.context_scale, (1.0, 1.0), generator)  # unit aspect ratio (App. A.1)
    targets = block_masks((batch_size, num_targets), th, tw, grid_size, generator)  # [N, M, L]
    outside_targets = ~targets.any(axis=1)  # [N, L]
    context = block_masks((batch_size,), ch, cw, grid_size, generator) & outside_targets
    short = context.sum(axis=1) < min_context
    for _ in range(max_tries):  # new positions for the contexts that the targets ate up
        if not short.any():
            break
        rows = short.nonzero()[0]
        context[rows] = block_masks((len(rows),), ch, cw, grid_size, generator) & outside_targets[rows]
        short = context.sum(axis=1) < min_context
    context[short] = outside_targets[short]  # last resort: every patch outside the targets
    for _ in range(max_tries):  # targets that tile a small grid leave nothing: new target positions
        empty = ~context.any(axis=1)
        if not empty.any():
            break
        rows = empty.nonzero()[0]
        targets[rows] = block_masks((len(rows), num_targets), th, tw, grid_size, generator)
        context[rows] = ~targets[rows].any(axis=1)
    keep = int(context.sum(axis=1).min())
    if keep == 0:
        raise ValueError(
            f"{num_targets} target blocks of {th}x{tw} patches kept covering a whole {grid_size[0]}x"
            f"{grid_size[1]} grid: no context patch left; use fewer or smaller targets"
        )
    context &= context.cumsum(axis=1) <= keep  # the first `keep` context patches of each image, in raster order
    # nonzero lists indices in row-major order: ascending patch indices within each image / block
    context_ids = context.nonzero()[1].reshape(batch_size, keep)
    target_ids = targets.nonzero()[2].reshape(batch_size, num_targets, th * tw)
    return MultiBlockMasks(torch.from_numpy(context_ids).long(), torch.from_numpy(target_ids).long())
