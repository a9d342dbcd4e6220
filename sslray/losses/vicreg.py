"""VICReg's loss (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization
for Self-Supervised Learning").

Variance and covariance are statistics of the whole batch: embeddings from other ranks are gathered
through ``sslray.nn.dist`` (with gradient), so every rank computes the global-batch loss and on one
process it is exactly the single-device formula.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sslray.losses.barlow_twins import off_diagonal_square_sum, statistics_dtype
from sslray.nn import dist


class VICRegLoss(nn.Module):
    """Invariance + variance + covariance (VICReg, sec. 3.2, eq. 1-6, and Algorithm 1):

        s(Z, Z') = 1/(N D) sum_b sum_k (z[b, k] - z'[b, k])^2                      invariance: the MSE
        v(Z)     = 1/D sum_k max(0, gamma - sqrt(Var_b z[:, k] + eps))            variance hinge per dimension
        C(Z)     = 1/(N - 1) sum_b (z_b - mean z)(z_b - mean z)^T                 D x D covariance
        c(Z)     = 1/D sum_{k != l} C(Z)_kl^2                                     covariance: off-diagonal
        loss     = lambda * s(Z, Z') + mu * (v(Z) + v(Z')) + nu * (c(Z) + c(Z'))

    with ``Var_b`` the unbiased batch variance, gamma = 1 and eps = 1e-4 (sec. 3.2; Algorithm 1), and
    the paper's weights lambda = mu = 25, nu = 1 (sec. 4.1, implementation details; app. D.4). The
    invariance term is the mean over all N * D entries, as Algorithm 1's ``mse_loss`` (eq. 5 writes the
    sum over D, which would multiply lambda by D); the variance terms of the two branches are summed,
    as in eq. 6 and Algorithm 1.

    Shapes: ``z0``, ``z1``: [N, D] (any float dtype; N * world_size >= 2) -> scalar loss (float32, or
    float64 for float64 inputs) and ``terms``, the unweighted ``invariance``, ``variance`` (v(Z) + v(Z'))
    and ``covariance`` (c(Z) + c(Z')), detached, for logging. All three terms use the global batch
    (rows of other ranks gathered with gradient); each rank's loss is the global-batch loss.
    Collapsed embeddings (every row equal) give invariance 0, variance 2 * (gamma - sqrt(eps)) and
    covariance 0: only the variance term resists a collapse.
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
    ):
        super().__init__()
        for name, value in (
            ("invariance_weight", invariance_weight),
            ("variance_weight", variance_weight),
            ("covariance_weight", covariance_weight),
            ("gamma", gamma),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0 (it keeps the std's gradient finite at zero variance), got {eps}")
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.gamma = gamma
        self.eps = eps

    def forward(self, z0: Tensor, z1: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if z0.ndim != 2 or z0.shape != z1.shape:
            raise ValueError(
                f"expected two [N, D] embeddings of one shape, got {tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        dtype = statistics_dtype(z0)  # float32 statistics for bf16 / fp16 embeddings: why, see there
        # Autocast off: under bf16 autocast the covariance matmul would run in bf16 again.
        with torch.autocast(device_type=z0.device.type, enabled=False):
            # Gathered after the cast: every backend all-gathers float32 (gloo's low-precision support varies).
            z0 = dist.gather_with_grad(z0.to(dtype))  # [W*N, D]
            z1 = dist.gather_with_grad(z1.to(dtype))
            if z0.shape[0] < 2:
                raise ValueError("VICReg needs at least 2 samples per (global) batch for its variance and covariance")
            invariance = F.mse_loss(z0, z1)
            variance = self.variance(z0) + self.variance(z1)
            covariance = self.covariance(z0) + self.covariance(z1)
            loss = (
                self.invariance_weight * invariance
                + self.variance_weight * variance
                + self.covariance_weight * covariance
            )
        terms = {"invariance": invariance.detach(), "variance": variance.detach(), "covariance": covariance.detach()}
        return loss, terms

    def variance(self, z: Tensor) -> Tensor:
        """v(Z): the mean hinge of each dimension's batch std below gamma; 0 once every std >= gamma."""
        std = torch.sqrt(z.var(dim=0) + self.eps)
        return F.relu(self.gamma - std).mean()

    @staticmethod
    def covariance(z: Tensor) -> Tensor:
        """c(Z): the squared off-diagonal entries of the batch covariance, summed, divided by D."""
        n, d = z.shape
        centred = z - z.mean(dim=0)
        # C(Z) = centred^T centred / (n - 1) is [D, D]; off_diagonal_square_sum avoids forming it
        # where the batch is narrow.
        return off_diagonal_square_sum(centred, centred) / (n - 1) ** 2 / d
