"""VICReg and Barlow Twins: wiring (one optimizer step on a tiny ResNet and ViT, knobs, the projector),
and what each learns on a problem whose answer is known.

The learning problem: 16-d inputs x = Q [s; n] (Q a fixed random rotation) mix a 4-d signal s, the
same in both views of a sample, with 12-d nuisance n drawn afresh for every view: the "augmentation"
changes n only. A method that works learns backbone features that are invariant to n (the two views'
features agree) and still carry s (linearly decodable), and its own anti-collapse term is what keeps
them from shrinking to a constant (VICReg's variance) or to a few redundant dimensions (the
covariance / off-diagonal terms). A small MLP trains in about a second per run.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from sslray.methods.barlow_twins import BarlowTwins, BarlowTwinsConfig
from sslray.methods.vicreg import VICReg, VICRegConfig

from .tiny import tiny_method, tiny_views

N = 6
METHODS = ["vicreg", "barlow_twins"]
TERMS = {"vicreg": {"invariance", "variance", "covariance"}, "barlow_twins": {"on_diagonal", "off_diagonal"}}


@pytest.mark.parametrize(
    "name, in_chans, vit",
    [("vicreg", 1, False), ("vicreg", 3, True), ("barlow_twins", 3, False), ("barlow_twins", 1, True)],
)
def test_one_optimizer_step(name, in_chans, vit):
    torch.manual_seed(0)
    method = tiny_method(name, in_chans, vit=vit)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05)
    before = {k: p.detach().clone() for k, p in method.named_parameters()}

    out = method(tiny_views(name, N, in_chans))
    assert set(out) == {"loss", "embed_std"} | TERMS[name]
    assert math.isfinite(out["loss"].item()) and out["loss"].item() > 0
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    assert 0.0 < out["embed_std"].item() < 1.0
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    assert method.on_step(0, 10) == {}  # no schedule, no target network

    moved = {k for k, p in method.named_parameters() if not torch.equal(before[k], p)}
    first = "backbone.vit.patch_embed.proj.weight" if vit else "backbone.net.conv1.weight"
    assert first in moved and "projector.layers.0.weight" in moved
    features = method.embed(tiny_views(name, N, in_chans)[0])
    assert features.shape == (N, method.num_features) and not features.requires_grad


@pytest.mark.parametrize("name", METHODS)
def test_projector_output_bias_gets_no_gradient(name):
    # The papers' projectors have no output bias; sslray's keeps one, which both losses ignore: a
    # shift shared by the two views changes neither the differences nor the batch statistics.
    torch.manual_seed(0)
    method = tiny_method(name)
    method(tiny_views(name, N))["loss"].backward()
    last = method.projector.layers[-1]
    assert last.bias.grad.abs().max() < 1e-6 * last.weight.grad.abs().max()


def test_knobs_reach_the_loss_and_the_projector():
    vicreg = tiny_method(
        "vicreg",
        invariance_weight=10.0,
        variance_weight=5.0,
        covariance_weight=0.5,
        proj_hidden_dim=48,
        proj_dim=24,
        proj_layers=2,
    )
    assert (
        vicreg.criterion.invariance_weight,
        vicreg.criterion.variance_weight,
        vicreg.criterion.covariance_weight,
    ) == (10.0, 5.0, 0.5)
    widths = [(m.in_features, m.out_features) for m in vicreg.projector.modules() if isinstance(m, nn.Linear)]
    assert widths == [(512, 48), (48, 24)]
    barlow = tiny_method("barlow_twins", offdiag_weight=0.02, proj_hidden_dim=40, proj_dim=20)
    assert barlow.criterion.offdiag_weight == 0.02
    widths = [(m.in_features, m.out_features) for m in barlow.projector.modules() if isinstance(m, nn.Linear)]
    assert widths == [(512, 40), (40, 40), (40, 20)]  # 3 layers by default, as in both papers


def test_paper_defaults():
    assert (VICRegConfig().invariance_weight, VICRegConfig().variance_weight, VICRegConfig().covariance_weight) == (
        25.0,
        25.0,
        1.0,
    )
    assert BarlowTwinsConfig().offdiag_weight == 5e-3
    for cfg in (VICRegConfig(), BarlowTwinsConfig()):
        assert (cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers) == (8192, 8192, 3)


def test_the_loss_is_the_criterion_on_the_projections_of_the_first_two_views():
    torch.manual_seed(0)
    method = tiny_method("barlow_twins")
    views = tiny_views("barlow_twins", N) + [torch.randn(N, 1, 8, 8)]  # a third view is ignored
    torch.manual_seed(1)
    loss = method(views)["loss"]
    z0, z1 = (method.projector(method.backbone(v)) for v in views[:2])
    assert loss.item() == pytest.approx(method.criterion(z0, z1)[0].item(), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 views"):
        method(views[:1])


# ------------------------------------------------------------------------------- learning tests

SIGNAL, NUISANCE = 4, 12
STEPS, BATCH, LR = 300, 256, 3e-3


class MLPBackbone(nn.Module):
    num_features = 32

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(SIGNAL + NUISANCE, 64, bias=False),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Linear(64, self.num_features),
        )

    def forward(self, x):
        return self.net(x)


def r_squared(features: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over target columns of the R^2 of a least-squares linear fit (with intercept) on ``features``."""
    x = torch.cat([features, torch.ones(len(features), 1)], 1).double()
    y = target.double()
    residual = y - x @ torch.linalg.lstsq(x, y).solution
    return (1 - residual.pow(2).sum(0) / (y - y.mean(0)).pow(2).sum(0)).mean().item()


