"""Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, "Barlow Twins: Self-Supervised
Learning via Redundancy Reduction"), and ``off_diagonal``, which VICReg's covariance term uses too.

The cross-correlation is a statistic of the whole batch: embeddings from other ranks are gathered
through ``sslray.nn.dist`` (with gradient), so every rank computes the global-batch loss and on one
process it is exactly the single-device formula.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslray.nn import dist


def off_diagonal(matrix: Tensor) -> Tensor:
    """The D * (D - 1) off-diagonal entries of a square [D, D] matrix, as a flat tensor (Barlow Twins,
    Algorithm 1)."""
    d = matrix.shape[0]
    if matrix.shape != (d, d):
        raise ValueError(f"off_diagonal needs a square matrix, got shape {tuple(matrix.shape)}")
    # Row-major, the entries after each diagonal one up to the next diagonal one are D consecutive
    # off-diagonal entries: drop the last element and view the rest as [D - 1, D + 1].
    return matrix.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def off_diagonal_square_sum(a: Tensor, b: Tensor) -> Tensor:
    """sum_{i != j} (a^T b)_ij^2 for ``a``, ``b`` [N, D]: the off-diagonal part of the squared
    Frobenius norm of the D x D product (Barlow Twins' cross-correlation, VICReg's covariance, before
    their scaling by 1/N or 1/(N - 1)).

    With a batch of at most half the width (2N <= D, as in both papers: a global batch of 2048 for
    8192 dimensions), the D x D matrix is never formed: ||a^T b||_F^2 = tr(a a^T b b^T) =
    sum(a a^T * b b^T) with two N x N Gram matrices, minus the squared diagonal
    (a^T b)_ii = sum_n a_ni b_ni. O(N^2 D) time and N x N memory instead of O(N D^2) and several D x D
    buffers (256 MB each at D = 8192). The subtraction is exact up to an absolute error of a small
    multiple of float32's 6e-8 times ||a^T b||_F^2, far below anything that moves training. Wider
    batches take the D x D product and select its off-diagonal entries (``off_diagonal``), exactly as
    Algorithm 1 writes it.
    """
    n, d = a.shape
    if 2 * n > d:
        return off_diagonal(a.T @ b).pow(2).sum()
    gram_a = a @ a.T  # [N, N]
    gram_b = gram_a if b is a else b @ b.T
    return (gram_a * gram_b).sum() - (a * b).sum(dim=0).pow(2).sum()


def statistics_dtype(z: Tensor) -> torch.dtype:
    """float32 for bf16 / fp16 embeddings (float64 stays float64). Batch statistics need it: a bf16
    correlation near 1 has a resolution of 2^-8, so (1 - C_ii)^2 would be rounding noise, and an fp16
    sum of the D^2 - D squared off-diagonal correlations of collapsed embeddings (all 1) passes fp16's
    maximum, 65504, once D > 256."""
    return torch.promote_types(z.dtype, torch.float32)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins' loss (Zbontar et al. 2021, sec. 2.1, eq. 1-2 and Algorithm 1):

        z_hat = (z - mean_b z) / sqrt(var_b z + eps)             per dimension, over the global batch
        C_ij  = 1/N sum_b z_hat0[b, i] * z_hat1[b, j]            the D x D cross-correlation of the views
        loss  = sum_i (1 - C_ii)^2  +  lambda * sum_i sum_{j != i} C_ij^2

    The first (invariance) term makes each dimension agree across the two views; the second
    (redundancy reduction) decorrelates the dimensions. ``var_b`` is the biased batch variance and
    ``eps`` = 1e-5, as the paper's implementation standardises with an affine-free BatchNorm1d (the
    default eps of BatchNorm): identical standardised views then give C_ii = 1 up to eps, where
    Algorithm 1's unbiased ``std`` would give (N - 1) / N. Sums, not means over D, as in eq. 1: the
    loss grows with the projector width, and lambda = 5e-3 (sec. 2.2) weighs these sums.

    Shapes: ``z0``, ``z1``: [N, D] (any float dtype; N * world_size >= 2) -> scalar loss (float32, or
    float64 for float64 inputs) and ``terms``, the two unweighted sums ``on_diagonal`` and
    ``off_diagonal`` (detached, for logging). Rows of other ranks are gathered with gradient; each
    rank's loss is the global-batch loss.
    """

    def __init__(self, offdiag_weight: float = 5e-3, eps: float = 1e-5):
        super().__init__()
        if offdiag_weight < 0:
            raise ValueError(f"offdiag_weight must be >= 0, got {offdiag_weight}")
        self.offdiag_weight = offdiag_weight
        self.eps = eps

    def forward(self, z0: Tensor, z1: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if z0.ndim != 2 or z0.shape != z1.shape:
            raise ValueError(
                f"expected two [N, D] embeddings of one shape, got {tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        dtype = statistics_dtype(z0)
        # Autocast off: under bf16 autocast the matmul below would run in bf16 again (see statistics_dtype).
        with torch.autocast(device_type=z0.device.type, enabled=False):
            # Gathered after the cast: every backend all-gathers float32 (gloo's low-precision support varies).
            z0 = dist.gather_with_grad(z0.to(dtype))  # [W*N, D]
            z1 = dist.gather_with_grad(z1.to(dtype))
            n = z0.shape[0]
            if n < 2:
                raise ValueError("Barlow Twins needs at least 2 samples per (global) batch for batch statistics")
            z0, z1 = self.standardise(z0), self.standardise(z1)
            # C = z0^T z1 / n is [D, D]; its diagonal is cheap, and its off-diagonal square sum is taken
            # without forming it where the batch is narrow (off_diagonal_square_sum).
            on_diagonal = (1 - (z0 * z1).sum(dim=0) / n).pow(2).sum()
            off_diag = off_diagonal_square_sum(z0, z1) / n**2
            loss = on_diagonal + self.offdiag_weight * off_diag
        return loss, {"on_diagonal": on_diagonal.detach(), "off_diagonal": off_diag.detach()}

    def standardise(self, z: Tensor) -> Tensor:
        """[N, D] -> [N, D] with zero mean and unit (biased) variance per dimension over the batch."""
        mean = z.mean(dim=0)
        var = z.var(dim=0, correction=0)
        return (z - mean) / torch.sqrt(var + self.eps)
