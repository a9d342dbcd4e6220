"""Every loss takes float32, float64, bfloat16 and float16 inputs: a finite loss close to the float64
value of the same (rounded) inputs, and finite gradients in the inputs' own dtype.

Under autocast a loss receives bf16 (GPU default) or fp16 (pre-Ampere GPUs) activations; a loss that
indexes, masks or accumulates in the input's dtype breaks or loses its digits there.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch
from torch import nn

import sslray.losses
from sslray.losses.barlow_twins import BarlowTwinsLoss
from sslray.losses.dino import DINOLoss
from sslray.losses.feature_prediction import FeaturePredictionLoss
from sslray.losses.infonce import InfoNCELoss, MemoryQueue, NTXentLoss
from sslray.losses.reconstruction import MaskedL1Loss, MaskedMSELoss
from sslray.losses.regression import NegativeCosineLoss, NormalizedMSELoss
from sslray.losses.vicreg import VICRegLoss

N, D = 8, 16
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# Relative error allowed against float64 on the same rounded inputs: the loss's own arithmetic only.
REL_TOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def first(out):
    return out[0] if isinstance(out, tuple) else out


def mask(*shape):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(1)) < 0.75).float()


# loss class -> (build it, input shapes, call it on the inputs -> scalar loss)
CASES = {
    NTXentLoss: (lambda: NTXentLoss(0.5), [(N, D)] * 2, lambda loss, x: first(loss(*x))),
    InfoNCELoss: (lambda: InfoNCELoss(0.2), [(N, D)] * 3, lambda loss, x: first(loss(x[0], x[1], x[2].detach()))),
    DINOLoss: (
        lambda: DINOLoss(D, teacher_temp=0.04),
        [(N, D)] * 3,
        lambda loss, x: loss(list(x), [t.detach() for t in x[:2]]),
    ),
    MaskedMSELoss: (lambda: MaskedMSELoss(), [(N, 4, D)] * 2, lambda loss, x: loss(x[0], x[1], mask(N, 4))),
    MaskedL1Loss: (lambda: MaskedL1Loss(), [(N, 4, D)] * 2, lambda loss, x: loss(x[0], x[1], mask(N, 4))),
    NormalizedMSELoss: (lambda: NormalizedMSELoss(), [(N, D)] * 2, lambda loss, x: loss(*x)),
    NegativeCosineLoss: (lambda: NegativeCosineLoss(), [(N, D)] * 2, lambda loss, x: loss(*x)),
    VICRegLoss: (lambda: VICRegLoss(), [(N, D)] * 2, lambda loss, x: first(loss(*x))),
    BarlowTwinsLoss: (lambda: BarlowTwinsLoss(), [(N, D)] * 2, lambda loss, x: first(loss(*x))),
    FeaturePredictionLoss: (lambda: FeaturePredictionLoss(), [(N, 2, 3, D)] * 2, lambda loss, x: loss(*x)),
}
NOT_LOSSES = {MemoryQueue}  # a buffer of negatives, no loss value


def defined_modules() -> set[type]:
    found = set()
    for info in pkgutil.iter_modules(sslray.losses.__path__):
        module = importlib.import_module(f"sslray.losses.{info.name}")
        found |= {
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, nn.Module) and cls.__module__ == module.__name__
        }
    return found


def test_every_loss_module_has_a_dtype_case():
    assert defined_modules() - NOT_LOSSES == set(CASES)


def run(cls, dtype):
    build, shapes, call = CASES[cls]
    generator = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_() for shape in shapes
    ]
    loss = call(build(), inputs)
    loss.backward()
    return loss, inputs


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_loss_accepts_each_float_dtype(cls, dtype):
    loss, inputs = run(cls, dtype)
    reference, _ = run_on_rounded(cls, inputs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert loss.double().item() == pytest.approx(reference.item(), rel=REL_TOL[dtype], abs=REL_TOL[dtype])
    for x in inputs:
        if x.grad is not None:
            assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    assert any(x.grad is not None and x.grad.abs().sum() > 0 for x in inputs)


def run_on_rounded(cls, inputs):
    """The float64 loss of exactly the values the low-precision run saw."""
    build, _, call = CASES[cls]
    rounded = [x.detach().double().requires_grad_() for x in inputs]
    return call(build(), rounded), rounded


def test_nt_xent_under_bf16_autocast_matches_float32():
    """The failure that would have met the first GPU step: bf16 logits and a float32 -inf."""
    generator = torch.Generator().manual_seed(0)
    z0, z1 = (torch.randn(N, D, generator=generator) for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, top1 = NTXentLoss(0.1)(z0, z1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(NTXentLoss(0.1)(z0, z1)[0].item(), rel=2e-2)
