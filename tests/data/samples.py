"""Small uint8 test images and encoders shared by the data tests."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def pattern(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """A distinctive uint8 image: a horizontal ramp, a vertical ramp and noise, so transposes show."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(xs * 255 // max(width - 1, 1)), (ys * 255 // max(height - 1, 1)),
                     rng.integers(0, 256, (height, width))], axis=-1)[..., :channels]
    return base.astype(np.uint8).squeeze(-1) if channels == 1 else base.astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(buf, format=fmt)
    return buf.getvalue()


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
