"""``train.compile``: backbones compiled in place (torch.compile, inductor on CPU here) train exactly
like eager ones, and their checkpoints are interchangeable."""

from __future__ import annotations

import pytest
import torch

from sslray.nn.backbones import compile_backbones
from tests.methods.tiny import tiny_method, tiny_views


def two_steps(method) -> list[float]:
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for step in range(2):
        torch.manual_seed(step)  # the same masks / random choices in both runs
        out = method(tiny_views("mae", 8, generator=torch.Generator().manual_seed(step)))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        method.on_step(step, 10)
        losses.append(out["loss"].item())
    return losses


def test_every_backbone_is_compiled_in_place():
    method = tiny_method("moco_v3", vit=True)
    keys = list(method.state_dict())
    assert compile_backbones(method) == 2  # the online backbone and its momentum copy
    assert list(method.state_dict()) == keys  # in place: no "_orig_mod." prefixes in checkpoints


def test_compiled_backbone_trains_like_the_eager_one():
    """MAE: the compiled blocks run the masked encoder (visible tokens only) and the decoder's input."""
    torch.manual_seed(0)
    eager = tiny_method("mae")
    compiled = tiny_method("mae")
    compiled.load_state_dict(eager.state_dict())
    assert compile_backbones(compiled) == 1
    assert two_steps(compiled) == pytest.approx(two_steps(eager), rel=1e-4)
    for (k, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
