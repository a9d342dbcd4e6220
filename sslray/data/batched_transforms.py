"""Image transforms applied to a whole batch at once, with random parameters drawn per sample.

torchvision.transforms.v2 draws one set of parameters per call, so on a batch every image gets the
same crop and the same jitter; applied image by image it costs a Python round trip per view. These
functions take per-sample parameter tensors instead and run as a few batched tensor ops
(``torchvision.ops.roi_align`` for crop+resize of small views, grouped convolution for blur); large
crops are cut image by image on uint8, where torchvision's kernels win (``resized_crops``). Colour ops follow the
formulas of ``torchvision.transforms.v2.functional`` (tests compare them image by image).

Randomness is counter-based: every draw is a pure function of (seed, epoch, view, sample id, draw
index) — see ``PerSampleRandom`` — so a view does not depend on how Ray Data cuts the data into
batches, in which order tasks run, or on how many workers there are.

Images are float tensors ``[B, C, H, W]`` in [0, 1], C = 1 or 3.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.ops import roi_align

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al., 2014): a bijective 64-bit mix used as a counter-based RNG."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_keys(ids, seed: int, epoch: int, view: int) -> np.ndarray:
    """One 64-bit key per sample from its string id and (seed, epoch, view)."""
    id_hashes = np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                          for i in ids], dtype=np.uint64)
    stream = splitmix64(np.array([seed], dtype=np.uint64))
    for part in (epoch, view):
        stream = splitmix64(stream ^ np.array([part], dtype=np.uint64))
    return splitmix64(id_hashes ^ stream)


class PerSampleRandom:
    """Uniform draws for a batch, ``[B]`` or ``[B, n]``, that depend only on each sample's key and
    the order of the calls — never on the batch it sits in."""

    def __init__(self, keys: np.ndarray):
        self.keys = keys
        self.counter = 0

    def uniform(self, low: float | torch.Tensor = 0.0, high: float | torch.Tensor = 1.0,
                n: int | None = None) -> torch.Tensor:
        count = 1 if n is None else n
        counters = np.arange(self.counter, self.counter + count, dtype=np.uint64) * _GOLDEN
        self.counter += count
        with np.errstate(over="ignore"):
            bits = splitmix64(self.keys[:, None] ^ splitmix64(counters)[None, :])
        unit = torch.from_numpy((bits >> np.uint64(11)).astype(np.float64) * 2.0**-53).float()
        if n is None:
            unit = unit[:, 0]
        return low + (high - low) * unit

    def bernoulli(self, p: float) -> torch.Tensor:
        return self.uniform() < p


# ------------------------------------------------------------------------------ geometry


def random_resized_crop_boxes(rand: PerSampleRandom, heights: torch.Tensor, widths: torch.Tensor,
                              scale: tuple[float, float], ratio: tuple[float, float],
                              attempts: int = 10) -> torch.Tensor:
    """Boxes ``[B, 4]`` (x0, y0, x1, y1) drawn as ``torchvision.transforms.RandomResizedCrop`` does:
    area fraction ~ U(scale), log aspect ~ U(log ratio); the first of ``attempts`` tries that fits,
    else a centre crop with the aspect clamped to ``ratio`` (Szegedy et al., 2015)."""
    h, w = heights.float()[:, None], widths.float()[:, None]
    area = h * w
    target = area * rand.uniform(scale[0], scale[1], attempts)
    aspect = torch.exp(rand.uniform(math.log(ratio[0]), math.log(ratio[1]), attempts))
    crop_w = torch.round(torch.sqrt(target * aspect))
    crop_h = torch.round(torch.sqrt(target / aspect))
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= w) & (crop_h <= h)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # first fitting attempt (0 if none)
    crop_w, crop_h = crop_w.gather(1, first)[:, 0], crop_h.gather(1, first)[:, 0]
    top = torch.floor(rand.uniform() * (h[:, 0] - crop_h + 1))
    left = torch.floor(rand.uniform() * (w[:, 0] - crop_w + 1))
    # Fallback: whole image, cropped centrally to the nearest allowed aspect ratio.
    in_ratio = w[:, 0] / h[:, 0]
    fb_w = torch.where(in_ratio < ratio[0], w[:, 0], torch.where(in_ratio > ratio[1], torch.round(h[:, 0] * ratio[1]), w[:, 0]))
    fb_h = torch.where(in_ratio < ratio[0], torch.round(w[:, 0] / ratio[0]), h[:, 0])
    ok = fits.any(dim=1)
    crop_w, crop_h = torch.where(ok, crop_w, fb_w), torch.where(ok, crop_h, fb_h)
    top = torch.where(ok, top, torch.floor((h[:, 0] - crop_h) / 2))
    left = torch.where(ok, left, torch.floor((w[:, 0] - crop_w) / 2))
    return torch.stack([left, top, left + crop_w, top + crop_h], dim=1)


def center_crop_boxes(heights: torch.Tensor, widths: torch.Tensor, crop_fraction: float) -> torch.Tensor:
    """Central square boxes of side ``crop_fraction * min(H, W)``: resize-shorter-side-then-centre-crop
    in one step (the ImageNet eval transform, crop_fraction 0.875)."""
    side = torch.minimum(heights, widths).float() * crop_fraction
    top = (heights.float() - side) / 2
    left = (widths.float() - side) / 2
    return torch.stack([left, top, left + side, top + side], dim=1)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box and resize to ``size x size``, bilinear with area averaging.

    ``roi_align``'s adaptive sampling (``sampling_ratio=-1``) averages ceil(box/size) bilinear samples
    per output pixel, which anti-aliases downscaling like torchvision's ``antialias=True``.
    """
    index = torch.arange(len(images), dtype=boxes.dtype)[:, None]
    return roi_align(images, torch.cat([index, boxes], dim=1), output_size=size, spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)


