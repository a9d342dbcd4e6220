"""Small uint8 test images and encoders shared by the data tests."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path
from collections.abc import Iterable

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


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: Iterable[bytes]) -> bytes:
    """A PNG written chunk by chunk, for what PIL will not write: 16-bit RGB, or a header that lies about
    the size. ``rows`` are unfiltered scanlines, compressed as they come, so a valid 100-megapixel
    decompression bomb costs a few kilobytes to build. Colour types: 0 gray, 2 RGB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(1)
    idat = b"".join(packer.compress(b"\0" + row) for row in rows) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def dds_with_unknown_pixel_format() -> bytes:
    """A DDS texture whose pixel-format flags are unknown: PIL raises NotImplementedError, not OSError."""
    buf = io.BytesIO()
    Image.fromarray(pattern(8, 8, 3, 0)).save(buf, format="DDS")
    data = bytearray(buf.getvalue())
    data[80:84] = (155).to_bytes(4, "little")  # DDS_PIXELFORMAT.dwFlags
    return bytes(data)


def spider_with_bad_header() -> bytes:
    """A SPIDER image with a damaged header word: PIL raises AttributeError from inside its plugin."""
    buf = io.BytesIO()
    Image.fromarray(pattern(8, 8, 1, 0)).save(buf, format="SPIDER")
    data = bytearray(buf.getvalue())
    data[107] = 67
    return bytes(data)


def png_with_bad_idat_crc(png: bytes) -> bytes:
    """``png`` with the CRC of its first IDAT chunk inverted: PIL never checks it, libpng does."""
    idat = png.index(b"IDAT")
    crc_at = idat + 4 + int.from_bytes(png[idat - 4:idat], "big")
    return png[:crc_at] + bytes(b ^ 0xFF for b in png[crc_at:crc_at + 4]) + png[crc_at + 4:]


def png_with_ihdr_byte(png: bytes, offset: int, value: int) -> bytes:
    """``png`` with one IHDR byte replaced (26: compression method, 28: interlace) and a valid CRC."""
    data = bytearray(png)
    data[offset] = value
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)
