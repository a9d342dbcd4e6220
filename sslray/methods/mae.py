"""MAE (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners"), models_mae.py style.

Mask a large random subset of patches, encode only the visible ones with the ViT, let a light decoder
fill in mask tokens and predict the pixels of every patch; the loss is the MSE on masked patches.

    forward_encoder(images) -> latent [N, 1 + L', D], mask [N, L], ids_restore [N, L]
    forward_decoder(latent, ids_restore) -> pred [N, L, p*p*C]
    forward_loss(images, pred, mask) -> scalar

``views[0]`` is the only view used (MAE needs no second augmentation: random resized crop + flip).
``reconstruct(images)`` gives pixel-space predictions and the mask for logging images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sslray.errors import UserError
from sslray.losses.reconstruction import MaskedMSELoss
from sslray.methods.base import SSLMethod, embedding_std
from sslray.nn.masked_vit import encode_masked, reconstruct_images, require_vit
from sslray.nn.masking import patchify
from sslray.nn.vit import BlockStackConfig, MaskedPatchDecoder
from sslray.sections import check_range


@dataclass(frozen=True)
class MAEConfig:
    mask_ratio: float = 0.75  # share of patches removed; 75% is best for fine-tuning and linear probing (paper Fig. 5)
    decoder_dim: int = 128  # decoder width; paper 512 at 224 px (Table 1b); narrower for 28-32 px / <=64 patches
    decoder_depth: int = 2  # decoder blocks; paper 8 (Table 1a: 1 block already fine-tunes as well)
    decoder_num_heads: int = 4  # paper 16 at width 512; keeps a head width of 32 here
    norm_pix_loss: bool = True  # per-patch normalised pixels as target (paper Table 1d, §A.1: better representations)

    def __post_init__(self) -> None:
        check_range("method.mask_ratio", self.mask_ratio, 0.0, 1.0, high_open=True)
        check_range("method.decoder_dim", self.decoder_dim, 1, None)
        check_range("method.decoder_depth", self.decoder_depth, 1, None)
        check_range("method.decoder_num_heads", self.decoder_num_heads, 1, None)
        if self.decoder_dim % self.decoder_num_heads or self.decoder_dim % 4:
            raise UserError(
                f"method.decoder_dim: {self.decoder_dim} must be divisible by 4 (sin-cos position "
                f"embedding) and by method.decoder_num_heads ({self.decoder_num_heads})"
            )


class MAE(SSLMethod):
    """Masked autoencoder on a ``ViTBackbone``; the backbone's CLS token is the evaluation feature."""

    needs_vit = True

    def __init__(self, backbone: nn.Module, cfg: MAEConfig | None = None):
        super().__init__(require_vit(backbone, "mae"))
        self.cfg = cfg = cfg or MAEConfig()
        vit = self.backbone
        self.decoder = MaskedPatchDecoder(
            vit.num_features,
            vit.grid_size,
            patch_pixels=vit.patch_size**2 * vit.in_chans,
            cfg=BlockStackConfig(cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_num_heads),
        )
        self.reconstruction_loss = MaskedMSELoss(norm_pix_loss=cfg.norm_pix_loss)

    def forward_encoder(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return encode_masked(self.backbone, images, self.cfg.mask_ratio, generator)

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        return self.decoder(latent, ids_restore)

    def forward_loss(self, images: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        return self.reconstruction_loss(pred, patchify(images, self.backbone.patch_size), mask)

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        images = views[0]
        latent, mask, ids_restore = self.forward_encoder(images)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(images, pred, mask)
        # embed_std of the CLS token of the masked input: a cheap collapse indicator (no extra pass)
        return {"loss": loss, "recon_loss": loss.detach(), "embed_std": embedding_std(latent[:, 0])}

    def reconstruct(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(pred_images, mask_images) [N, C, H, W] for logging; see ``sslray.nn.masked_vit.reconstruct_images``."""
        return reconstruct_images(
            self.backbone, self.decoder, images, self.cfg.mask_ratio, self.cfg.norm_pix_loss, generator
        )
