"""Vision Transformer backbone (timm) that can also encode a subset of patch tokens.

``ViTBackbone`` wraps ``timm.models.vision_transformer.VisionTransformer`` (never pretrained) and adds
the two entry points masked methods need, in the style of facebookresearch/mae ``models_mae.py``:

    tokens = vit.patchify_embed(images)          # [N, L, D] patch tokens + position embedding
    visible, mask, ids_restore = random_masking(tokens, 0.75)
    latent = vit.encode(visible)                 # [N, 1 + L', D]: CLS first, after the final norm

so an MAE/MACRL encoder only ever sees visible patches (mask tokens never enter the encoder, MAE §3).
``forward(images)`` is timm's own path and returns the pooled CLS token [N, num_features]; encoding
all tokens with ``encode(patchify_embed(x))[:, 0]`` gives the same numbers (tested).

The position embedding is the fixed 2-D sin-cos table of MAE (He et al. 2021, ``pos_embed.py``;
Vaswani et al. 2017 frequencies), with a zero row for the CLS token; it is not trained, so it stays
meaningful at any mask ratio and is identical in online and momentum copies.

Also here: MAE's ``MaskedPatchDecoder`` and I-JEPA's ``JEPAPredictor``, which both place mask tokens
at patch positions given by that table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from sslray.errors import UserError

# name -> (embed_dim, depth, num_heads): timm's vit_{tiny,small,base}_patch16_224 configs
# (Touvron et al. 2021 for tiny/small, Dosovitskiy et al. 2021 for base); MLP ratio 4 throughout.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


def sincos_pos_embed_1d(embed_dim: int, positions: Tensor) -> Tensor:
    """[M] positions -> [M, embed_dim] = [sin(pos * w_k), cos(pos * w_k)], w_k = 10000^(-2k/embed_dim)."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed_2d(embed_dim: int, grid_size: tuple[int, int], cls_token: bool = False) -> Tensor:
    """Fixed 2-D sin-cos table [(1 if cls_token) + gh*gw, embed_dim], rows in raster (row-major) order.

    Half the channels encode the row, half the column (MAE ``get_2d_sincos_pos_embed``); the CLS row,
    if asked for, is zeros. ``embed_dim`` must be divisible by 4.
    """
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}")
    gh, gw = grid_size
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    table = torch.cat([sincos_pos_embed_1d(embed_dim // 2, rows), sincos_pos_embed_1d(embed_dim // 2, cols)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, embed_dim, dtype=table.dtype), table], dim=0)
    return table.float()


class ViTBackbone(nn.Module):
    """timm ViT feature extractor: ``forward(x) -> [N, num_features]`` (CLS token after the final norm).

    Args:
        size: "tiny" | "small" | "base" (a "vit_" prefix is accepted).
        img_size, patch_size, in_chans: input geometry; ``img_size`` must be a multiple of ``patch_size``.
        depth: override the number of blocks (small models for tests / CPU runs).
        drop_path_rate: stochastic depth, timm's linear decay rule.
    """

    def __init__(
        self,
        size: str,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        depth: int | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        name = size.removeprefix("vit_")
        if name not in VIT_SIZES:
            raise UserError(f"unknown ViT size {size!r}; choose one of {', '.join('vit_' + s for s in VIT_SIZES)}")
        if img_size % patch_size:
            raise UserError(f"ViT img_size {img_size} is not a multiple of patch_size {patch_size}")
        embed_dim, default_depth, num_heads = VIT_SIZES[name]
        self.vit = VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            global_pool="token",
            embed_dim=embed_dim,
            depth=depth or default_depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            drop_path_rate=drop_path_rate,
            # Other input sizes (DINO's local crops) get the position table interpolated, as DINO does.
            dynamic_img_size=True,
        )
        self.num_features = embed_dim
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size: tuple[int, int] = tuple(self.vit.patch_embed.grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        # Fixed sin-cos position embedding (MAE): overwrite timm's learned table and freeze it.
        with torch.no_grad():
            self.vit.pos_embed.copy_(sincos_pos_embed_2d(embed_dim, self.grid_size, cls_token=True)[None])
        self.vit.pos_embed.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, num_features]: the CLS token after the final norm (timm's own path)."""
        return self.vit(x)

    def compile_trunk(self) -> None:
        """``torch.compile`` the transformer blocks, in place: they are where the FLOPs are, and both
        ``forward`` and ``encode`` (masked methods' visible tokens) run through them."""
        self.vit.blocks.compile()

    def patchify_embed(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, L, D] patch tokens with their position embedding added (no CLS yet)."""
        tokens = self.vit.patch_embed(x).flatten(1, 2)  # dynamic_img_size: [N, H', W', D] -> [N, L, D]
        return tokens + self.vit.pos_embed[:, 1:, :]

    def encode(self, tokens: Tensor) -> Tensor:
        """[N, L', D] (any subset of ``patchify_embed`` tokens) -> [N, 1 + L', D]: prepend CLS, blocks, norm."""
        cls = self.vit.cls_token + self.vit.pos_embed[:, :1, :]
        x = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = self.vit.norm_pre(x)
        x = self.vit.blocks(x)
        return self.vit.norm(x)


@dataclass(frozen=True)
class BlockStackConfig:
    """The timm ``Block`` stack inside a ``MaskedPatchDecoder`` or a ``JEPAPredictor``."""

    dim: int = 128  # token width in the stack (MAE's decoder here; the paper's is 512 at 224 px)
    depth: int = 2  # Blocks
    num_heads: int = 4  # attention heads: head width dim / num_heads = 32
    mlp_ratio: float = 4.0  # MLP hidden width / dim, as in timm's ViT


class MaskedPatchDecoder(nn.Module):
    """Light MAE decoder (He et al. 2021, §3 "MAE decoder"): re-inserts mask tokens, predicts pixels.

    encoder latent [N, 1 + L', D] -> Linear(D -> d) -> append (L - L') shared mask tokens -> unshuffle
    with ``ids_restore`` -> + fixed 2-D sin-cos position -> ``depth`` timm Blocks -> LayerNorm ->
    Linear(d -> P) -> drop CLS -> [N, L, P] predicted pixels per patch (``patchify`` order).

    MACRL's decoder is the same module with depth 1 ("one linear layer and one attention block").
    """

    def __init__(
        self, embed_dim: int, grid_size: tuple[int, int], patch_pixels: int, cfg: BlockStackConfig | None = None
    ) -> None:
        super().__init__()
        cfg = cfg or BlockStackConfig()
        decoder_dim = cfg.dim
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed_2d(decoder_dim, grid_size, cls_token=True)[None], persistent=False
        )
        self.decoder_blocks = nn.Sequential(
            *[Block(decoder_dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True) for _ in range(cfg.depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch_pixels)
        # models_mae.py init: mask token N(0, 0.02), xavier-uniform linears (it follows the official JAX ViT)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.decoder_embed(latent)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # shuffled order: visible, then masked
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, 1:, :])


class JEPAPredictor(nn.Module):
    """I-JEPA's narrow predictor ViT (Assran et al. 2023, sec. 3 "Prediction"; official
    ``VisionTransformerPredictor``): context tokens plus one mask token per target patch, run once per
    target block.

    For each image n and target block m (the context sequence is shared by the M blocks)::

        x   = Linear(D -> d)(context) + pos[context_ids]           [N, Kc, d]
        q_m = mask_token + pos[target_ids[:, m]]                   [N, Kt, d]
        out = Linear(d -> D)(LayerNorm(blocks([x ; q_m]))[Kc:])    [N, Kt, D]

    ``pos`` is the fixed 2-D sin-cos table of width d (no CLS row). forward(context [N, Kc, D],
    context_ids [N, Kc], target_ids [N, M, Kt]) -> predictions [N, M, Kt, D]. The M sequences of an
    image are folded into the batch (N * M sequences of Kc + Kt tokens), as the official predictor does.
    """

    def __init__(self, embed_dim: int, grid_size: tuple[int, int], cfg: BlockStackConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or BlockStackConfig()
        predictor_dim = cfg.dim
        self.predictor_embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, predictor_dim))
        self.register_buffer("predictor_pos_embed", sincos_pos_embed_2d(predictor_dim, grid_size), persistent=False)
        # LayerNorm eps 1e-6 as the official vit_predictor (and timm's ViT)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.predictor_blocks = nn.Sequential(
            *[
                Block(predictor_dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True, norm_layer=norm)
                for _ in range(cfg.depth)
            ]
        )
        self.predictor_norm = norm(predictor_dim)
        self.predictor_proj = nn.Linear(predictor_dim, embed_dim)
        # Official init: truncated normal std 0.02 for linears and the mask token, zero biases, and each
        # block's residual output projections scaled by 1 / sqrt(2 * layer) (``fix_init_weight``).
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            for layer, block in enumerate(self.predictor_blocks, start=1):
                block.attn.proj.weight.div_((2.0 * layer) ** 0.5)
                block.mlp.fc2.weight.div_((2.0 * layer) ** 0.5)

    def forward(self, context: Tensor, context_ids: Tensor, target_ids: Tensor) -> Tensor:
        n, m, kt = target_ids.shape
        kc = context_ids.shape[1]
        pos = self.predictor_pos_embed
        x = self.predictor_embed(context) + pos[context_ids]  # [N, Kc, d]
        queries = self.mask_token + pos[target_ids]  # [N, M, Kt, d]
        x = x.unsqueeze(1).expand(-1, m, -1, -1)
        x = torch.cat([x, queries.to(x.dtype)], dim=2).flatten(0, 1)  # [N * M, Kc + Kt, d]
        x = self.predictor_norm(self.predictor_blocks(x))
        return self.predictor_proj(x[:, kc:]).unflatten(0, (n, m))  # [N, M, Kt, D]
