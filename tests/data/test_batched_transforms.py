"""Batched per-sample transforms agree with torchvision applied image by image; randomness is a pure
function of (seed, epoch, view, id)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from sslray.data import batched_transforms as BT

IDS = [f"train/{i:06d}" for i in range(64)]


@pytest.fixture
def images():
    return torch.rand(len(IDS), 3, 20, 24, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("ours, theirs, low, high", [
    (BT.adjust_brightness, TF.adjust_brightness, 0.2, 1.8),
    (BT.adjust_contrast, TF.adjust_contrast, 0.2, 1.8),
    (BT.adjust_saturation, TF.adjust_saturation, 0.0, 1.8),
    (BT.adjust_hue, TF.adjust_hue, -0.5, 0.5),
])
def test_colour_ops_match_torchvision_per_image(images, ours, theirs, low, high):
    factors = torch.linspace(low, high, len(images))
    batched = ours(images.clone(), factors)
    for i in range(len(images)):
        torch.testing.assert_close(batched[i], theirs(images[i], float(factors[i])), atol=2e-6, rtol=0)


def test_contrast_on_single_channel_uses_its_own_mean(images):
    gray = images[:, :1]
    factors = torch.full((len(gray),), 0.5)
    torch.testing.assert_close(BT.adjust_contrast(gray, factors)[3], TF.adjust_contrast(gray[3], 0.5))
    assert torch.equal(BT.adjust_saturation(gray, factors), gray) and torch.equal(BT.adjust_hue(gray, factors), gray)


def test_grayscale_and_blur_match_torchvision(images):
    for i in (0, 17):
        torch.testing.assert_close(BT.grayscale(images)[i], TF.rgb_to_grayscale(images[i]))
    sigma = torch.linspace(0.1, 2.0, len(images))
    apply = torch.arange(len(images)) % 2 == 0
    blurred = BT.gaussian_blur(images, sigma, apply, kernel_size=5)
    for i in (0, 2, 40):
        torch.testing.assert_close(blurred[i], TF.gaussian_blur(images[i], [5, 5], [float(sigma[i])] * 2))
    assert torch.equal(blurred[apply.logical_not()], images[apply.logical_not()])  # untouched rows stay exact


def test_solarize_and_flip_only_touch_selected_rows(images):
    apply = torch.zeros(len(images), dtype=torch.bool)
    apply[5] = True
    solar = BT.solarize(images, apply)
    torch.testing.assert_close(solar[5], TF.solarize(images[5], 0.5))
    assert torch.equal(solar[6], images[6])
    flipped = BT.flip_horizontal(images, apply)
    assert torch.equal(flipped[5], images[5].flip(-1)) and torch.equal(flipped[4], images[4])


def test_whole_image_box_is_identity_and_crop_matches_slicing(images):
    heights = torch.full((len(images),), 20)
    widths = torch.full((len(images),), 24)
    whole = torch.tensor([[0.0, 0.0, 24.0, 20.0]]).repeat(len(images), 1)
    square = images[..., :20, :20]
    torch.testing.assert_close(BT.crop_and_resize(square, whole.clamp(max=20), 20), square, atol=1e-5, rtol=0)
    box = torch.tensor([[4.0, 2.0, 12.0, 10.0]]).repeat(len(images), 1)  # an 8x8 crop at (x=4, y=2)
    torch.testing.assert_close(BT.crop_and_resize(images, box, 8), images[..., 2:10, 4:12], atol=1e-5, rtol=0)
    # Downscaling 2x averages 2x2 blocks (antialiased), unlike plain bilinear sampling.
    torch.testing.assert_close(BT.crop_and_resize(images, box, 4),
                               torch.nn.functional.avg_pool2d(images[..., 2:10, 4:12], 2), atol=1e-5, rtol=0)
    centre = BT.center_crop_boxes(heights, widths, 0.5)
    assert centre[0].tolist() == [7.0, 5.0, 17.0, 15.0]


def test_per_image_crops_are_torchvisions_resized_crop_on_uint8(images):
    as_uint8 = images.mul(255).round().to(torch.uint8)
    box = torch.tensor([[4.0, 2.0, 12.0, 10.0]]).repeat(len(images), 1)  # an 8x8 crop at (x=4, y=2)
    assert torch.equal(BT.resized_crops(as_uint8, box, 8), as_uint8[..., 2:10, 4:12])
    down = BT.resized_crops(as_uint8, box, 4)
    assert down.dtype == torch.uint8
    assert torch.equal(down, TF.resize(as_uint8[..., 2:10, 4:12], [4, 4], antialias=True))
    # Fractional boxes are rounded to whole pixels, as torchvision's crops are.
    assert torch.equal(BT.resized_crops(as_uint8, box + 0.3, 8), as_uint8[..., 2:10, 4:12])


def test_random_resized_crop_boxes_follow_torchvision_rules():
    n = 4000
    rand = BT.PerSampleRandom(BT.sample_keys(range(n), seed=3, epoch=0, view=0))
    heights = torch.full((n,), 40)
    widths = torch.full((n,), 60)
    boxes = BT.random_resized_crop_boxes(rand, heights, widths, (0.08, 1.0), (3 / 4, 4 / 3))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all()
    assert torch.equal(boxes, boxes.round())  # integer pixel boxes, as torchvision
    fraction = (w * h) / (40 * 60)
    assert 0.07 <= fraction.min() and fraction.max() <= 1.0
    aspect = w / h
    assert (aspect > 0.6).all() and (aspect < 1.6).all()  # rounding widens [3/4, 4/3] slightly
    # Log-uniform aspect: about half the crops are wider than tall.
    assert 0.4 < (aspect > 1).float().mean() < 0.6
    # Offsets spread over the whole image, not stuck at the corner.
    assert boxes[:, 0].float().std() > 3


def test_fallback_is_a_centre_crop_with_clamped_aspect():
    rand = BT.PerSampleRandom(BT.sample_keys(["a"], 0, 0, 0))
    # A 10x100 strip cannot fit any crop with aspect in [0.9, 1.1] covering >= 90% of its area.
    box = BT.random_resized_crop_boxes(rand, torch.tensor([10]), torch.tensor([100]), (0.9, 1.0), (0.9, 1.1))
    assert box[0].tolist() == [44.0, 0.0, 55.0, 10.0]


def test_draws_depend_on_sample_not_on_batch():
    keys = BT.sample_keys(IDS, seed=7, epoch=2, view=1)
    together = BT.PerSampleRandom(keys).uniform(n=5)
    alone = BT.PerSampleRandom(keys[10:11]).uniform(n=5)
    torch.testing.assert_close(together[10:11], alone)
    shuffled = np.random.default_rng(0).permutation(len(IDS))
    again = BT.PerSampleRandom(BT.sample_keys([IDS[i] for i in shuffled], 7, 2, 1)).uniform(n=5)
    torch.testing.assert_close(again, together[shuffled])
    for other in (BT.sample_keys(IDS, 8, 2, 1), BT.sample_keys(IDS, 7, 3, 1), BT.sample_keys(IDS, 7, 2, 0)):
        assert not torch.allclose(BT.PerSampleRandom(other).uniform(n=5), together)


def test_uniforms_look_uniform():
    draws = BT.PerSampleRandom(BT.sample_keys(range(20000), 0, 0, 0)).uniform(n=2)
    assert abs(draws.mean().item() - 0.5) < 0.01 and abs(draws.var().item() - 1 / 12) < 0.005
    assert abs(torch.corrcoef(draws.T)[0, 1].item()) < 0.03
    counts = torch.histc(draws[:, 0], bins=10, min=0, max=1)
    assert (counts - 2000).abs().max() < 5 * math.sqrt(2000)


def test_jitter_order_is_random_per_sample_and_respects_apply(images):
    rand = BT.PerSampleRandom(BT.sample_keys(IDS, 0, 0, 0))
    apply = torch.arange(len(images)) < 32
    out = BT.color_jitter(images, rand, apply, BT.JitterStrengths(0.4, 0.4, 0.2, 0.1))
    assert torch.equal(out[32:], images[32:])
    assert (out[:32] - images[:32]).abs().amax(dim=(1, 2, 3)).min() > 0
