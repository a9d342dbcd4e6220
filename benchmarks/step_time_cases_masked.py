"""Step-time cases for the masked methods: sslray's MAE / MACRL / I-JEPA against plain reference implementations.

``CASES`` is a list of (name, make_sslray_step, make_reference_step). Each maker builds a model, an
optimizer and fixed inputs and returns a zero-argument function doing one training step
(forward + backward + optimizer step, + EMA update for MACRL). ``benchmarks/step_time.py`` times them
side by side; the goal is sslray / reference <= 1.05.

The references are the same math written the straightforward way, with timm's PatchEmbed and Block
used directly: MAE as in facebookresearch/mae ``models_mae.py``; MACRL as a MoCo-v3-style loop (masked
online ViT + projector, deep-copied momentum ViT + projector updated by a Python loop, in-batch InfoNCE
with ``F.cross_entropy``, masked L1); I-JEPA as facebookresearch/ijepa ``train.py`` and
``vision_transformer.py`` structure it (``apply_masks`` gathers per mask, the predictor repeats the
context per target block, ``repeat_interleave_batch``, ``F.smooth_l1_loss`` on ``F.layer_norm``-ed
target features, Python-loop EMA). The reference's masks are pre-sampled, as the official collator
makes them in the DataLoader workers, off the training step; sslray samples its masks inside the step,
from a global RNG re-seeded so that both sides cycle through the same 16 batches of masks (the token
counts, hence the work, then match step for step). Sizes fit a CPU: ViT-tiny width, 32 px, patch 4,
batch 32.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
from timm.models.vision_transformer import Block, PatchEmbed
from torch import Tensor, nn
from torch.nn import functional as F

from sslray.methods.ijepa import IJEPA, IJEPAConfig
from sslray.methods.macrl import MACRL, MACRLConfig
from sslray.methods.mae import MAE, MAEConfig
from sslray.nn.multiblock import MultiBlockConfig, sample_multiblock_masks
from sslray.nn.vit import ViTBackbone, sincos_pos_embed_2d

IMG_SIZE, PATCH_SIZE, IN_CHANS, BATCH = 32, 4, 3, 32
EMBED_DIM, DEPTH, NUM_HEADS = 192, 6, 3  # ViT-tiny width and heads, half depth to keep CPU steps short
DECODER_DIM, DECODER_HEADS = 128, 4
MASK_RATIO, TEMPERATURE, MOMENTUM = 0.75, 0.2, 0.99
PROJ_HIDDEN, PROJ_DIM = 2048, 128
LR = 1.5e-4

Step = Callable[[], None]


def _inputs(num_views: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH, IN_CHANS, IMG_SIZE, IMG_SIZE, generator=g) for _ in range(num_views)]


def _sslray_backbone() -> ViTBackbone:
    return ViTBackbone("vit_tiny", img_size=IMG_SIZE, patch_size=PATCH_SIZE, in_chans=IN_CHANS, depth=DEPTH)


# ----------------------------------------------------------------------------- reference (plain) models


class ReferenceMaskedViT(nn.Module):
    """models_mae.py encoder + decoder, written out with timm modules."""

    def __init__(self, decoder_depth: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(IMG_SIZE, PATCH_SIZE, IN_CHANS, EMBED_DIM)
        num_patches = self.patch_embed.num_patches
        grid = (IMG_SIZE // PATCH_SIZE, IMG_SIZE // PATCH_SIZE)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(EMBED_DIM, grid, cls_token=True)[None], requires_grad=False)
        self.blocks = nn.ModuleList([Block(EMBED_DIM, NUM_HEADS, 4.0, qkv_bias=True) for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(EMBED_DIM, eps=1e-6)
        self.decoder_embed = nn.Linear(EMBED_DIM, DECODER_DIM)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DECODER_DIM))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed_2d(DECODER_DIM, grid, cls_token=True)[None], requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [Block(DECODER_DIM, DECODER_HEADS, 4.0, qkv_bias=True) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(DECODER_DIM)
        self.decoder_pred = nn.Linear(DECODER_DIM, PATCH_SIZE**2 * IN_CHANS)
        self.num_patches = num_patches

    def patchify(self, imgs: Tensor) -> Tensor:
        p, h = PATCH_SIZE, IMG_SIZE // PATCH_SIZE
        x = imgs.reshape(imgs.shape[0], IN_CHANS, h, p, h, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * h, p * p * IN_CHANS)

    def random_masking(self, x: Tensor, mask_ratio: float):
        n, length, d = x.shape
        len_keep = int(length * (1 - mask_ratio))
        noise = torch.rand(n, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones([n, length], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_masked, mask, ids_restore

    def encode_tokens(self, x: Tensor) -> Tensor:
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_encoder(self, imgs: Tensor, mask_ratio: float):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)
        return self.encode_tokens(x), mask, ids_restore

    def forward_features(self, imgs: Tensor) -> Tensor:
        return self.encode_tokens(self.patch_embed(imgs) + self.pos_embed[:, 1:, :])[:, 0]

    def forward_decoder(self, x: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def target(self, imgs: Tensor) -> Tensor:
        target = self.patchify(imgs)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        return (target - mean) / (var + 1.0e-6) ** 0.5


def _reference_mae_loss(model: ReferenceMaskedViT, imgs: Tensor) -> Tensor:
    latent, mask, ids_restore = model.forward_encoder(imgs, MASK_RATIO)
    pred = model.forward_decoder(latent, ids_restore)
    loss = ((pred - model.target(imgs)) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def _train_step(model: nn.Module, loss_fn: Callable[[], Tensor], after: Callable[[], None] | None = None) -> Step:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)

    def step() -> None:
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after is not None:
            after()

    return step


# ----------------------------------------------------------------------------- MAE


def make_sslray_mae_step() -> Step:
    torch.manual_seed(0)
    model = MAE(
        _sslray_backbone(),
        MAEConfig(
            mask_ratio=MASK_RATIO,
            decoder_dim=DECODER_DIM,
            decoder_depth=2,
            decoder_num_heads=DECODER_HEADS,
            norm_pix_loss=True,
        ),
    ).train()
    views = _inputs(1)
    return _train_step(model, lambda: model(views)["loss"])


def make_reference_mae_step() -> Step:
    torch.manual_seed(0)
    model = ReferenceMaskedViT(decoder_depth=2).train()
    (imgs,) = _inputs(1)
    return _train_step(model, lambda: _reference_mae_loss(model, imgs))


# ----------------------------------------------------------------------------- MACRL (symmetric, in-batch keys)


def make_sslray_macrl_step() -> Step:
    torch.manual_seed(0)
    cfg = MACRLConfig(
        mask_ratio=MASK_RATIO,
        temperature=TEMPERATURE,
        momentum=MOMENTUM,
        alpha=1.0,
        decoder_dim=DECODER_DIM,
        decoder_depth=1,
        decoder_num_heads=DECODER_HEADS,
        proj_hidden_dim=PROJ_HIDDEN,
        proj_dim=PROJ_DIM,
    )
    model = MACRL(_sslray_backbone(), cfg).train()
    views = _inputs(2)
    counter = iter(range(10**9))
    return _train_step(model, lambda: model(views)["loss"], after=lambda: model.on_step(next(counter), 10**6))


DECODER_PARAMS = ("decoder_", "mask_token")


class ReferenceMACRL(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.online = ReferenceMaskedViT(decoder_depth=1)
        self.projector = nn.Sequential(
            nn.Linear(EMBED_DIM, PROJ_HIDDEN, bias=False),
            nn.BatchNorm1d(PROJ_HIDDEN),
            nn.ReLU(),
            nn.Linear(PROJ_HIDDEN, PROJ_DIM),
        )
        self.momentum_encoder = copy.deepcopy(self.online)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in list(self.momentum_encoder.parameters()) + list(self.momentum_projector.parameters()):
            p.requires_grad = False

    def contrastive(self, q: Tensor, k: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = q @ k.T / TEMPERATURE
        return F.cross_entropy(logits, torch.arange(q.shape[0]))

    def loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        n = x0.shape[0]
        imgs = torch.cat([x0, x1])
        latent, mask, ids_restore = self.online.forward_encoder(imgs, MASK_RATIO)
        q0, q1 = self.projector(latent[:, 0]).split(n)
        pred = self.online.forward_decoder(latent, ids_restore)
        recon = ((pred - self.online.target(imgs)).abs().mean(dim=-1) * mask).sum() / mask.sum()
        with torch.no_grad():
            k1, k0 = self.momentum_projector(self.momentum_encoder.forward_features(torch.cat([x1, x0]))).split(n)
        contrastive = (self.contrastive(q0, k1) + self.contrastive(q1, k0)) / 2
        return contrastive + recon

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        for online, target in [(self.online, self.momentum_encoder), (self.projector, self.momentum_projector)]:
            for (name, po), pt in zip(online.named_parameters(), target.parameters()):
                if not name.startswith(DECODER_PARAMS):  # the momentum branch has no decoder
                    pt.mul_(m).add_(po.detach(), alpha=1 - m)
            for bo, bt in zip(online.buffers(), target.buffers()):
                bt.copy_(bo)


def make_reference_macrl_step() -> Step:
    torch.manual_seed(0)
    model = ReferenceMACRL().train()
    x0, x1 = _inputs(2)
    return _train_step(model, lambda: model.loss(x0, x1), after=lambda: model.update_momentum(MOMENTUM))


# ----------------------------------------------------------------------------- I-JEPA (4 targets, EMA target)

PRED_DIM, PRED_DEPTH, PRED_HEADS = 96, 4, 3  # search_spaces/ijepa_fmnist.yaml's narrow predictor
NUM_TARGETS, IJEPA_MOMENTUM = 4, 0.996
MASK_SEED, MASK_BATCHES = 1000, 16  # both sides cycle through the same 16 batches of masks
LN_EPS6 = partial(nn.LayerNorm, eps=1e-6)  # the official ViT's and predictor's norms (timm's ViT too)


def make_sslray_ijepa_step() -> Step:
    torch.manual_seed(0)
    cfg = IJEPAConfig(
        num_targets=NUM_TARGETS,
        predictor_dim=PRED_DIM,
        predictor_depth=PRED_DEPTH,
        predictor_num_heads=PRED_HEADS,
        momentum=IJEPA_MOMENTUM,
    )
    model = IJEPA(_sslray_backbone(), cfg).train()
    views = _inputs(1)
    counter = iter(range(10**9))
    seeds = iter(range(10**9))

    def loss() -> Tensor:
        torch.manual_seed(MASK_SEED + next(seeds) % MASK_BATCHES)  # the reference's masks, in its order
        return model(views)["loss"]

    return _train_step(model, loss, after=lambda: model.on_step(next(counter), 10**6))


def _apply_masks(x: Tensor, masks: list[Tensor]) -> Tensor:
    """Official ``apply_masks``: gather the tokens of each [B, K] index tensor, stack the masks along the batch."""
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).repeat(1, 1, x.size(-1))) for m in masks], dim=0)


def _repeat_interleave_batch(x: Tensor, b: int, repeat: int) -> Tensor:
    n = len(x) // b
    return torch.cat([torch.cat([x[i * b : (i + 1) * b] for _ in range(repeat)], dim=0) for i in range(n)], dim=0)


class ReferenceJEPAEncoder(nn.Module):
    """Official I-JEPA ViT structure with timm blocks (and a CLS token, so the math matches sslray's)."""

    def __init__(self) -> None:
        super().__init__()
        grid = (IMG_SIZE // PATCH_SIZE, IMG_SIZE // PATCH_SIZE)
        self.patch_embed = PatchEmbed(IMG_SIZE, PATCH_SIZE, IN_CHANS, EMBED_DIM)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(EMBED_DIM, grid, cls_token=True)[None], requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(EMBED_DIM, NUM_HEADS, 4.0, qkv_bias=True, norm_layer=LN_EPS6) for _ in range(DEPTH)]
        )
        self.norm = nn.LayerNorm(EMBED_DIM, eps=1e-6)

    def forward(self, imgs: Tensor, masks: list[Tensor] | None = None) -> Tensor:
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        if masks is not None:
            x = _apply_masks(x, masks)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 1:]


