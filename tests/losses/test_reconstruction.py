"""Masked reconstruction losses: only masked patches count; norm_pix target matches the formula."""

import pytest
import torch

from sslray.losses.reconstruction import MaskedL1Loss, MaskedMSELoss, normalize_patch_pixels


def _inputs(n=2, length=6, p=5):
    torch.manual_seed(0)
    pred, target = torch.randn(n, length, p), torch.randn(n, length, p) * 3 + 1
    mask = torch.zeros(n, length)
    mask[0, [1, 4]] = 1
    mask[1, [0, 2, 5]] = 1
    return pred, target, mask


@pytest.mark.parametrize("loss_cls", [MaskedMSELoss, MaskedL1Loss])
@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_ignores_visible_patches(loss_cls, norm_pix):
    loss_fn = loss_cls(norm_pix_loss=norm_pix)
    pred, target, mask = _inputs()
    base = loss_fn(pred, target, mask)
    visible_changed = pred.clone()
    visible_changed[0, 0] += 10.0  # mask[0, 0] == 0
    assert loss_fn(visible_changed, target, mask) == base
    masked_changed = pred.clone()
    masked_changed[0, 1] += 10.0  # mask[0, 1] == 1
    assert loss_fn(masked_changed, target, mask) > base


@pytest.mark.parametrize("loss_cls,elementwise", [(MaskedMSELoss, lambda d: d * d), (MaskedL1Loss, abs)])
def test_loss_matches_loop(loss_cls, elementwise):
    pred, target, mask = _inputs()
    total, count = 0.0, 0
    for n in range(pred.shape[0]):
        for p in range(pred.shape[1]):
            if mask[n, p] == 1:
                diffs = [elementwise(a - b) for a, b in zip(pred[n, p].tolist(), target[n, p].tolist())]
                total += sum(diffs) / len(diffs)
                count += 1
    assert loss_cls(norm_pix_loss=False)(pred, target, mask).item() == pytest.approx(total / count, rel=1e-5)


def test_norm_pix_target_matches_loop():
    _, target, _ = _inputs()
    out = normalize_patch_pixels(target)
    eps = 1e-6
    for n in range(target.shape[0]):
        for p in range(target.shape[1]):
            values = target[n, p].tolist()
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)  # unbiased, as models_mae.py
            expected = [(v - mean) / (var + eps) ** 0.5 for v in values]
            assert out[n, p].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_norm_pix_changes_the_loss_and_empty_mask_is_zero():
    pred, target, mask = _inputs()
    assert MaskedMSELoss(True)(pred, target, mask) != MaskedMSELoss(False)(pred, target, mask)
    assert MaskedMSELoss(True)(pred, target, torch.zeros_like(mask)).item() == 0.0
