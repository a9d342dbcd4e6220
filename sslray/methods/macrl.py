"""MACRL (Yao, Desai & Palaniswami 2022, "Masked Contrastive Representation Learning", arXiv:2211.06012).

An asymmetric siamese network that trains one ViT with masked image modelling and contrastive learning:

* main branch: a strongly augmented, heavily masked view -> ViT on the visible patches -> CLS ->
  projector -> query q; a shared light decoder (1 linear + 1 attention block) reconstructs the masked
  patches from the same latent (L1 loss, as in the paper);
* momentum branch: a weakly augmented, unmasked view -> momentum (EMA) copy of ViT + projector -> key k,
  no gradient (MoCo, He et al. 2020; momentum cosine-scheduled to 1 as in BYOL / MoCo v3).

    loss = alpha * InfoNCE(q, k) + L1_masked(decoder(latent), patches)

The paper runs an encoder-decoder in both branches with "weaker data corruptions" in the second one;
here the weak branch is unmasked, its encoder is the momentum copy and only the main branch decodes.

View convention: ``views[0]`` is the strong view, ``views[1]`` the weak one. With ``symmetric=True``
(default) both views also take the other role (MoCo v3's symmetrised loss, Chen et al. 2021, alg. 1):
both are masked and encoded by the online ViT in one pass, both are keyed by the momentum ViT in one
pass, and the contrastive and reconstruction terms are the means of the two directions. With
``symmetric=False`` only views[0] is masked and only views[1] is keyed (half the compute).
Negatives: the other keys of the global batch, or a MoCo memory queue when ``queue_size > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sslray.errors import UserError
from sslray.losses.infonce import InfoNCELoss, MemoryQueue
from sslray.losses.reconstruction import MaskedL1Loss
from sslray.methods.base import MomentumSSLMethod, embedding_std
from sslray.nn import dist
from sslray.nn.heads import ProjectionHead
from sslray.nn.masked_vit import encode_masked, reconstruct_images, require_vit
from sslray.nn.masking import patchify
from sslray.nn.momentum import build_target
from sslray.nn.vit import BlockStackConfig, MaskedPatchDecoder
from sslray.sections import check_range


@dataclass(frozen=True)
class MACRLConfig:
    mask_ratio: float = 0.75  # main branch; the paper only asks for a "higher" ratio there: MAE's 75% (He et al. 2021)
    temperature: float = 0.2  # InfoNCE tau; 0.2 as MoCo v2 / v3 (the paper builds on MoCo's contrastive loss)
    momentum: float = 0.99  # EMA base of the momentum branch, cosine to final_momentum (MoCo v3 ViT setting)
    final_momentum: float = 1.0  # BYOL / MoCo v3 schedule end; = momentum for a constant EMA (MoCo v2)
    alpha: float = 1.0  # weight of the contrastive term against the L1 reconstruction term; 1 = equal weight
    queue_size: int = 0  # memory bank of past keys as negatives (MoCo v2 uses 65536); 0 = in-batch keys (MoCo v3)
    symmetric: bool = True  # also mask views[1] and key views[0] (MoCo v3 symmetrised loss; 2x compute)
    norm_pix_loss: bool = True  # per-patch normalised pixel targets (MAE §A.1)
    decoder_dim: int = 128  # width of the shared light decoder
    decoder_depth: int = 1  # "one linear layer and one attention block" decoder
    decoder_num_heads: int = 4  # head width 32
    proj_hidden_dim: int = 2048  # projector MLP hidden width (MoCo v2 head: 2048 -> 128, Chen et al. 2020b)
    proj_dim: int = 128  # projector output, where InfoNCE is computed
    proj_layers: int = 2  # linear layers in the projector

    def __post_init__(self) -> None:
        check_range("method.mask_ratio", self.mask_ratio, 0.0, 1.0, high_open=True)
        check_range("method.temperature", self.temperature, 0.0, None, low_open=True)
        check_range("method.momentum", self.momentum, 0.0, 1.0)
        check_range("method.final_momentum", self.final_momentum, 0.0, 1.0)
        check_range("method.alpha", self.alpha, 0.0, None)
        check_range("method.queue_size", self.queue_size, 0, None)
        check_range("method.decoder_dim", self.decoder_dim, 1, None)
        check_range("method.decoder_depth", self.decoder_depth, 1, None)
        check_range("method.decoder_num_heads", self.decoder_num_heads, 1, None)
        check_range("method.proj_hidden_dim", self.proj_hidden_dim, 1, None)
        check_range("method.proj_dim", self.proj_dim, 1, None)
        check_range("method.proj_layers", self.proj_layers, 1, None)
        if self.decoder_dim % self.decoder_num_heads or self.decoder_dim % 4:
            raise UserError(
                f"method.decoder_dim: {self.decoder_dim} must be divisible by 4 (sin-cos position "
                f"embedding) and by method.decoder_num_heads ({self.decoder_num_heads})"
            )


class MACRL(MomentumSSLMethod):
    """Masked contrastive learning on a ``ViTBackbone``: forward(views) -> loss, recon_loss,
    contrastive_loss, pos_top1, embed_std; on_step updates the momentum branch."""

    needs_vit = True

    def __init__(self, backbone: nn.Module, cfg: MACRLConfig | None = None):
        cfg = cfg or MACRLConfig()
        super().__init__(require_vit(backbone, "macrl"), cfg.momentum, cfg.final_momentum)
        self.cfg = cfg
        vit = self.backbone
        self.projector = ProjectionHead(vit.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers)
        self.target_backbone = build_target(self.backbone)
        self.target_projector = build_target(self.projector)
        self.decoder = MaskedPatchDecoder(
            vit.num_features,
            vit.grid_size,
            patch_pixels=vit.patch_size**2 * vit.in_chans,
            cfg=BlockStackConfig(cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_num_heads),
        )
        self.infonce = InfoNCELoss(cfg.temperature)
        self.reconstruction_loss = MaskedL1Loss(norm_pix_loss=cfg.norm_pix_loss)
        self.queue = MemoryQueue(cfg.proj_dim, cfg.queue_size) if cfg.queue_size > 0 else None

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    @torch.no_grad()
    def forward_momentum(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Unmasked weak view(s) -> (momentum backbone features [N, D], keys [N, proj_dim]), no gradient."""
        features = self.target_backbone(images)
        return features, self.target_projector(features)

    def forward(self, views: list[Tensor]) -> dict[str, Tensor]:
        if len(views) < 2:
            raise ValueError(f"MACRL needs two views (views[0] strong, views[1] weak), got {len(views)}")
        strong, weak = views[0], views[1]  # any further views (local crops) are not used
        n = strong.shape[0]
        masked_input = torch.cat([strong, weak]) if self.cfg.symmetric else strong
        key_input = torch.cat([weak, strong]) if self.cfg.symmetric else weak

        # Main branch: visible patches only -> latent; CLS -> query, all tokens -> decoder.
        latent, mask, ids_restore = encode_masked(self.backbone, masked_input, self.cfg.mask_ratio)
        queries = self.projector(latent[:, 0])
        pred = self.decoder(latent, ids_restore)
        recon_loss = self.reconstruction_loss(pred, patchify(masked_input, self.backbone.patch_size), mask)

        # Momentum branch: row i of key_input is the other view of row i of masked_input.
        features, keys = self.forward_momentum(key_input)
        negatives = self.queue.negatives if self.queue is not None else None
        losses, top1s = zip(*(self.infonce(q, k, negatives) for q, k in zip(queries.split(n), keys.split(n))))
        contrastive_loss = torch.stack(losses).mean()
        pos_top1 = torch.stack(top1s).mean()
        if self.queue is not None:
            self.queue.enqueue(dist.gather(keys))

        loss = self.cfg.alpha * contrastive_loss + recon_loss
        return {
            "loss": loss,
            "recon_loss": recon_loss.detach(),
            "contrastive_loss": contrastive_loss.detach(),
            "pos_top1": pos_top1,
            "embed_std": embedding_std(features[:n]),
        }

    def reconstruct(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(pred_images, mask_images) [N, C, H, W] from the main branch; see ``masked_vit.reconstruct_images``."""
        return reconstruct_images(
            self.backbone, self.decoder, images, self.cfg.mask_ratio, self.cfg.norm_pix_loss, generator
        )
