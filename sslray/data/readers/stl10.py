"""STL-10 binaries, the unlabeled split included."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sslray.data.readers.base import ArrayReader, require_dir
from sslray.errors import UserError


class STL10Reader(ArrayReader):
    """STL-10 binaries (``stl10_binary/{train,test,unlabeled}_X.bin`` + ``_y.bin``), 96x96 RGB.

    Pixels are stored column-major per channel (Coates et al. 2011), hence the transpose; labels on
    disk are 1..10 and become 0..9.
    """

    CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]

    def __init__(self, path: str | Path):
        root = require_dir(Path(path), "stl10")
        self.root = root / "stl10_binary" if (root / "stl10_binary").is_dir() else root
        super().__init__("stl10", self.CLASSES)

    def splits(self) -> list[str]:
        """The splits whose image file is present (the unlabeled one alone is 2.7 GB)."""
        present = [s for s in ("train", "test", "unlabeled") if (self.root / f"{s}_X.bin").is_file()]
        if not present:
            raise UserError(f"stl10: no train_X.bin, test_X.bin or unlabeled_X.bin in {self.root}")
        return present

    def arrays(self, split):
        x_path = self.root / f"{split}_X.bin"
        if not x_path.is_file():
            raise UserError(f"stl10: {x_path} not found")
        raw = np.fromfile(x_path, dtype=np.uint8)
        if raw.size % (3 * 96 * 96):
            raise UserError(f"{x_path}: size {raw.size} is not a multiple of 3*96*96 (truncated?)")
        images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
        if split == "unlabeled":
            return images, None
        y_path = self.root / f"{split}_y.bin"
        if not y_path.is_file():
            raise UserError(f"stl10: {y_path} not found")
        labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images):
            raise UserError(f"stl10: {x_path} holds {len(images)} images but {y_path} {len(labels)} labels")
        return images, labels
