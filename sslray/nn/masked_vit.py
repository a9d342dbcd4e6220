"""What the masked methods (MAE, MACRL, I-JEPA) share on top of ``ViTBackbone``: the backbone check,
encoding the visible patches of a random mask, and pixel-space reconstructions for logging.

    vit = require_vit(backbone, "mae")                           # a UserError for any other backbone
    latent, mask, ids_restore = encode_masked(vit, images, 0.75)  # [N, 1 + L', D], [N, L], [N, L]
    pred_images, mask_images = reconstruct_images(vit, decoder, images, 0.75, norm_pix_loss=True)

Mask tokens never enter the encoder (He et al. 2021, §3): ``encode_masked`` encodes the visible
tokens only, and a ``MaskedPatchDecoder`` puts the mask tokens back with ``ids_restore``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslray.errors import UserError
from sslray.nn.masking import patchify, random_masking, unpatchify
from sslray.nn.vit import MaskedPatchDecoder, ViTBackbone


def require_vit(backbone: nn.Module, method: str) -> ViTBackbone:
    """Masked methods encode a subset of patch tokens, which only the ViT backbone can do."""
    if not isinstance(backbone, ViTBackbone):
        raise UserError(
            f"method {method} needs a ViT backbone (backbone.name: vit_tiny, vit_small or vit_base), "
            f"got {type(backbone).__name__}"
        )
    return backbone


def encode_masked(
    backbone: ViTBackbone, images: Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Patch-embed, randomly mask, encode visible tokens only -> (latent [N, 1+L', D], mask [N, L], ids_restore)."""
    tokens = backbone.patchify_embed(images)
    visible, mask, ids_restore = random_masking(tokens, mask_ratio, generator=generator)
    return backbone.encode(visible), mask, ids_restore


@torch.no_grad()
def reconstruct_images(
    backbone: ViTBackbone,
    decoder: MaskedPatchDecoder,
    images: Tensor,
    mask_ratio: float,
    norm_pix_loss: bool,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Pixel-space reconstruction of ``images`` [N, C, H, W] -> (pred_images, mask_images), both [N, C, H, W].

    ``mask_images`` is 1 on masked pixels. With ``norm_pix_loss`` the decoder predicts normalised patches;
    they are mapped back with each target patch's own mean and std (as in the MAE visualisation demo).
    To show "visible + reconstructed": ``images * (1 - mask_images) + pred_images * mask_images``.
    """
    was_training = backbone.training, decoder.training
    backbone.eval()
    decoder.eval()
    try:
        latent, mask, ids_restore = encode_masked(backbone, images, mask_ratio, generator)
        pred = decoder(latent, ids_restore)
    finally:
        backbone.train(was_training[0])
        decoder.train(was_training[1])
    p, c = backbone.patch_size, images.shape[1]
    if norm_pix_loss:
        target = patchify(images, p)
        pred = pred * (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    mask_patches = mask.unsqueeze(-1).expand(-1, -1, pred.shape[-1])
    grid = backbone.grid_size
    return unpatchify(pred, p, c, grid), unpatchify(mask_patches, p, c, grid)