# From this view size up, crops are cut image by image on uint8 (``resized_crops``): at 224 px that is 4.8x
# faster than ``crop_and_resize`` on float, at 32 px on par, at 28 px grayscale 4x slower (the per-call
# overhead wins), measured side by side by ``benchmarks/crop_resize.py``.
PER_IMAGE_CROP_MIN_SIZE = 64


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``crop_and_resize`` image by image in the input's dtype: ``resized_crop`` of
    ``torchvision.transforms.v2.functional`` (bilinear, antialiased), boxes rounded to whole pixels as
    torchvision's crops are. On uint8 it runs torch's uint8 resampling kernels and reads only the crop."""
    out = images.new_empty((len(images), images.shape[1], size, size))
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        top, left = round(y1), round(x1)
        height, width = max(1, round(y2) - top), max(1, round(x2) - left)
        out[i] = TF.resized_crop(images[i], top, left, height, width, [size, size], antialias=True)
    return out


def _on_rows(images: torch.Tensor, apply: torch.Tensor, op) -> torch.Tensor:
    """``op`` on the rows where ``apply`` is set, the others untouched: the op's cost is paid only for
    the images that get it (a whole-batch op + ``torch.where`` pays it for all, e.g. SimCLR's blur
    for the half that is not blurred, its solarize at p = 0 for every image)."""
    rows = torch.nonzero(apply)[:, 0]
    if len(rows) == 0:
        return images
    out = images.clone()
    out[rows] = op(images[rows])
    return out


def flip_horizontal(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return _on_rows(images, flip, lambda rows: rows.flip(-1))


# -------------------------------------------------------------------------------- colour


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values[:, None, None, None]


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma, as ``torchvision.transforms.v2.functional.rgb_to_grayscale``; keeps 1 channel."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (images * _per_image(factor)).clamp_(0, 1)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return (_per_image(factor) * images + (1 - _per_image(factor)) * mean).clamp_(0, 1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    return (_per_image(factor) * images + (1 - _per_image(factor)) * grayscale(images)).clamp_(0, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, in [-0.5, 0.5]) through HSV, per image."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    maxc, _ = images.max(dim=1)
    minc, _ = images.min(dim=1)
    delta = maxc - minc
    safe_delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    sat = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta == 0, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0 + 1.0 + shift[:, None, None], 1.0)
    # HSV -> RGB in closed form: channel = v - v*s*clamp(min(k, 4-k), 0, 1), k = (n + 6h) mod 6,
    # n = 5, 3, 1 for R, G, B (the "alternative" HSV->RGB formula; equal to the sector table).
    hue6 = hue * 6.0
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + hue6, 6.0)
        channels.append(maxc - maxc * sat * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, dim=1).clamp_(0, 1)


@dataclass(frozen=True)
class JitterStrengths:
    """How strongly ``color_jitter`` may change each property; 0 leaves it alone (torchvision's arguments)."""

    brightness: float = 0.0  # factor ~ U(max(0, 1-s), 1+s)
    contrast: float = 0.0  # factor ~ U(max(0, 1-s), 1+s)
    saturation: float = 0.0  # factor ~ U(max(0, 1-s), 1+s)
    hue: float = 0.0  # shift ~ U(-h, h), h <= 0.5


def color_jitter(images: torch.Tensor, rand: PerSampleRandom, apply: torch.Tensor,
                 strengths: JitterStrengths) -> torch.Tensor:
    """``ColorJitter`` with factors and op order drawn per sample; only rows where ``apply`` is set
    change. Factors ~ U(1-s, 1+s) (hue: U(-h, h)), as torchvision."""
    brightness, contrast, saturation, hue = (strengths.brightness, strengths.contrast, strengths.saturation,
                                             strengths.hue)
    factors = [rand.uniform(max(0.0, 1 - s), 1 + s) for s in (brightness, contrast, saturation)]
    factors.append(rand.uniform(-hue, hue))
    ops = [(adjust_brightness, brightness > 0), (adjust_contrast, contrast > 0),
           (adjust_saturation, saturation > 0), (adjust_hue, hue > 0)]
    order = torch.argsort(rand.uniform(n=4), dim=1)  # a random permutation per sample
    out = images.clone()
    for slot in range(4):
        for op_index, (op, enabled) in enumerate(ops):
            rows = torch.nonzero(apply & (order[:, slot] == op_index))[:, 0]
            if enabled and len(rows):
                out[rows] = op(out[rows], factors[op_index][rows])
    return out


def random_grayscale(images: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    return _on_rows(images, apply, lambda rows: grayscale(rows).expand_as(rows))


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma on the rows where ``apply`` is set, reflect padding
    as ``torchvision.transforms.v2.functional.gaussian_blur``."""
    return _on_rows(images, apply, lambda rows: _blur(rows, sigma[apply], kernel_size))


def _blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    batch, channels, height, width = images.shape
    radius = kernel_size // 2
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # [B*C, k]
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=batch * channels)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=batch * channels)
    return flat.reshape(batch, channels, height, width)


def solarize(images: torch.Tensor, apply: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    return _on_rows(images, apply, lambda rows: torch.where(rows >= threshold, 1.0 - rows, rows))