@functools.cache
def train(name: str, **knobs) -> dict[str, float]:
    """Train ``name`` (64-wide projector) on the signal + nuisance problem; measure its backbone features
    on 2000 held-out pairs before and after: how much of their variance differs between the two views
    (``invariance_gap``: 0 = invariant, ~0.8 at init) and how well they predict the signal (``signal_r2``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide MLP gains nothing from threads; on a loaded 2-core machine they spin
    try:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        rotation = torch.linalg.qr(torch.randn(SIGNAL + NUISANCE, SIGNAL + NUISANCE, generator=generator))[0]

        def sample(n):
            signal = torch.randn(n, SIGNAL, generator=generator)
            views = [
                torch.cat([signal, torch.randn(n, NUISANCE, generator=generator)], 1) @ rotation.T for _ in range(2)
            ]
            return signal, views

        cls, cfg = (VICReg, VICRegConfig) if name == "vicreg" else (BarlowTwins, BarlowTwinsConfig)
        method = cls(MLPBackbone(), cfg(proj_hidden_dim=64, proj_dim=64, **knobs))
        test_signal, test_views = sample(2000)

        def measure(prefix):
            f0, f1 = method.embed(test_views[0]), method.embed(test_views[1])
            return {
                f"{prefix}invariance_gap": ((f0 - f1).pow(2).sum(1).mean() / (2 * f0.var(0).sum())).item(),
                f"{prefix}signal_r2": r_squared(f0, test_signal),
            }

        result = measure("init_")
        optimizer = torch.optim.Adam(method.parameters(), lr=LR)
        for _ in range(STEPS):
            out = method(sample(BATCH)[1])
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
        method.train()
        with torch.no_grad():  # the embedding where the loss is computed, on the held-out pairs
            projections = method.projector(method.backbone(test_views[0]))
        return {
            **result,
            **measure(""),
            **{k: v.item() for k, v in out.items()},
            "projection_std": projections.std(0).mean().item(),
        }
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", METHODS)
def test_learns_features_invariant_to_the_nuisance_that_keep_the_signal(name):
    result = train(name)
    assert result["init_invariance_gap"] > 0.6 and result["init_signal_r2"] < 0.9  # what a random MLP gives
    assert result["invariance_gap"] < 0.25
    assert result["signal_r2"] > 0.95
    if name == "vicreg":  # the variance hinge is met: every projected dimension keeps std ~ gamma = 1
        assert result["variance"] < 0.1 and result["projection_std"] > 0.9
    else:  # C_ii -> 1: each projected dimension agrees across views
        assert result["on_diagonal"] < 1.0


def test_vicreg_without_the_variance_term_collapses():
    # mu = 0 (VICReg sec. 3.1: variance is the term that prevents collapse): invariance and covariance
    # are both minimised by a constant embedding, and training shrinks the projections towards one.
    collapsed, default = train("vicreg", variance_weight=0.0), train("vicreg")
    assert collapsed["projection_std"] < 0.05 < 0.9 < default["projection_std"]
    assert collapsed["variance"] > 1.5  # the hinge, if it were weighted, would be near its maximum 1.98
    assert collapsed["loss"] < 0.05  # ... while the loss being optimised is ~0


@pytest.mark.parametrize(
    "name, knob, term",
    [("vicreg", "covariance_weight", "covariance"), ("barlow_twins", "offdiag_weight", "off_diagonal")],
)
def test_the_redundancy_term_decorrelates_the_dimensions(name, knob, term):
    # Without it the projected dimensions end up redundant copies of a few directions (the term, left
    # unweighted, is many times larger), and the backbone keeps less of the 4-d signal.
    without, default = train(name, **{knob: 0.0}), train(name)
    assert without[term] > 5 * default[term]
    assert without["signal_r2"] < default["signal_r2"] - 0.02
