"""Mixed precision for the train loop: the autocast dtype a run uses, and fp16's gradient scaler.

``train.precision`` in a recipe:

* ``fp32``: no autocast.
* ``bf16``: ``torch.autocast(dtype=bfloat16)``. bf16 keeps float32's exponent range, so gradients
  need no scaling (Kalamkar et al. 2019). Runs on CPU too (slower than fp32 there, but it is the
  exact code path a GPU run takes, which is how the tests cover it).
* ``fp16``: autocast to float16 plus a ``torch.amp.GradScaler``: float16's 5-bit exponent flushes
  small gradients to zero unless the loss is scaled up first (Micikevicius et al. 2018, "Mixed
  Precision Training", sec. 3.2). For GPUs without bf16 (before NVIDIA Ampere: V100, T4).
* ``auto``: bf16 on a CUDA device that supports it, fp16 on one that does not, fp32 on CPU.

Whatever the autocast dtype, the optimizer keeps float32 master weights (autocast only changes the
dtype of op outputs), and the losses do their softmax / statistics in float32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(setting: str, device: torch.device) -> str:
    """``train.precision`` made concrete for ``device``: ``fp32``, ``bf16`` or ``fp16``."""
    if setting != "auto":
        return setting
    if device.type != "cuda":
        return "fp32"  # CPU autocast is slower than float32 on most CPUs
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class MixedPrecision:
    """Autocast and (for fp16) loss scaling around a train step::

        with precision.autocast():
            loss = model(views)["loss"]
        precision.backward(loss)
        if stepping:
            precision.step(optimizer)   # unscales, skips a step whose gradients overflowed

    ``state_dict`` / ``load_state_dict`` carry the scaler's current scale through checkpoints, so a
    resumed fp16 run does not start again from 2**16 and skip its first steps finding the scale.
    """

    def __init__(self, setting: str, device: torch.device):
        self.name = resolve_precision(setting, device)
        self.device_type = device.type
        self.dtype = AUTOCAST_DTYPES.get(self.name)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)  # a plain optimizer.step() when the scaler is off
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler.is_enabled() else {}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
