import pytest
import torch
from torch.nn import functional as F

from sslray.losses.dino import DINOLoss


def dino_loss_by_loops(student, teacher, center, teacher_temp, student_temp):
    total, terms = 0.0, 0
    for t_index, t in enumerate(teacher):
        for s_index, s in enumerate(student):
            if s_index == t_index:
                continue
            for i in range(t.shape[0]):
                p_teacher = F.softmax((t[i] - center[0]) / teacher_temp, dim=0)
                log_p_student = F.log_softmax(s[i] / student_temp, dim=0)
                total += float(-(p_teacher * log_p_student).sum()) / t.shape[0]
            terms += 1
    return total / terms


def test_dino_loss_matches_loops_with_multicrop():
    torch.manual_seed(0)
    k = 6
    criterion = DINOLoss(k, teacher_temp=0.05, student_temp=0.1)
    criterion.center.copy_(torch.randn(1, k))
    center = criterion.center.clone()
    student = [torch.randn(4, k) for _ in range(4)]  # 2 global + 2 local crops
    teacher = [torch.randn(4, k) for _ in range(2)]
    loss = criterion(student, teacher)
    expected = dino_loss_by_loops(student, teacher, center, 0.05, 0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_center_moves_toward_the_teacher_batch_mean():
    k = 4
    criterion = DINOLoss(k, center_momentum=0.9)
    teacher = [torch.full((3, k), 2.0), torch.full((3, k), 4.0)]  # batch mean 3
    criterion([torch.randn(3, k) for _ in range(2)], teacher)
    assert torch.allclose(criterion.center, torch.full((1, k), 0.3))
    for _ in range(200):
        criterion.update_center(teacher)
    assert torch.allclose(criterion.center, torch.full((1, k), 3.0), atol=1e-6)


def test_teacher_gets_no_gradient():
    student = [torch.randn(2, 5, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(2, 5, requires_grad=True) for _ in range(2)]
    DINOLoss(5)(student, teacher).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None for s in student)
