"""``sslray export``: a run's backbone as a plain torchvision / timm state dict.

The weights come from the run's best checkpoint (else its latest) and from the network the method
evaluates (``evaluation_backbone``: DINO's teacher, everyone else's online backbone). Keys are those of
the wrapped library model, so they load with ``strict=True`` into:

- ResNets: ``torchvision.models.resnet18(weights=None)`` with ``fc = nn.Identity()`` and, for a small
  stem or other channel counts, ``conv1`` / ``maxpool`` replaced as in ``sslray.nn.backbones``;
- resnet10t: ``timm.create_model("resnet10t", num_classes=0, in_chans=..., channels=..., stem_width=...)``
  (small stem: the stem's first conv at stride 1 and no max-pool);
- ViTs: ``timm.models.vision_transformer.VisionTransformer(img_size=..., patch_size=..., in_chans=...,
  embed_dim=..., depth=..., num_heads=..., num_classes=0)``.

A JSON file beside the weights records the architecture and those lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sslray.errors import UserError
from sslray.eval.features import checkpoint_encoder
from sslray.nn.backbones import resnet10t_args
from sslray.runs.checkpoint import find_checkpoint


def export_backbone(run_or_checkpoint: Path, out: Path, overwrite: bool = False) -> dict:
    out = Path(out)
    sidecar = out.with_suffix(".json")
    if not overwrite and (out.exists() or sidecar.exists()):
        raise UserError(f"{out if out.exists() else sidecar} already exists; pass --overwrite to replace it")
    folder = find_checkpoint(Path(run_or_checkpoint))
    # As eval and report read it: a state.json without its fields, or a model.pt that does not load
    # (truncated, corrupt, another recipe's), is one UserError naming the file.
    encoder = checkpoint_encoder(folder)
    recipe, backbone = encoder.recipe, encoder.build("cpu")
    library_model = backbone.vit if hasattr(backbone, "vit") else backbone.net
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(library_model.state_dict(), out)
    info = {
        "checkpoint": str(folder),
        "method": recipe.method_name,
        "backbone": recipe.to_dict()["backbone"],
        "num_features": backbone.num_features,
        "load": _how_to_load(recipe.backbone),
    }
    sidecar.write_text(json.dumps(info, indent=2) + "\n")
    return info


def _how_to_load(cfg) -> str:
    if cfg.name.startswith("vit"):
        from sslray.nn.vit import VIT_SIZES

        dim, depth, heads = VIT_SIZES[cfg.name.removeprefix("vit_")]
        return (
            f"timm.models.vision_transformer.VisionTransformer(img_size={cfg.img_size}, patch_size="
            f"{cfg.patch_size}, in_chans={cfg.in_chans}, embed_dim={dim}, depth={cfg.depth or depth}, "
            f"num_heads={heads}, num_classes=0).load_state_dict(torch.load(PATH, weights_only=True))"
        )
    if cfg.name == "resnet10t":
        args = ", ".join(f"{key}={value!r}" for key, value in resnet10t_args(cfg.width, cfg.in_chans).items())
        small = "; m.conv1[0].stride = (1, 1); m.maxpool = nn.Identity()" if cfg.small_stem else ""
        return (
            f'm = timm.create_model("resnet10t", {args}){small}; m.load_state_dict(torch.load(PATH, weights_only=True))'
        )
    stem = (
        "conv1 = nn.Conv2d(IN, 64, 3, 1, 1, bias=False); maxpool = nn.Identity()"
        if cfg.small_stem
        else "conv1 = nn.Conv2d(IN, 64, 7, 2, 3, bias=False)"
        if cfg.in_chans != 3
        else ""
    )
    return (
        f"m = torchvision.models.{cfg.name}(weights=None); m.fc = nn.Identity(); "
        + (f"m.{stem.replace('; maxpool', '; m.maxpool')}; ".replace("IN", str(cfg.in_chans)) if stem else "")
        + "m.load_state_dict(torch.load(PATH, weights_only=True))"
    )
