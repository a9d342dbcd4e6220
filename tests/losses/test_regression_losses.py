import pytest
import torch
from torch.nn import functional as F

from sslray.losses.regression import NegativeCosineLoss, NormalizedMSELoss


def test_normalized_mse_is_squared_distance_of_unit_vectors():
    torch.manual_seed(0)
    p, z = torch.randn(6, 5), torch.randn(6, 5)
    expected = ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(dim=1).mean()
    assert NormalizedMSELoss()(p, z).item() == pytest.approx(expected.item(), rel=1e-5)
    assert NormalizedMSELoss()(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert NormalizedMSELoss()(p, -p).item() == pytest.approx(4.0, rel=1e-5)


def test_negative_cosine_values():
    p = torch.randn(4, 3)
    assert NegativeCosineLoss()(p, 2 * p).item() == pytest.approx(-1.0, rel=1e-5)
    assert NegativeCosineLoss()(p, -p).item() == pytest.approx(1.0, rel=1e-5)
    orthogonal = NegativeCosineLoss()(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert orthogonal.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("loss_cls", [NormalizedMSELoss, NegativeCosineLoss])
def test_no_gradient_reaches_the_target(loss_cls):
    p, z = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    loss_cls()(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None
