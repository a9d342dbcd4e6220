"""Every registered method under mixed precision, on CPU, through the worker's own step (``train_step``):
the code a GPU run executes with ``train.precision`` bf16 (the default there) or fp16.

CPU autocast rounds to bf16/fp16 exactly as CUDA autocast does, so a dtype mismatch, an op with no
low-precision kernel or a loss that overflows shows up here without a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from sslray.methods.registry import METHODS, build_method
from sslray.nn.optim import build_optimizer
from sslray.recipe import recipe_from_dict
from sslray.train.epoch import Learner, Progress, StepSettings, train_step
from sslray.train.precision import MixedPrecision, resolve_precision

from .tiny import RESNET_SIZE, image_size, tiny_recipe

N = 8
LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


def tiny_run(name: str, precision: str, vit: bool | None = None):
    size = image_size(name, vit)
    # DINO's local crops: half size on a ViT, full size on a ResNet (at 16 px its last stage would get
    # a 1x1 input, where torch's CPU bf16 convolution returns garbage gradients; see tiny.py).
    local_size = size if size == RESNET_SIZE else size // 2
    recipe = recipe_from_dict(
        {
            **tiny_recipe(name, vit=vit),
            "data": {"augment": {"size": size, "local_size": local_size, "local_crops": 2}},
            "optim": {"name": "adamw", "base_lr": 1e-3},
            "train": {"epochs": 1, "batch_size": N, "warmup_epochs": 0, "grad_accum_steps": 2, "precision": precision},
        }
    )
    torch.manual_seed(0)
    method = build_method(recipe)
    optimizer = build_optimizer(method, recipe.optim, recipe.train.batch_size)
    settings = StepSettings.of(recipe, total_steps=10, device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    views = [
        torch.randint(0, 256, (N, 1, spec.size, spec.size), dtype=torch.uint8, generator=generator)
        for spec in recipe.data.augment.view_specs()
    ]
    return method, optimizer, settings, views


def output_dtypes(method: torch.nn.Module) -> set[torch.dtype]:
    """Records the output dtype of every Linear / Conv2d while the hooks are in place."""
    seen: set[torch.dtype] = set()

    def hook(module, inputs, output):
        seen.add(output.dtype)

    for module in method.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.register_forward_hook(hook)
    return seen


# bf16 on each method's own tiny backbone; fp16 (pre-Ampere GPUs) on a ViT for all of them, because
# torch's CPU float16 convolutions are ~20x slower than its bf16 ones and a ResNet step takes ~30 s.
@pytest.mark.parametrize("precision, vit", [("bf16", None), ("fp16", True)])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_takes_a_mixed_precision_step(name, precision, vit):
    method, optimizer, settings, views = tiny_run(name, precision, vit)
    assert settings.precision.dtype == LOW[precision]
    dtypes = output_dtypes(method)
    before = {k: p.detach().clone() for k, p in method.named_parameters() if p.requires_grad}

    # Step 1 of 2 accumulates only: the gradients are there to look at.
    out, scheduled = train_step(Learner(method, method, optimizer, settings, Progress()), views, 0, 0)
    assert math.isfinite(out["loss"].item()) and scheduled == {}
    assert dtypes == {LOW[precision]}, f"layers ran in {dtypes}: autocast was not active"
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)  # float32 master weights
    if precision == "bf16":  # fp16's are scaled by 2**16 and may overflow: the scaler's business below
        assert all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)

    # Step 2 of 2: the optimizer step (fp16: through the gradient scaler, which skips a step whose
    # scaled gradients overflowed and halves the scale, from 2**16: a few halvings at most).
    progress = Progress()
    for index in range(1, 32, 2):
        train_step(Learner(method, method, optimizer, settings, progress), views, index, 0)
        moved = [k for k, p in method.named_parameters() if p.requires_grad and not torch.equal(before[k], p)]
        if moved:
            break
    assert moved, "no optimizer step was taken"
    assert all(torch.isfinite(p).all() for p in method.parameters())
    assert progress.step >= 1


def test_fp16_scaler_state_round_trips_and_bf16_needs_none():
    cpu = torch.device("cpu")
    fp16 = MixedPrecision("fp16", cpu)
    assert fp16.scaler.is_enabled() and fp16.state_dict()["scale"] == 2.0**16
    fp16.scaler.load_state_dict({**fp16.state_dict(), "scale": 1024.0})  # as after overflows lowered it
    restored = MixedPrecision("fp16", cpu)
    restored.load_state_dict(fp16.state_dict())
    assert restored.scaler.get_scale() == 1024.0
    bf16 = MixedPrecision("bf16", cpu)
    assert not bf16.scaler.is_enabled() and bf16.state_dict() == {}
    assert MixedPrecision("fp32", cpu).dtype is None


def test_auto_precision_is_fp32_on_cpu_and_explicit_settings_stay():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    for setting in ("fp32", "bf16", "fp16"):
        assert resolve_precision(setting, cpu) == setting


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_precision_on_a_gpu_is_bf16_where_supported():
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto", torch.device("cuda")) == expected
