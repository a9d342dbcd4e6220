"""DINO's self-distillation loss with centring and sharpening (Caron et al. 2021, sec. 3.1, alg. 1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sslray.nn import dist


class DINOLoss(nn.Module):
    """Cross entropy between the sharpened, centred teacher distribution and the student's:

        P_t(x) = softmax((g_t(x) - c) / T_t),   P_s(x) = softmax(g_s(x) / T_s)
        loss   = mean over pairs (t in global crops, s in all crops, s != t) of  -sum P_t log P_s

    The teacher sees the global crops only; the student sees global and local crops (multi-crop).
    After each forward, the centre c is updated as an EMA of the teacher's mean output over the global
    batch: c <- m c + (1 - m) mean(g_t). Centring prevents one dimension from dominating, sharpening
    (T_t < T_s) prevents the uniform collapse; both together avoid collapse (paper, sec. 5.3).

    ``teacher_temp`` is a plain attribute the method sets on each step (warm-up 0.04 -> 0.07 over the
    first 30 epochs in the paper).

    Shapes: ``student_out``: list of [N, K] logits, global crops first; ``teacher_out``: list of
    [N, K] logits of the global crops (any float dtype) -> float32 scalar loss.
    """

    def __init__(
        self, out_dim: int, teacher_temp: float = 0.04, student_temp: float = 0.1, center_momentum: float = 0.9
    ):
        super().__init__()
        self.teacher_temp = teacher_temp
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: list[Tensor], teacher_out: list[Tensor]) -> Tensor:
        if len(student_out) < len(teacher_out):
            raise ValueError(
                f"the student sees all {len(student_out)} crops, so it must see at least "
                f"the teacher's {len(teacher_out)} global crops"
            )
        # float32: the teacher's sharpening (x 25 at T = 0.04) would magnify bf16's rounding of the logits.
        teacher_probs = [F.softmax((t.detach().float() - self.center) / self.teacher_temp, dim=-1) for t in teacher_out]
        student_log_probs = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student_out]
        total = student_out[0].new_zeros((), dtype=torch.float32)
        terms = 0
        for t_index, p_teacher in enumerate(teacher_probs):
            for s_index, log_p_student in enumerate(student_log_probs):
                if s_index == t_index:  # same crop: no information to predict
                    continue
                total = total + (-p_teacher * log_p_student).sum(dim=-1).mean()
                terms += 1
        self.update_center(teacher_out)
        return total / terms

    @torch.no_grad()
    def update_center(self, teacher_out: list[Tensor]) -> None:
        batch = torch.cat([t.detach().float() for t in teacher_out])
        batch_mean = dist.gather(batch.mean(dim=0, keepdim=True)).mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1.0 - self.center_momentum)
