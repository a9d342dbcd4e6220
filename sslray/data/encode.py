"""Checking and encoding one image for storage: ``stored_bytes`` turns a record's payload into the bytes a
prepared shard holds, or raises ``BadImage`` with the reason it cannot be stored.

Unreadable, truncated, empty or absurdly large images are refused here (``sslray.data.shards`` counts
and lists them, never fails on them). JPEGs in L or RGB keep their original bytes; everything else (PNG
included, CMYK, 16-bit, palette, alpha, other formats) is stored as an 8-bit L or RGB PNG written by PIL.
PNGs are rewritten because PIL reads PNGs that libpng, behind torchvision's decoder in training,
rejects: a bad IDAT CRC, missing image data or invalid IHDR fields, on which torchvision raises or even
crashes the process (SIGSEGV) instead of raising.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from sslray.data.readers import RawImage

MAX_PIXELS = 64_000_000  # larger than any photo a vision model trains on; beyond it is a decompression bomb
MAX_SIDE = 1_000_000  # libpng's default limit on width and height: torchvision cannot decode a PNG beyond it


class BadImage(Exception):
    """An image that cannot be stored; the message says why."""


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _has_transparency(img: Image.Image) -> bool:
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        return img.convert("RGBA").getchannel("A").getextrema()[0] < 255
    return False


def _on_white(img: Image.Image) -> Image.Image:
    """``img`` composited on a white background: L for grey images, RGB otherwise."""
    grey = img.mode in ("LA", "La") or (img.mode == "L" and "transparency" in img.info)
    flat = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    return flat.convert("L" if grey else "RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr, top = arr - lo, max(hi - lo, 1e-12)
        return Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("1", "L", "LA"):
        return img.convert("L")
    return img.convert("RGB")


def _too_large(pixels: str) -> BadImage:
    return BadImage(f"{pixels} pixels is over the limit of {MAX_PIXELS:,} (a decompression bomb or a corrupt "
                    "header); not decoded")


def stored_bytes(payload: np.ndarray | bytes | Path) -> bytes:
    """The bytes to store for one image payload, or BadImage with the reason."""
    return _stored(payload)[0]


def _stored(payload: np.ndarray | bytes | Path) -> tuple[bytes, bool]:
    """``stored_bytes`` and whether the image had transparency (composited on white).

    The size in the header is checked before any pixel is decoded, so an image that claims billions
    of pixels costs nothing. Decoders meet arbitrary bytes here, and PIL's plugins raise many kinds of
    exceptions on malformed input (struct.error, IndexError, ...): any exception while decoding
    means this one image is bad, never that the whole prepare fails."""
    if isinstance(payload, np.ndarray):
        if payload.dtype != np.uint8 or payload.ndim not in (2, 3):
            raise BadImage(f"pixel array of {payload.dtype} {payload.shape}, expected uint8 HxW or HxWxC")
        return _png(Image.fromarray(np.ascontiguousarray(payload))), False
    if isinstance(payload, Path):
        try:
            payload = payload.read_bytes()
        except OSError as err:
            raise BadImage(f"unreadable file ({err.strerror or err})") from None
    if not payload:
        raise BadImage("empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns above its own limit (89M pixels); ours is lower and checked below, before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Its plugins also warn about damaged metadata ("Corrupt EXIF data"): once per file, on stderr,
            # from every worker. What matters is whether the image decodes, which the skip list says.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(io.BytesIO(payload)) as img:
                width, height = img.size
                if width < 1 or height < 1:
                    raise BadImage(f"{width}x{height} pixels: an image needs at least 1x1")
                if width * height > MAX_PIXELS:
                    raise _too_large(f"{width}x{height} = {width * height:,}")
                if max(width, height) > MAX_SIDE:
                    raise BadImage(f"{width}x{height} pixels: a side over {MAX_SIDE:,} pixels, which the "
                                   "training decoder (libpng) refuses")
                img.load()
                if img.format == "JPEG" and payload.rfind(b"\xff\xd9") < payload.rfind(b"\xff\xda"):
                    # PIL stops once it has every pixel; torchvision reads on to the end-of-image
                    # marker, and refuses the file without one.
                    raise BadImage("truncated JPEG: no end-of-image marker after the image data")
                if img.format == "JPEG" and img.mode in ("L", "RGB"):
                    return payload, False
                try:
                    transparent = _has_transparency(img)
                    return _png(_on_white(img) if transparent else _to_8bit(img)), transparent
                except Exception as err:  # noqa: BLE001 - decoded, but in a mode PIL cannot convert (LAB, ...)
                    raise BadImage(f"cannot convert its {img.mode} pixels to 8-bit L or RGB "
                                   f"({type(err).__name__}: {err})") from None
    except BadImage:
        raise
    except Image.DecompressionBombError as err:  # over PIL's hard limit: refused inside Image.open
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        raise _too_large(f"{int(claimed.group(1)):,}" if claimed else "more than 2x PIL's MAX_IMAGE_PIXELS") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image: no known image format recognised (corrupt header, or another kind of "
                       "file with an image suffix)") from None
    except MemoryError:
        raise BadImage("not decodable: out of memory while decoding") from None
    except Exception as err:  # noqa: BLE001 - see the docstring
        raise BadImage(f"corrupt or truncated image data ({type(err).__name__}: {err})") from None


def encode_record(record: RawImage) -> tuple[RawImage, bytes | None, str, bool]:
    """``(record, bytes to store, "", had transparency)``, or ``(record, None, why, False)`` with the
    reason on one line when the image cannot be stored. Runs in the worker processes of
    ``sslray.data.shards.prepare``."""
    try:
        data, transparent = _stored(record.payload)
    except BadImage as err:
        return record, None, " ".join(str(err).split()), False  # one line: reasons are listed one per line
    return record, data, "", transparent
