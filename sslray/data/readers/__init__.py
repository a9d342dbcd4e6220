"""Source readers: every supported dataset format, read as a stream of ``RawImage`` records.

A reader knows its splits and yields, per split, records whose payload is either a decoded uint8
array (idx, CIFAR, STL-10: pixels stored raw), the original encoded bytes (Parquet) or the path of an
image file (ImageFolder). ``sslray.data.shards`` turns the stream into the one Parquet format
(``image`` = encoded PNG/JPEG bytes, ``label`` = int or null, ``id`` = str).

Readers never decide what is corrupt; they hand the bytes on and the shard writer checks them, so
every source gets the same skip-and-count treatment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sslray.data.readers.base import ArrayReader, RawImage, Reader
from sslray.data.readers.cifar import CIFARReader
from sslray.data.readers.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FashionMNISTReader,
    fashion_mnist_arrays,
    read_idx,
)
from sslray.data.readers.folder import FolderReader
from sslray.data.readers.parquet import ParquetReader
from sslray.data.readers.stl10 import STL10Reader
from sslray.errors import UserError

__all__ = ["ArrayReader", "CIFARReader", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "FashionMNISTReader",
           "FolderReader", "ParquetReader", "RawImage", "Reader", "SOURCES", "Source", "STL10Reader",
           "fashion_mnist_arrays", "open_source", "read_idx"]

@dataclass(frozen=True)
class Source:
    """One entry of ``SOURCES``: how to open a dataset format for ``sslray data prepare``."""

    open: Callable[[str | None, str, str | None], Reader]  # (path, image_column, label_column) -> reader
    needs_path: bool = True  # False: the reader knows where the data lives (a system package)


# `sslray data prepare SOURCE`: name -> Source. A new format = its reader module + one entry here.
SOURCES: dict[str, Source] = {
    "fashion-mnist": Source(lambda path, image, label: FashionMNISTReader(path), needs_path=False),
    "cifar10": Source(lambda path, image, label: CIFARReader(path, 10)),
    "cifar100": Source(lambda path, image, label: CIFARReader(path, 100)),
    "stl10": Source(lambda path, image, label: STL10Reader(path)),
    "folder": Source(lambda path, image, label: FolderReader(path)),
    "parquet": Source(lambda path, image, label: ParquetReader(path, image, label)),
}


def open_source(source: str, path: str | None, image_column: str = "image",
                label_column: str | None = "label") -> Reader:
    """The reader for ``source`` (a name in ``SOURCES``); ``path`` is required except for fashion-mnist."""
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if path is None and SOURCES[source].needs_path:
        raise UserError(f"{source}: --path is required (the folder or file holding the dataset)")
    return SOURCES[source].open(path, image_column, label_column)
