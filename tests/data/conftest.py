"""Small real dataset files in every source format, written by the tests themselves."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .samples import encode, pattern, write_idx


@pytest.fixture
def idx_dir(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "fmnist"
    root.mkdir()
    arrays = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = np.stack([pattern(28, 28, 1, seed=i) for i in range(n)])
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = (images, labels)
    return root, arrays


@pytest.fixture
def cifar10_dir(tmp_path) -> tuple[Path, np.ndarray]:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    images = np.stack([pattern(32, 32, 3, seed=i) for i in range(12)])  # HWC
    flat = images.transpose(0, 3, 1, 2).reshape(12, -1)  # CIFAR stores CHW rows
    for b in range(5):
        rows = slice(2 * b, 2 * b + 2)
        with open(root / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({b"data": flat[rows], b"labels": list(range(2 * b, 2 * b + 2))}, f)
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": flat[10:], b"labels": [3, 4]}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return tmp_path, images


@pytest.fixture
def stl10_dir(tmp_path) -> tuple[Path, np.ndarray]:
    root = tmp_path / "stl10_binary"
    root.mkdir()
    images = np.stack([pattern(96, 96, 3, seed=i) for i in range(4)])  # HWC
    on_disk = images.transpose(0, 3, 2, 1)  # STL-10 is column-major per channel: [N, C, W, H]
    on_disk.tofile(root / "train_X.bin")
    np.array([1, 2, 10, 5], dtype=np.uint8).tofile(root / "train_y.bin")
    on_disk[:3].tofile(root / "unlabeled_X.bin")
    return tmp_path, images


@pytest.fixture
def folder_tree(tmp_path) -> Path:
    """cats/ and dogs/ with valid images of different sizes and formats, plus broken ones."""
    root = tmp_path / "photos"
    (root / "cats" / "nested").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "cats" / "a.png").write_bytes(encode(pattern(40, 60, 3, 1)))
    (root / "cats" / "nested" / "b.jpg").write_bytes(encode(pattern(80, 50, 3, 2), "JPEG"))
    (root / "cats" / "gray.png").write_bytes(encode(pattern(30, 30, 1, 3)))
    (root / "dogs" / "c.jpeg").write_bytes(encode(pattern(64, 64, 3, 4), "JPEG"))
    (root / "dogs" / "cmyk.jpg").write_bytes(encode(pattern(20, 24, 3, 5), "JPEG", mode="CMYK"))
    Image.fromarray(pattern(16, 16, 1, 6).astype(np.uint16) * 257).save(root / "dogs" / "deep.png")  # 16-bit
    (root / "dogs" / "alpha.png").write_bytes(encode(np.dstack([pattern(12, 12, 3, 7), np.full((12, 12), 128, np.uint8)])))
    # Broken files: skipped and counted, never fatal.
    (root / "dogs" / "empty.png").write_bytes(b"")
    (root / "dogs" / "garbage.jpg").write_bytes(b"this is not an image at all")
    (root / "cats" / "truncated.jpg").write_bytes(encode(pattern(64, 64, 3, 8), "JPEG")[:300])
    (root / "cats" / "notes.txt").write_text("not an image suffix: ignored, not counted")
    return root
