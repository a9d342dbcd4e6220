"""Masked-patch reconstruction losses (MAE, MACRL).

Both losses compare predicted and target pixels per patch and average over the *masked* patches only:
visible patches carry no reconstruction signal (He et al. 2021, §3 "Reconstruction target": computing
the loss only on masked patches, as in BERT).

Shapes everywhere: ``pred``/``target`` [N, L, P] with P = p*p*C pixels per patch (``patchify`` order),
``mask`` [N, L] with 1 = masked (reconstruct), 0 = visible (ignored). Inputs of any float dtype; the
per-patch statistics and the loss are float32 (a bf16 variance of 16-pixel patches is too coarse).
"""

from __future__ import annotations

from torch import Tensor, nn


def normalize_patch_pixels(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch normalisation of the target, MAE §A.1 ("normalized pixels as the target"):

        t'_{n,l,j} = (t_{n,l,j} - mean_j t_{n,l,j}) / sqrt(var_j t_{n,l,j} + eps)

    with the unbiased variance over the P pixels of each patch (as in ``models_mae.py``).
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def _masked_mean(per_patch: Tensor, mask: Tensor) -> Tensor:
    """Mean of [N, L] per-patch losses over masked patches (0 if nothing is masked)."""
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MaskedMSELoss(nn.Module):
    """MAE loss: mean squared error over masked patches.

        loss = sum_{n,l} m_{n,l} * (1/P) sum_j (pred_{n,l,j} - t_{n,l,j})^2  /  sum_{n,l} m_{n,l}

    where t is the target, per-patch normalised (``normalize_patch_pixels``) when ``norm_pix_loss``.
    forward(pred [N, L, P], target [N, L, P], mask [N, L]) -> scalar.
    """

    def __init__(self, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.norm_pix_loss = norm_pix_loss

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        pred, target, mask = pred.float(), target.float(), mask.float()
        if self.norm_pix_loss:
            target = normalize_patch_pixels(target)
        per_patch = (pred - target).pow(2).mean(dim=-1)
        return _masked_mean(per_patch, mask)


class MaskedL1Loss(nn.Module):
    """MACRL reconstruction loss (Yao et al. 2022, "L1 reconstruction loss"): mean absolute error over masked patches.

        loss = sum_{n,l} m_{n,l} * (1/P) sum_j |pred_{n,l,j} - t_{n,l,j}|  /  sum_{n,l} m_{n,l}

    t per-patch normalised when ``norm_pix_loss``.
    forward(pred [N, L, P], target [N, L, P], mask [N, L]) -> scalar.
    """

    def __init__(self, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.norm_pix_loss = norm_pix_loss

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        pred, target, mask = pred.float(), target.float(), mask.float()
        if self.norm_pix_loss:
            target = normalize_patch_pixels(target)
        per_patch = (pred - target).abs().mean(dim=-1)
        return _masked_mean(per_patch, mask)
