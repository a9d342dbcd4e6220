"""Non-contrastive regression losses of a prediction onto a target that gets no gradient.

Both losses detach the target: the stop-gradient is part of their definition (BYOL's target comes
from the momentum network, SimSiam's from the same network with stop-grad), and detaching here means
a method cannot forget it. Cosines are computed in float32 whatever the inputs' dtype: BYOL's loss is
2 - 2 cos, and near convergence cos ~ 1 sits where bf16 has 3 significant digits.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class NormalizedMSELoss(nn.Module):
    """BYOL's loss (Grill et al. 2020, eq. 2): squared distance of the L2-normalised vectors,

        loss = mean_i || p_i/||p_i|| - z_i/||z_i|| ||^2 = mean_i (2 - 2 cos(p_i, z_i))

    Shapes: ``prediction``, ``target``: [N, D] -> scalar in [0, 4]; no gradient reaches ``target``.
    """

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        cosine = F.cosine_similarity(prediction.float(), target.detach().float(), dim=-1)
        return (2.0 - 2.0 * cosine).mean()


class NegativeCosineLoss(nn.Module):
    """SimSiam's loss (Chen & He 2021, eq. 1): D(p, z) = -cos(p, stopgrad(z)), averaged over the batch.

    Shapes: ``prediction``, ``target``: [N, D] -> scalar in [-1, 1]; no gradient reaches ``target``.
    """

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return -F.cosine_similarity(prediction.float(), target.detach().float(), dim=-1).mean()
