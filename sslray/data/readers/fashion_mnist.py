"""Fashion-MNIST (and any MNIST-format idx files): the embedded default dataset, from the Debian
package ``dataset-fashion-mnist`` (files in /usr/share/datasets/fashion-mnist/)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from sslray.data.readers.base import ArrayReader
from sslray.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# "val": the last sixth of the train images (10,000 of 60,000), held out for model selection: a sweep
# picks its winner on them, never on the test split. Pretraining with data.limit <= 50,000 never sees
# them; "train" stays the official 60,000 so that full-data results compare with published ones.
VAL_FRACTION = 6
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (MNIST format; gzipped or not) into a uint8 array.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
    big-endian int32 per dimension (LeCun et al., http://yann.lecun.com/exdb/mnist/).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise UserError(f"{path}: cannot read idx file ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path}: not an idx file of uint8 (bad magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">i4"))
    if len(data) - header != int(np.prod(shape)):
        raise UserError(f"{path}: idx header says shape {shape} but the file holds "
                        f"{len(data) - header} bytes of data (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise UserError(f"fashion-mnist: {root / (stem + '.gz')} not found")


def fashion_mnist_arrays(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as arrays: images ``[N, 28, 28]`` uint8 and labels ``[N]`` int64.

    ``root`` defaults to the Debian package's folder; a missing folder is a UserError that says how
    to install it.
    """
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        raise UserError(
            f"fashion-mnist: {root} not found. Install the Debian package "
            "(as root: apt-get update && apt-get install -y dataset-fashion-mnist), or run `make data`, "
            "or pass --path to a folder holding train-images-idx3-ubyte(.gz) and friends.")
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise UserError(f"fashion-mnist: split {split!r} does not exist; choose train or test")
    images = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise UserError(f"fashion-mnist: {root} holds {images.shape} images but {labels.shape} labels")
    return images, labels


class FashionMNISTReader(ArrayReader):
    def __init__(self, path: str | Path | None = None):
        super().__init__("fashion-mnist", FASHION_MNIST_CLASSES)
        self.root = path

    def splits(self) -> list[str]:
        return ["train", "val", "test"]

    def arrays(self, split):
        if split == "val":
            images, labels = fashion_mnist_arrays("train", self.root)
            first = len(images) - len(images) // VAL_FRACTION
            return images[first:], labels[first:]
        return fashion_mnist_arrays(split, self.root)
