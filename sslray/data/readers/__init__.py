"""Source readers: every supported dataset format, read as a stream of ``RawImage`` records.

A reader knows its splits and yields, per split, records whose payload is either a decoded uint8
array (idx, CIFAR, STL-10: pixels stored raw), the original encoded bytes (Parquet) or the path of an
image file (ImageFolder). ``sslray.data.shards`` turns the stream into the one Parquet format
(``image`` = encoded PNG/JPEG bytes, ``label`` = int or null, ``id`` = str).

Readers never decide what is corrupt; they hand the bytes on and the shard writer checks them, so
every source gets the same skip-and-count treatment.
"""

from __future__ import annotations

from sslray.data.readers.base import ArrayReader, RawImage, Reader
from sslray.data.readers.cifar import CIFARReader
from sslray.data.readers.fashion_mnist import (FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FashionMNISTReader,
                                               fashion_mnist_arrays, read_idx)
from sslray.data.readers.folder import FolderReader
from sslray.data.readers.parquet import ParquetReader
from sslray.data.readers.stl10 import STL10Reader
from sslray.errors import UserError

__all__ = ["ArrayReader", "CIFARReader", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "FashionMNISTReader",
           "FolderReader", "ParquetReader", "RawImage", "Reader", "SOURCES", "STL10Reader",
           "fashion_mnist_arrays", "open_source", "read_idx"]

SOURCES = ("fashion-mnist", "cifar10", "cifar100", "stl10", "folder", "parquet")


def open_source(source: str, path: str | None, image_column: str = "image",
                label_column: str | None = "label") -> Reader:
    """The reader for ``source`` (one of ``SOURCES``); ``path`` is required except for fashion-mnist."""
    if source == "fashion-mnist":
        return FashionMNISTReader(path)
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if path is None:
        raise UserError(f"{source}: --path is required (the folder or file holding the dataset)")
    if source in ("cifar10", "cifar100"):
        return CIFARReader(path, 10 if source == "cifar10" else 100)
    if source == "stl10":
        return STL10Reader(path)
    if source == "folder":
        return FolderReader(path)
    return ParquetReader(path, image_column, label_column)
