"""I-JEPA on a tiny ViT: wiring against the written-out objective, one optimizer step, the EMA target,
the evaluation feature (and its plain-timm twin), learning on a fixed batch, recipes and config errors."""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F

from sslray.errors import UserError
from sslray.methods.ijepa import IJEPA, IJEPAConfig
from sslray.nn.vit import ViTBackbone
from sslray.sections import section_from_dict

SMALL = dict(predictor_dim=32, predictor_depth=1, predictor_num_heads=2)


def tiny_ijepa(in_chans=1, img_size=16, depth=2, **cfg):
    torch.manual_seed(0)
    backbone = ViTBackbone("vit_tiny", img_size=img_size, patch_size=4, in_chans=in_chans, depth=depth)
    return IJEPA(backbone, IJEPAConfig(**{**SMALL, **cfg}))


def images(n=6, in_chans=1, size=16, seed=1):
    return torch.randn(n, in_chans, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_one_optimizer_step_trains_encoder_and_predictor_not_the_target(in_chans):
    model = tiny_ijepa(in_chans)
    x = images(in_chans=in_chans)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model([x])
    assert set(out) == {"loss", "embed_std", "context_patches", "target_patches"}
    assert all(torch.isfinite(v) for v in out.values()) and out["loss"].item() > 0
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    out["loss"].backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    for name in [
        "backbone.vit.patch_embed.proj.weight",
        "backbone.vit.blocks.1.mlp.fc2.weight",
        "backbone.vit.norm.weight",
        "predictor.mask_token",
        "predictor.predictor_embed.weight",
        "predictor.predictor_proj.weight",
    ]:
        assert name in changed
    # the EMA target: no gradient, untouched by the optimizer
    target = [(n, p) for n, p in model.named_parameters() if n.startswith("target_backbone.")]
    assert len(target) == len(list(model.backbone.parameters()))
    assert all(not p.requires_grad and p.grad is None for _, p in target)
    assert not any(n.startswith("target_backbone.") for n in changed)
    assert model.embed(x).shape == (6, 192) and model.training


def test_forward_matches_the_written_out_objective():
    """Same RNG state -> same masks; loss = smooth L1 between the predictor's outputs and the layer-normed
    target-encoder features (timm's own path over the whole image) at the target positions."""
    model = tiny_ijepa()
    x = images(n=3)
    torch.manual_seed(123)
    out = model([x])
    torch.manual_seed(123)
    masks = model.sample_masks(3)
    n, m, kt = masks.targets.shape
    assert out["context_patches"].item() == masks.context.shape[1] and out["target_patches"].item() == kt

    with torch.no_grad():
        full = model.target_backbone.vit.forward_features(x)[:, 1:]  # [N, 16, D], CLS dropped
        vit = model.backbone.vit
        tokens = vit.patch_embed(x).flatten(1, 2) + vit.pos_embed[:, 1:]
        predictions, targets = [], []
        for i in range(n):
            context = tokens[i, masks.context[i]][None]
            cls = vit.cls_token + vit.pos_embed[:, :1]
            z = vit.norm(vit.blocks(torch.cat([cls, context], dim=1)))[:, 1:]  # context encoder, context only
            for j in range(m):  # one predictor pass per image and target block
                predictions.append(model.predictor(z, masks.context[i][None], masks.targets[i, j][None, None])[0, 0])
                targets.append(F.layer_norm(full[i, masks.targets[i, j]], (192,)))
        expected = F.smooth_l1_loss(torch.stack(predictions), torch.stack(targets))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_context_encoder_never_sees_target_pixels():
    """Changing the pixels of patches that are only in targets changes the targets, not the prediction."""
    model = tiny_ijepa().eval()
    x = images(n=2)
    masks = model.sample_masks(2, generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    for i in range(2):
        for patch in set(masks.targets[i].flatten().tolist()):
            r, c = divmod(patch, 4)
            changed[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 5.0
    with torch.no_grad():
        preds = [model.forward_predictor(model.forward_encoder(im, masks.context), masks) for im in (x, changed)]
        targets = [model.forward_target(im) for im in (x, changed)]
    torch.testing.assert_close(preds[0], preds[1])
    assert not torch.allclose(targets[0], targets[1])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_on_step_moves_the_target_by_ema_with_the_scheduled_momentum(schedule):
    model = tiny_ijepa(momentum=0.9, final_momentum=1.0, momentum_schedule=schedule)
    model([images()])["loss"].backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    online = dict(model.backbone.named_parameters())
    target = dict(model.target_backbone.named_parameters())
    target_before = {k: v.detach().clone() for k, v in target.items()}
    logged = model.on_step(3, 12)
    # linear: 0.9 + 0.1 * 3/12 (App. A.1); cosine: 1 - 0.1 * (cos(pi/4) + 1) / 2
    m = 0.925 if schedule == "linear" else 1 - 0.1 * (2**-0.5 + 1) / 2
    assert logged == {"momentum": pytest.approx(m)}
    moved = 0
    for k, t in target.items():
        torch.testing.assert_close(t, m * target_before[k] + (1 - m) * online[k].detach())
        moved += not torch.equal(t, target_before[k])
    assert moved > 10
    assert model.on_step(12, 12)["momentum"] == 1.0


def test_embed_is_the_average_pooled_target_encoder_and_a_plain_timm_vit_computes_it():
    model = tiny_ijepa()
    out = model([images()])
    out["loss"].backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    model.on_step(0, 10)  # target != online now
    x = images(n=4, seed=2)
    features = model.embed(x)
    assert features.shape == (4, 192) and not features.requires_grad
    with torch.no_grad():
        target_tokens = model.target_backbone.encode(model.target_backbone.patchify_embed(x))
        online_tokens = model.backbone.encode(model.backbone.patchify_embed(x))
    torch.testing.assert_close(features, target_tokens[:, 1:].mean(dim=1))
    assert not torch.allclose(features, online_tokens[:, 1:].mean(dim=1))  # not the online encoder
    assert not torch.allclose(features, target_tokens[:, 0])  # not the CLS token
    # what `sslray export` saves loads into plain timm; average pooling without fc_norm is the same feature
    plain = VisionTransformer(
        img_size=16,
        patch_size=4,
        in_chans=1,
        embed_dim=192,
        depth=2,
        num_heads=3,
        num_classes=0,
        global_pool="avg",
        fc_norm=False,
    ).eval()
    plain.load_state_dict(model.evaluation_backbone().vit.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), features)


def test_a_few_dozen_steps_reduce_the_loss_on_a_fixed_batch():
    model = tiny_ijepa(img_size=16, depth=1)
    x = images(n=8, seed=3)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)

    def loss_on_fixed_masks():
        torch.manual_seed(7)  # the same masks every step
        return model([x])["loss"]

    with torch.no_grad():
        initial = loss_on_fixed_masks().item()
    for step in range(30):
        loss = loss_on_fixed_masks()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.on_step(step, 30)
    with torch.no_grad():
        final = loss_on_fixed_masks().item()
    assert final < 0.7 * initial, (initial, final)  # about 0.44 -> 0.24 here


def test_needs_a_vit_backbone():
    class Conv(nn.Module):
        num_features = 8

        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.raises(UserError, match="ViT backbone"):
        IJEPA(Conv())


@pytest.mark.parametrize(
    "data,key",
    [
        ({"num_targets": 0}, "method.num_targets"),
        ({"num_targets": 5, "target_scale": [0.2, 0.3]}, "method.num_targets"),
        ({"target_scale": [0.2, 0.1]}, "method.target_scale"),
        ({"context_scale": [0.85, 1.5]}, "method.context_scale"),
        ({"target_aspect_ratio": [0.0, 1.5]}, "method.target_aspect_ratio"),
        ({"predictor_dim": 30}, "method.predictor_dim"),
        ({"momentum": 1.5}, "method.momentum"),
        ({"momentum_schedule": "step"}, "method.momentum_schedule"),
        ({"loss": "l2"}, "method.loss"),
        ({"num_target": 4}, "method.num_target"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        section_from_dict(IJEPAConfig, data, "method")
    cfg = section_from_dict(IJEPAConfig, {"target_scale": [0.1, 0.3], "momentum": 1}, "method")
    assert cfg.target_scale == (0.1, 0.3) and cfg.momentum == 1.0


def test_built_from_a_recipe_with_its_knobs():
    from sslray.methods.registry import build_method
    from sslray.recipe import recipe_from_dict

    recipe = {
        "method": {"name": "ijepa", "num_targets": 2, "target_scale": [0.1, 0.15], "momentum": 0.99, **SMALL},
        "backbone": {"name": "vit_tiny", "in_chans": 1, "img_size": 16, "patch_size": 4, "depth": 1},
    }
    model = build_method(recipe)
    assert isinstance(model, IJEPA) and len(model.backbone.vit.blocks) == 1
    assert model.sample_masks(5).targets.shape[:2] == (5, 2)
    assert model.on_step(0, 100)["momentum"] == pytest.approx(0.99)
    assert torch.isfinite(model([images(n=2)])["loss"])
    # the recipe layer refuses a ResNet before anything is built, and picks I-JEPA's own views
    with pytest.raises(UserError, match=r"backbone\.name: method ijepa needs a ViT"):
        recipe_from_dict({"method": {"name": "ijepa"}, "backbone": {"name": "resnet18", "in_chans": 1}})
    full = recipe_from_dict({**recipe, "data": {"augment": {"size": 16}}})
    (view,) = full.data.augment.view_specs()
    assert view.scale == (0.3, 1.0) and view.flip_p == view.jitter_p == view.blur_p == 0.0
