"""What every reader yields (``RawImage``) and the shape of a reader, plus the shared tail of the
readers whose pixels arrive as arrays (idx, CIFAR, STL-10)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sslray.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class RawImage:
    id: str
    label: int | None
    payload: np.ndarray | bytes | Path  # HxW / HxWxC uint8 pixels, encoded bytes, or a file to read
    source: str = ""  # where it came from, for skip reports (a file path, a shard + row)


class Reader(Protocol):
    classes: list[str] | None

    def splits(self) -> list[str]: ...

    def records(self, split: str) -> Iterator[RawImage]: ...


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"{what}: {path} does not exist")
    if not path.is_dir():
        raise UserError(f"{what}: {path} is not a folder")
    return path


class ArrayReader:
    """Records from in-memory arrays: the shared tail of the idx, CIFAR and STL-10 readers."""

    def __init__(self, name: str, classes: list[str] | None):
        self.name = name
        self.classes = classes

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def records(self, split: str) -> Iterator[RawImage]:
        images, labels = self.arrays(split)
        for i in range(len(images)):
            label = None if labels is None else int(labels[i])
            yield RawImage(f"{split}/{i:06d}", label, images[i], f"{self.name} {split} #{i}")