class ReferenceJEPAPredictor(nn.Module):
    """Official ``VisionTransformerPredictor.forward`` structure, timm blocks."""

    def __init__(self) -> None:
        super().__init__()
        grid = (IMG_SIZE // PATCH_SIZE, IMG_SIZE // PATCH_SIZE)
        self.predictor_embed = nn.Linear(EMBED_DIM, PRED_DIM)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, PRED_DIM))
        self.predictor_pos_embed = nn.Parameter(sincos_pos_embed_2d(PRED_DIM, grid)[None], requires_grad=False)
        self.predictor_blocks = nn.ModuleList(
            [Block(PRED_DIM, PRED_HEADS, 4.0, qkv_bias=True, norm_layer=LN_EPS6) for _ in range(PRED_DEPTH)]
        )
        self.predictor_norm = nn.LayerNorm(PRED_DIM, eps=1e-6)
        self.predictor_proj = nn.Linear(PRED_DIM, EMBED_DIM)

    def forward(self, x: Tensor, masks_x: list[Tensor], masks: list[Tensor]) -> Tensor:
        b = len(x) // len(masks_x)
        x = self.predictor_embed(x)
        x = x + _apply_masks(self.predictor_pos_embed.repeat(b, 1, 1), masks_x)
        n_ctxt = x.shape[1]
        pos_embs = _apply_masks(self.predictor_pos_embed.repeat(b, 1, 1), masks)
        pos_embs = _repeat_interleave_batch(pos_embs, b, repeat=len(masks_x))
        pred_tokens = self.mask_token.repeat(pos_embs.size(0), pos_embs.size(1), 1) + pos_embs
        x = torch.cat([x.repeat(len(masks), 1, 1), pred_tokens], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        return self.predictor_proj(self.predictor_norm(x)[:, n_ctxt:])


class ReferenceIJEPA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = ReferenceJEPAEncoder()
        self.predictor = ReferenceJEPAPredictor()
        self.target_encoder = copy.deepcopy(self.encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad = False

    def loss(self, imgs: Tensor, masks_enc: list[Tensor], masks_pred: list[Tensor]) -> Tensor:
        with torch.no_grad():
            h = self.target_encoder(imgs)
            h = F.layer_norm(h, (h.size(-1),))
            h = _repeat_interleave_batch(_apply_masks(h, masks_pred), len(h), repeat=len(masks_enc))
        z = self.predictor(self.encoder(imgs, masks_enc), masks_enc, masks_pred)
        return F.smooth_l1_loss(z, h)

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        for param_q, param_k in zip(self.encoder.parameters(), self.target_encoder.parameters()):
            param_k.data.mul_(m).add_((1.0 - m) * param_q.detach().data)


def make_reference_ijepa_step() -> Step:
    torch.manual_seed(0)
    model = ReferenceIJEPA().train()
    (imgs,) = _inputs(1)
    grid = (IMG_SIZE // PATCH_SIZE, IMG_SIZE // PATCH_SIZE)
    batches = []  # "from the loader": the masks sslray's forward draws after torch.manual_seed(MASK_SEED + i)
    for i in range(MASK_BATCHES):
        torch.manual_seed(MASK_SEED + i)
        batches.append(sample_multiblock_masks(BATCH, grid, MultiBlockConfig(num_targets=NUM_TARGETS)))
    counter = iter(range(10**9))

    def loss() -> Tensor:
        masks = batches[next(counter) % len(batches)]
        return model.loss(imgs, [masks.context], list(masks.targets.unbind(1)))

    return _train_step(model, loss, after=lambda: model.update_momentum(IJEPA_MOMENTUM))


CASES: list[tuple[str, Callable[[], Step], Callable[[], Step]]] = [
    ("mae_vit_tiny_d6_32px_b32", make_sslray_mae_step, make_reference_mae_step),
    ("macrl_vit_tiny_d6_32px_b32", make_sslray_macrl_step, make_reference_macrl_step),
    ("ijepa_vit_tiny_d6_32px_b32", make_sslray_ijepa_step, make_reference_ijepa_step),
]
