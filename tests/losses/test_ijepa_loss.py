"""I-JEPA's feature-prediction loss against its written-out formula, its properties and its dtypes."""

import pytest
import torch

from sslray.losses.feature_prediction import FeaturePredictionLoss


def layer_norm_by_hand(h: torch.Tensor) -> torch.Tensor:
    mean = h.mean(dim=-1, keepdim=True)
    var = ((h - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance, as LayerNorm
    return (h - mean) / torch.sqrt(var + 1e-5)


def huber(x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.where(x.abs() < beta, 0.5 * x**2 / beta, x.abs() - 0.5 * beta)


def inputs(shape=(3, 4, 5, 16), seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale, torch.randn(
        shape, generator=g, dtype=torch.float64
    ) * 3 + 2


@pytest.mark.parametrize("kind,beta", [("smooth_l1", 1.0), ("smooth_l1", 0.5), ("mse", 1.0)])
def test_matches_the_written_out_formula(kind, beta):
    pred, target = inputs(scale=2.0)  # errors on both sides of beta
    t = layer_norm_by_hand(target)
    per_element = huber(pred - t, beta) if kind == "smooth_l1" else (pred - t) ** 2
    loss = FeaturePredictionLoss(kind, beta)(pred, target)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, per_element.mean())
    # the same number by loops: mean over images, blocks, patches and features
    total = sum(float(per_element[n, m, k, j]) for n in range(3) for m in range(4) for k in range(5) for j in range(16))
    assert loss.item() == pytest.approx(total / (3 * 4 * 5 * 16))


def test_target_is_compared_after_its_layer_norm():
    """Zero when the prediction is the normalised target; blind to a per-token shift and positive scale
    of the target (layer norm removes them), not to a change of its direction."""
    _, target = inputs()
    criterion = FeaturePredictionLoss()
    pred = layer_norm_by_hand(target)
    assert criterion(pred, target).item() == pytest.approx(0.0, abs=1e-12)
    shift = torch.randn(3, 4, 5, 1, dtype=torch.float64)
    assert criterion(pred, target * 7.0 + shift).item() == pytest.approx(0.0, abs=1e-10)
    assert criterion(pred, target.flip(-1)).item() > 0.1
    assert criterion(target, target).item() > 0.1  # the raw target is not what is predicted


def test_gradient_reaches_the_prediction_only():
    """d loss / d p = clamp(p - t, -beta, beta) / beta / numel for smooth L1; none to the target."""
    pred, target = inputs(scale=2.0)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    FeaturePredictionLoss("smooth_l1", 0.5)(pred, target).backward()
    assert target.grad is None
    expected = (pred.detach() - layer_norm_by_hand(target.detach())).clamp(-0.5, 0.5) / 0.5 / pred.numel()
    torch.testing.assert_close(pred.grad, expected)


def test_smooth_l1_is_linear_in_large_errors_and_mse_is_not():
    _, target = inputs()
    t = layer_norm_by_hand(target)
    losses = {
        kind: [FeaturePredictionLoss(kind)(t + err, target).item() for err in (10.0, 20.0)]
        for kind in ("smooth_l1", "mse")
    }
    assert losses["smooth_l1"] == pytest.approx([9.5, 19.5])
    assert losses["mse"] == pytest.approx([100.0, 400.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_low_and_high_precision_inputs(dtype):
    pred, target = inputs()
    reference = FeaturePredictionLoss()(pred, target)
    # a target with large, nearly equal features: fp16's variance would overflow / cancel without float32
    big_target = target.to(dtype) * 100 + 1000
    loss = FeaturePredictionLoss()(pred.to(dtype), big_target)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(loss)
    tolerance = {torch.bfloat16: 0.05, torch.float16: 0.01}.get(dtype, 1e-5)
    assert loss.item() == pytest.approx(reference.item(), rel=tolerance)
    pred_grad = pred.to(dtype).requires_grad_(True)
    FeaturePredictionLoss()(pred_grad, big_target).backward()
    assert pred_grad.grad.dtype == dtype and torch.isfinite(pred_grad.grad).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="differ in shape"):
        FeaturePredictionLoss()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="kind"):
        FeaturePredictionLoss("l2")
    with pytest.raises(ValueError, match="beta"):
        FeaturePredictionLoss(beta=0.0)
