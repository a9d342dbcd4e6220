"""View recipes from config, and rendering views from encoded images (no Ray)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sslray.data.augment import AugmentConfig, EvalViewSpec, decode_images, render_eval_view, render_view
from sslray.data.batched_transforms import PerSampleRandom, sample_keys
from sslray.errors import UserError
from sslray.sections import section_from_dict

from .samples import encode, pattern


def specs_from(data: dict):
    return section_from_dict(AugmentConfig, data, "data.augment").view_specs()


def test_recipes_make_the_papers_views():
    simclr = specs_from({"recipe": "simclr", "size": 32})
    assert len(simclr) == 2 and simclr[0] == simclr[1] and simclr[0].size == 32
    byol = specs_from({"recipe": "byol"})
    assert [(v.blur_p, v.solarize_p) for v in byol] == [(1.0, 0.0), (0.1, 0.2)]
    dino = specs_from({"recipe": "dino", "size": 32, "local_size": 16, "local_crops": 4})
    assert [v.size for v in dino] == [32, 32, 16, 16, 16, 16]
    assert dino[2].scale == (0.05, 0.4) and dino[0].scale == (0.4, 1.0)
    mae = specs_from({"recipe": "mae"})
    assert len(mae) == 1 and mae[0].scale == (0.2, 1.0) and mae[0].jitter_p == 0.0
    macrl = specs_from({"recipe": "macrl"})
    assert macrl[0].jitter_p > 0 and macrl[1].jitter_p == 0  # strong masked view, weak momentum view


def test_overrides_apply_globally_locally_and_per_view():
    dino = specs_from({"recipe": "dino", "local_crops": 2, "global_view": {"scale": [0.5, 1.0]},
                       "local_view": {"flip_p": 0.0}, "views": [{}, {"solarize_p": 0.5}]})
    assert dino[0].scale == dino[1].scale == (0.5, 1.0) and dino[2].scale == (0.05, 0.4)
    assert dino[1].solarize_p == 0.5 and dino[2].flip_p == 0.0 and dino[0].flip_p == 0.5


@pytest.mark.parametrize("data, message", [
    ({"recipe": "simclr", "views": [{"solarise_p": 0.2}]}, r"data\.augment\.views\[0\]\.solarise_p: unknown key \(did you mean 'solarize_p'\?\)"),
    ({"recipe": "byol", "views": [{}, {"blur_p": 1.5}]}, r"data\.augment\.views\[1\]\.blur_p: 1\.5 is out of range"),
    ({"recipe": "simclr", "global_view": {"scale": [0.9, 0.2]}}, r"scale: \[0\.9, 0\.2\] is out of range"),
    ({"recipe": "simclrr"}, r"data\.augment\.recipe: 'simclrr' is not allowed"),
    ({"recipe": "mae", "views": [{}, {}]}, r"2 entries but recipe 'mae' makes 1 views"),
    ({"size": "big"}, r"data\.augment\.size: expected an integer"),
])
def test_bad_augment_config_names_key_and_value(data, message):
    with pytest.raises(UserError, match=message):
        specs_from(data)


def test_decode_pads_mixed_sizes_and_keeps_channels():
    encoded = np.array([encode(pattern(10, 14, 3, 0)), encode(pattern(20, 8, 1, 1))], dtype=object)
    rgb, sizes = decode_images(encoded, channels=3, max_side=64)
    assert rgb.shape == (2, 3, 20, 14) and rgb.dtype == torch.uint8 and sizes.tolist() == [[10, 14], [20, 8]]
    np.testing.assert_array_equal(rgb[0, :, :10, :14].permute(1, 2, 0).numpy(), pattern(10, 14, 3, 0))
    assert rgb[0, :, 10:].sum() == 0  # padding
    gray, _ = decode_images(encoded, channels=1, max_side=64)
    assert gray.shape[1] == 1
    np.testing.assert_array_equal(gray[1, 0, :20, :8].numpy(), pattern(20, 8, 1, 1))
    big, big_sizes = decode_images(np.array([encode(pattern(100, 60, 3, 2))], dtype=object), 3, max_side=30)
    assert big_sizes.tolist() == [[50, 30]]  # shorter side shrunk to max_side, aspect kept


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [24, 96])  # the batched crop, and the per-image one (PER_IMAGE_CROP_MIN_SIZE)
def test_views_are_uint8_differ_and_do_not_depend_on_batch_mates(channels, size):
    ids = ["a", "b", "c"]
    encoded = np.array([encode(pattern(28, 28, 1, 0)), encode(pattern(40, 30, 3, 1)), encode(pattern(9, 9, 3, 2))],
                       dtype=object)
    specs = specs_from({"recipe": "byol", "size": size})
    images, sizes = decode_images(encoded, channels, 64)
    views = [render_view(images, sizes, s, PerSampleRandom(sample_keys(ids, 0, 0, v))) for v, s in enumerate(specs)]
    assert views[0].shape == (3, channels, size, size) and views[0].dtype == torch.uint8
    assert not torch.equal(views[0][1], views[1][1])  # two views of one image differ
    alone, alone_sizes = decode_images(encoded[1:2], channels, 64)
    again = render_view(alone, alone_sizes, specs[0], PerSampleRandom(sample_keys(ids[1:2], 0, 0, 0)))
    assert torch.equal(again[0], views[0][1])  # padding next to a bigger image changes nothing


def test_a_crop_and_flip_view_stays_uint8_and_equals_the_float_path():
    """MAE's view (no colour op) at 96 px takes the uint8 shortcut; forcing the float path (a colour op at
    p = 0 changes nothing in the pixels) gives the same bytes."""
    ids = ["a", "b", "c"]
    encoded = np.array([encode(pattern(120, 100, 3, i)) for i in range(3)], dtype=object)
    images, sizes = decode_images(encoded, 3, 256)
    (mae,) = specs_from({"recipe": "mae", "size": 96})
    assert not mae.changes_colour
    shortcut = render_view(images, sizes, mae, PerSampleRandom(sample_keys(ids, 0, 0, 0)))
    as_float = dataclasses.replace(mae, jitter_p=1e-12)  # changes_colour, yet no image is jittered
    assert as_float.changes_colour
    assert torch.equal(shortcut, render_view(images, sizes, as_float, PerSampleRandom(sample_keys(ids, 0, 0, 0))))


def test_eval_view_is_deterministic_centre_crop():
    encoded = np.array([encode(pattern(32, 48, 3, 0))], dtype=object)
    images, sizes = decode_images(encoded, 3, 64)
    out = render_eval_view(images, sizes, EvalViewSpec(size=32, crop_fraction=1.0))
    np.testing.assert_array_equal(out[0].permute(1, 2, 0).numpy(), pattern(32, 48, 3, 0)[:, 8:40])
    assert torch.equal(out, render_eval_view(images, sizes, EvalViewSpec(size=32, crop_fraction=1.0)))
