"""MACRL on a tiny ViT: training step, momentum branch (no gradient, EMA), alpha, views, queue, config."""

import pytest
import torch

from sslray.errors import UserError
from sslray.methods.macrl import MACRL, MACRLConfig
from sslray.nn.vit import ViTBackbone
from sslray.sections import section_from_dict

SMALL = dict(decoder_dim=32, decoder_num_heads=2, proj_hidden_dim=64, proj_dim=32)


def tiny_macrl(in_chans=3, **cfg):
    torch.manual_seed(0)
    backbone = ViTBackbone("vit_tiny", img_size=16, patch_size=4, in_chans=in_chans, depth=2)
    return MACRL(backbone, MACRLConfig(**{**SMALL, **cfg}))


def two_views(n=6, in_chans=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, in_chans, 16, 16, generator=g), torch.randn(n, in_chans, 16, 16, generator=g)]


@pytest.mark.parametrize("in_chans,symmetric", [(1, True), (3, True), (3, False)])
def test_one_optimizer_step(in_chans, symmetric):
    model = tiny_macrl(in_chans, symmetric=symmetric)
    views = two_views(in_chans=in_chans)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-3)
    out = model(views)
    assert set(out) >= {"loss", "recon_loss", "contrastive_loss", "pos_top1", "embed_std"}
    assert all(torch.isfinite(v) for v in out.values())
    assert 0.0 <= out["pos_top1"].item() <= 1.0
    out["loss"].backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    for name in [
        "backbone.vit.patch_embed.proj.weight",
        "backbone.vit.cls_token",
        "projector.layers.0.weight",
        "decoder.decoder_pred.weight",
    ]:
        assert name in changed
    # the momentum branch gets no gradient and the optimizer does not move it
    momentum_params = [(n, p) for n, p in model.named_parameters() if n.startswith("target_")]
    assert momentum_params and all(not p.requires_grad and p.grad is None for _, p in momentum_params)
    assert not any(n.startswith("target_") for n in changed)
    assert model.embed(views[0]).shape == (6, 192)


def test_on_step_moves_momentum_branch_by_ema():
    model = tiny_macrl(momentum=0.9, final_momentum=1.0)
    out = model(two_views())
    out["loss"].backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    online = dict(model.backbone.named_parameters()) | {f"p.{k}": v for k, v in model.projector.named_parameters()}
    target = dict(model.target_backbone.named_parameters()) | {
        f"p.{k}": v for k, v in model.target_projector.named_parameters()
    }
    target_before = {k: v.detach().clone() for k, v in target.items()}
    logged = model.on_step(5, 10)
    m = 0.9 + (1.0 - 0.9) * 0.5  # cosine schedule halfway from 0.9 to 1
    assert logged["momentum"] == pytest.approx(m)
    moved = 0
    for k, t in target.items():
        expected = m * target_before[k] + (1 - m) * online[k].detach()
        torch.testing.assert_close(t, expected)
        moved += not torch.equal(t, target_before[k])
    assert moved > 0


def test_alpha_scales_the_contrastive_term():
    views = two_views()
    outs = {}
    for alpha in [0.0, 2.0]:
        model = tiny_macrl(alpha=alpha)
        torch.manual_seed(7)  # same masks
        outs[alpha] = model(views)
    zero, two = outs[0.0], outs[2.0]
    assert zero["contrastive_loss"].item() > 0
    assert zero["loss"].item() == zero["recon_loss"].item()
    assert two["loss"].item() == pytest.approx(2 * two["contrastive_loss"].item() + two["recon_loss"].item())
    assert two["contrastive_loss"].item() == pytest.approx(zero["contrastive_loss"].item())
    # with alpha = 0 the projector learns nothing
    model = tiny_macrl(alpha=0.0)
    model(views)["loss"].backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.projector.parameters())


def test_asymmetric_views_strong_is_masked_weak_is_key():
    model = tiny_macrl(symmetric=False)
    strong, weak = two_views()
    torch.manual_seed(3)
    a = model([strong, weak])
    torch.manual_seed(3)
    b = model([strong, weak.flip(0)])  # other keys: contrastive changes, reconstruction of views[0] does not
    assert a["recon_loss"].item() == b["recon_loss"].item()
    assert a["contrastive_loss"].item() != b["contrastive_loss"].item()
    torch.manual_seed(3)
    c = model([strong * 2 + 1, weak])
    assert a["recon_loss"].item() != c["recon_loss"].item()


def test_memory_queue_takes_the_keys():
    model = tiny_macrl(queue_size=16)
    pointer = int(model.queue.pointer)
    queue_before = model.queue.queue.clone()
    out = model(two_views(n=4))
    assert torch.isfinite(out["loss"])
    assert int(model.queue.pointer) == (pointer + 8) % 16  # 2 directions x 4 keys
    new_rows = model.queue.queue[pointer : pointer + 8]
    assert not torch.equal(new_rows, queue_before[pointer : pointer + 8])
    torch.testing.assert_close(new_rows.norm(dim=1), torch.ones(8))


@pytest.mark.parametrize(
    "data,key",
    [
        ({"mask_ratio": 1.0}, "method.mask_ratio"),
        ({"temperature": 0.0}, "method.temperature"),
        ({"momentum": 1.5}, "method.momentum"),
        ({"alpha": -0.1}, "method.alpha"),
        ({"queue_size": -1}, "method.queue_size"),
        ({"temprature": 0.1}, "method.temprature"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        section_from_dict(MACRLConfig, data, "method")
    cfg = section_from_dict(MACRLConfig, {"momentum": 1, "alpha": 0, "mask_ratio": 0.9}, "method")
    assert (cfg.momentum, cfg.alpha, cfg.mask_ratio) == (1.0, 0.0, 0.9)


def test_built_from_a_recipe():
    from sslray.methods.registry import build_method

    recipe = {
        "method": {"name": "macrl", "alpha": 0.5, "temperature": 0.1, "momentum": 0.996, "mask_ratio": 0.8, **SMALL},
        "backbone": {"name": "vit_tiny", "in_chans": 3, "img_size": 16, "patch_size": 4, "depth": 2},
    }
    model = build_method(recipe)
    assert isinstance(model, MACRL)
    assert len(model.backbone.vit.blocks) == 2
    assert (model.cfg.alpha, model.cfg.temperature, model.cfg.mask_ratio) == (0.5, 0.1, 0.8)
    assert model.on_step(0, 100)["momentum"] == pytest.approx(0.996)
    out = model(two_views(n=2))
    assert torch.isfinite(out["loss"])
    with pytest.raises(UserError, match=r"method\.alpha"):
        build_method({**recipe, "method": {"name": "macrl", "alpha": -1}})


def test_needs_two_views():
    with pytest.raises(ValueError, match="two views"):
        tiny_macrl()(two_views()[:1])
