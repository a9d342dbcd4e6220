"""Random patch masking and (un)patchify, as in facebookresearch/mae ``models_mae.py``.

Masking is per-sample shuffling: sort uniform noise, keep the first ``len_keep`` indices. Sorting is
cheap and exact (every sample keeps the same number of patches, so the visible tokens form a dense
[N, L', D] tensor and the encoder needs no padding or attention mask) (He et al. 2021, §3).
"""

from __future__ import annotations

import torch
from torch import Tensor


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept at ``mask_ratio``: round(L * (1 - r)) (half up), at least one so the encoder sees something."""
    return max(1, int(num_patches * (1.0 - mask_ratio) + 0.5))


def random_masking(
    x: Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a random subset of tokens per sample.

    Args:
        x: [N, L, D] tokens.
        mask_ratio: share of tokens removed, in [0, 1).
        generator: optional RNG (on ``x``'s device) for reproducible masks.

    Returns:
        x_visible: [N, L', D] kept tokens in shuffled order, L' = ``num_visible(L, mask_ratio)``.
        mask: [N, L] float in the original token order, 0 = kept, 1 = removed.
        ids_restore: [N, L] indices that undo the shuffle: gathering the shuffled sequence
            [x_visible, removed tokens] with ``ids_restore`` gives the original order.
    """
    n, length, dim = x.shape
    len_keep = num_visible(length, mask_ratio)
    noise = torch.rand(n, length, device=x.device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    # float32 even under autocast: a bf16 mask would round the masked-patch count in the loss's denominator
    mask = torch.ones(n, length, device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # back to the original order
    return x_visible, mask, ids_restore


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """[N, C, H, W] -> [N, L, p*p*C], patches in raster order, pixels (row, col, channel) inside a patch."""
    n, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of patch size {p}")
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(x: Tensor, patch_size: int, channels: int, grid_size: tuple[int, int] | None = None) -> Tensor:
    """[N, L, p*p*C] -> [N, C, H, W], the inverse of ``patchify``; ``grid_size`` defaults to square."""
    n, length, _ = x.shape
    p = patch_size
    if grid_size is None:
        side = int(round(length**0.5))
        grid_size = (side, side)
    gh, gw = grid_size
    if gh * gw != length:
        raise ValueError(f"{length} patches do not fill a {gh}x{gw} grid")
    x = x.reshape(n, gh, gw, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, gh * p, gw * p)
