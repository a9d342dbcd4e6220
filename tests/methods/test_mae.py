"""MAE on a tiny ViT: wiring against the paper's formula, one optimizer step, reconstructions, config errors."""

import math

import pytest
import torch
from torch import nn

from sslray.errors import UserError
from sslray.methods.mae import MAE, MAEConfig
from sslray.nn.masking import patchify
from sslray.nn.vit import ViTBackbone
from sslray.sections import section_from_dict

SMALL = dict(decoder_dim=32, decoder_depth=1, decoder_num_heads=2)


def tiny_mae(in_chans=3, img_size=16, **cfg):
    torch.manual_seed(0)
    backbone = ViTBackbone("vit_tiny", img_size=img_size, patch_size=4, in_chans=in_chans, depth=2)
    return MAE(backbone, MAEConfig(**{**SMALL, **cfg}))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_one_optimizer_step(in_chans):
    model = tiny_mae(in_chans)
    images = torch.randn(4, in_chans, 16, 16)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model([images])
    assert set(out) >= {"loss", "recon_loss", "embed_std"}
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    assert out["recon_loss"].item() == out["loss"].item() and not out["recon_loss"].requires_grad
    out["loss"].backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[name])}
    assert "backbone.vit.patch_embed.proj.weight" in changed
    assert "decoder.decoder_pred.weight" in changed and "decoder.mask_token" in changed
    assert model.embed(images).shape == (4, 192)


def test_forward_matches_written_out_objective():
    """Same RNG state -> same mask; loss = mean over masked patches of the per-patch MSE to normalised pixels."""
    model = tiny_mae(norm_pix_loss=True)
    images = torch.randn(3, 3, 16, 16)
    torch.manual_seed(123)
    loss = model([images])["loss"]

    torch.manual_seed(123)
    tokens = model.backbone.patchify_embed(images)
    n, length, dim = tokens.shape
    noise = torch.rand(n, length)
    ids_shuffle = noise.argsort(dim=1)
    keep = ids_shuffle[:, : length // 4]
    visible = torch.stack([tokens[i, keep[i]] for i in range(n)])
    latent = model.backbone.encode(visible)
    assert latent.shape == (3, 1 + 4, 192)
    pred = model.decoder(latent, ids_shuffle.argsort(dim=1))
    target = patchify(images, 4)
    total, count = 0.0, 0
    for i in range(n):
        for p in range(length):
            if p in keep[i].tolist():
                continue
            t = target[i, p]
            t = (t - t.mean()) / (t.var() + 1e-6).sqrt()
            total += (pred[i, p] - t).pow(2).mean().item()
            count += 1
    assert count == n * 12
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_reconstruct_gives_images_and_mask():
    model = tiny_mae(in_chans=1, norm_pix_loss=False)
    images = torch.randn(2, 1, 16, 16)
    model.train()
    pred, mask = model.reconstruct(images, generator=torch.Generator().manual_seed(0))
    assert model.training  # mode restored
    assert pred.shape == mask.shape == images.shape
    assert mask.mean().item() == pytest.approx(0.75)  # 12 of 16 patches, whole patches
    mask_patches = patchify(mask, 4)
    assert torch.all(mask_patches.amin(dim=-1) == mask_patches.amax(dim=-1))
    # without norm_pix the reconstruction is the decoder output itself, patch for patch
    latent, m, ids_restore = model.forward_encoder(images, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(patchify(pred, 4), model.forward_decoder(latent, ids_restore))
    assert torch.equal(m, mask_patches[..., 0])


def test_norm_pix_reconstruction_is_in_pixel_space():
    model = tiny_mae(in_chans=1, norm_pix_loss=True)
    images = torch.randn(2, 1, 16, 16) * 5 + 20  # far from the normalised range
    pred, _ = model.reconstruct(images)
    assert abs(pred.mean().item() - 20) < 2.0


def test_needs_a_vit_backbone():
    class Conv(nn.Module):
        num_features = 8

        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.raises(UserError, match="ViT backbone"):
        MAE(Conv())


@pytest.mark.parametrize(
    "data,key",
    [
        ({"mask_ratio": 1.0}, "method.mask_ratio"),
        ({"mask_ratio": -0.1}, "method.mask_ratio"),
        ({"decoder_dim": 30}, "method.decoder_dim"),
        ({"mask_ration": 0.5}, "method.mask_ration"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        section_from_dict(MAEConfig, data, "method")
    assert section_from_dict(MAEConfig, {"mask_ratio": 0.0}, "method").mask_ratio == 0.0
    assert math.isclose(MAEConfig().mask_ratio, 0.75)


def test_built_from_a_recipe():
    from sslray.methods.registry import build_method

    recipe = {
        "method": {"name": "mae", "mask_ratio": 0.5, **SMALL},
        "backbone": {"name": "vit_tiny", "in_chans": 1, "img_size": 16, "patch_size": 4, "depth": 2},
    }
    model = build_method(recipe)
    assert isinstance(model, MAE)
    assert len(model.backbone.vit.blocks) == 2 and model.cfg.mask_ratio == 0.5
    out = model([torch.randn(2, 1, 16, 16)])
    assert torch.isfinite(out["loss"])
    with pytest.raises(UserError, match="ViT backbone"):
        build_method({"method": {"name": "mae"}, "backbone": {"name": "resnet18"}})
    with pytest.raises(UserError, match=r"method\.mask_ratio"):
        build_method({**recipe, "method": {"name": "mae", "mask_ratio": 1.2}})
