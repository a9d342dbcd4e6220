"""ImageFolder trees of JPEG/PNG images of any size: ImageNet subsets and users' own photos."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sslray.data.readers.base import IMAGE_SUFFIXES, RawImage, require_dir
from sslray.errors import UserError


class FolderReader:
    """An ImageFolder tree: ``root/<class>/**/<image>``; images directly in ``root`` = unlabeled.

    If ``root`` has sub-folders named after splits (``train``, ``val``, ``test``, ``unlabeled``), each
    is a split; otherwise the whole tree is the ``train`` split. Classes are the sorted sub-folder
    names of the first split, so labels agree between splits.
    """

    SPLIT_NAMES = ("train", "val", "test", "unlabeled")

    def __init__(self, path: str | Path):
        self.root = require_dir(Path(path), "folder")
        found = [s for s in self.SPLIT_NAMES if (self.root / s).is_dir()]
        self._split_dirs = {s: self.root / s for s in found} or {"train": self.root}
        first = next(iter(self._split_dirs.values()))
        self.classes = sorted(d.name for d in first.iterdir() if d.is_dir() and not d.name.startswith(".")) or None

    def splits(self) -> list[str]:
        return list(self._split_dirs)

    def records(self, split: str) -> Iterator[RawImage]:
        if split not in self._split_dirs:
            raise UserError(f"folder: {self.root} has no split {split!r}; it has {', '.join(self._split_dirs)}")
        base = self._split_dirs[split]
        if self.classes:
            groups = [(i, base / c) for i, c in enumerate(self.classes) if (base / c).is_dir()]
        else:
            groups = [(None, base)]
        for label, folder in groups:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                for name in sorted(filenames):
                    if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    path = Path(dirpath) / name
                    # The path, not the bytes: files are read in the shard writer's process pool.
                    yield RawImage(str(path.relative_to(self.root)), label, path, str(path))
