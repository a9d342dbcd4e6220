"""Every registered method x a tiny backbone: one optimizer step trains, schedules and EMA targets behave."""

import math

import pytest
import torch

from sslray.methods.base import MomentumSSLMethod
from sslray.methods.registry import METHODS

from .tiny import tiny_method, tiny_views

CONTRASTIVE = {"simclr", "moco_v2", "moco_v3"}  # must report pos_top1 (any method may)
N = 6
ALL = sorted(METHODS)
MOMENTUM = [name for name in ALL if issubclass(METHODS[name].method, MomentumSSLMethod)]


def tiny(name, in_chans=1, **knobs):
    return tiny_method(name, in_chans, **knobs)


def views_for(name, in_chans=1, generator=None):
    return tiny_views(name, N, in_chans, generator)


def first_layer(method) -> str:
    return "backbone.vit.patch_embed.proj.weight" if hasattr(method.backbone, "vit") else "backbone.net.conv1.weight"


def trainable_snapshot(method):
    return {k: p.detach().clone() for k, p in method.named_parameters() if p.requires_grad}


# The whole registry (a new method is tested without being listed), grayscale and RGB in turn.
@pytest.mark.parametrize("name, in_chans", [(name, 1 + 2 * (i % 2)) for i, name in enumerate(ALL)])
def test_one_optimizer_step(name, in_chans):
    torch.manual_seed(0)
    method = tiny(name, in_chans)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05)
    before = trainable_snapshot(method)
    frozen_before = {k: p.detach().clone() for k, p in method.named_parameters() if not p.requires_grad}

    out = method(views_for(name, in_chans))
    assert math.isfinite(out["loss"].item())
    assert 0.0 < out["embed_std"].item() < 1.0  # every method reports its collapse monitor
    assert name not in CONTRASTIVE or "pos_top1" in out
    if "pos_top1" in out:
        assert 0.0 <= out["pos_top1"].item() <= 1.0
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    scheduled = method.on_step(0, 10)

    after = trainable_snapshot(method)
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter moved"
    assert not torch.equal(before[first_layer(method)], after[first_layer(method)])
    # Targets / teachers: never a gradient.
    assert all(p.grad is None for p in method.parameters() if not p.requires_grad)
    if isinstance(method, MomentumSSLMethod):
        assert set(scheduled) >= {"momentum"} and 0.0 < scheduled["momentum"] <= 1.0
        # on_step moved the target toward the updated online net by (1 - m).
        changed = [k for k in frozen_before if not torch.equal(frozen_before[k], dict(method.named_parameters())[k])]
        assert changed

    features = method.embed(views_for(name, in_chans)[0])
    assert features.shape == (N, method.backbone.num_features) and not features.requires_grad
    assert method.training  # embed restores the mode


@pytest.mark.parametrize("name", MOMENTUM)
def test_on_step_applies_the_ema_formula_with_the_scheduled_momentum(name):
    torch.manual_seed(0)
    method = tiny(name)
    pairs = method.momentum_pairs()
    with torch.no_grad():  # make online and target differ
        for online, _ in pairs:
            for p in online.parameters():
                p.add_(torch.randn_like(p))
    before = [[p.clone() for p in target.parameters()] for _, target in pairs]
    m = method.on_step(5, 10)["momentum"]
    # Halfway, the cosine schedule (and I-JEPA's linear one) is at the mean of its two ends.
    assert m == pytest.approx((method.base_momentum + method.final_momentum) / 2)
    for (online, target), t_before in zip(pairs, before):
        for t_new, t_old, o_p in zip(target.parameters(), t_before, online.parameters()):
            assert torch.allclose(t_new, m * t_old + (1 - m) * o_p, atol=1e-6)


def test_moco_v2_momentum_is_constant_and_queue_fills():
    method = tiny("moco_v2", symmetric=True)
    assert method.on_step(0, 100)["momentum"] == method.on_step(99, 100)["momentum"] == 0.999
    start = method.queue.negatives
    method(views_for("moco_v2"))
    assert int(method.queue.pointer) == 2 * N  # symmetric: both views' keys
    assert torch.equal(method.queue.negatives[2 * N :], start[2 * N :])
    assert not torch.equal(method.queue.negatives[: 2 * N], start[: 2 * N])


def test_dino_teacher_temperature_warms_up():
    method = tiny("dino", temperature=0.07, warmup_temperature=0.04, temperature_warmup_fraction=0.5)
    assert method.criterion.teacher_temp == pytest.approx(0.04)
    temps = [method.on_step(step, 20)["teacher_temperature"] for step in range(20)]
    assert temps[4] == pytest.approx(0.04 + 0.03 * 5 / 10)
    assert temps[-1] == pytest.approx(0.07)
    assert all(a <= b for a, b in zip(temps, temps[1:]))


def test_moco_v3_temperature_defaults_follow_the_backbone():
    assert tiny("moco_v3").temperature == 1.0
    assert tiny("moco_v3", temperature=0.3).temperature == 0.3


def test_methods_refuse_too_few_views():
    with pytest.raises(ValueError, match="at least 2 views"):
        tiny("simclr")([torch.randn(N, 1, 16, 16)])


def tiny_vit(name, **knobs):
    return tiny_method(name, vit=True, **knobs)


@pytest.mark.parametrize("name", ALL)
def test_vit_backbone_methods_take_a_step(name):
    torch.manual_seed(0)
    method = tiny_vit(name)
    if name == "moco_v3":  # moco-v3 builder: 3-layer projector and T = 0.2 for ViTs
        assert method.temperature == 0.2
        assert sum(isinstance(m, torch.nn.Linear) for m in method.projector.modules()) == 3
    views = tiny_views(name, N, vit=True)  # DINO: 2 global + 2 local crops at half the size
    out = method(views)
    out["loss"].backward()
    assert math.isfinite(out["loss"].item())
    assert method.backbone.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert method.embed(views[0]).shape == (N, 192)


def test_dino_evaluates_the_teacher_others_the_online_backbone():
    x = torch.randn(N, 1, 32, 32)
    for name, evaluated in [("dino", "teacher_backbone"), ("byol", "backbone")]:
        method = tiny(name)
        with torch.no_grad():  # make the student differ from the teacher
            for p in method.backbone.parameters():
                p.add_(0.1)
        expected = getattr(method, evaluated).eval()(x)
        method.train()
        assert torch.allclose(method.embed(x), expected)
