"""Feature-prediction loss of I-JEPA: regress predicted patch features onto layer-normed target features.

Assran et al. 2023, sec. 3 "Loss": the average distance between the predicted patch representations
and those of the target encoder over the M target blocks. The target encoder's patch features are
first normalised over the feature dimension (``F.layer_norm`` without affine parameters, as in the
official ``train.py``); the target gets no gradient (it comes from the EMA encoder: stop-gradient is
part of the definition here, as in ``regression.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class FeaturePredictionLoss(nn.Module):
    """I-JEPA's loss on patch features.

        t = (h - mean_j h_j) / sqrt(var_j h_j + 1e-5)      (layer norm over the D features, no affine)
        smooth_l1:  loss = mean_{n,m,k,j} huber_beta(p - t),
                    huber_beta(x) = 0.5 x^2 / beta if |x| < beta else |x| - 0.5 beta   (beta = 1)
        mse:        loss = mean_{n,m,k,j} (p - t)^2

    ``smooth_l1`` is what the official code trains with (``F.smooth_l1_loss``); ``mse`` is the squared
    L2 distance of the paper's sec. 3, divided by D (a mean over features instead of a sum). Every
    element weighs the same, so with equal-sized target blocks this is also the mean over blocks.

    Shapes: ``prediction`` [..., D] (I-JEPA: [N, M, Kt, D]) and ``target`` of the same shape -> scalar.
    The arithmetic runs in float32 for float16 / bfloat16 inputs (float64 stays float64): the layer norm
    and the mean over N * M * Kt * D terms would lose digits in a 16-bit type.
    """

    def __init__(self, kind: Literal["smooth_l1", "mse"] = "smooth_l1", beta: float = 1.0) -> None:
        super().__init__()
        if kind not in ("smooth_l1", "mse"):
            raise ValueError(f"kind must be 'smooth_l1' or 'mse', got {kind!r}")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.kind = kind
        self.beta = beta

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        dtype = torch.promote_types(prediction.dtype, torch.float32)
        prediction = prediction.to(dtype)
        target = F.layer_norm(target.detach().to(dtype), target.shape[-1:])
        if self.kind == "smooth_l1":
            return F.smooth_l1_loss(prediction, target, beta=self.beta)
        return F.mse_loss(prediction, target)
