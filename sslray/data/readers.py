"""Source readers: every supported dataset format, read as a stream of ``RawImage`` records.

A reader knows its splits and yields, per split, records whose payload is either a decoded uint8
array (idx, CIFAR, STL-10: pixels stored raw), the original encoded bytes (Parquet) or the path of an
image file (ImageFolder). ``sslray.data.shards`` turns the stream into the one Parquet format
(``image`` = encoded PNG/JPEG bytes, ``label`` = int or null, ``id`` = str).

Readers never decide what is corrupt; they hand the bytes on and the shard writer checks them, so
every source gets the same skip-and-count treatment.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sslray.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class RawImage:
    id: str
    label: int | None
    payload: Union[np.ndarray, bytes, Path]  # HxW / HxWxC uint8 pixels, encoded bytes, or a file to read
    source: str = ""  # where it came from, for skip reports (a file path, a shard + row)


class Reader(Protocol):
    classes: list[str] | None

    def splits(self) -> list[str]: ...

    def records(self, split: str) -> Iterator[RawImage]: ...


def _require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"{what}: {path} does not exist")
    if not path.is_dir():
        raise UserError(f"{what}: {path} is not a folder")
    return path


# ---------------------------------------------------------------------------------------- idx


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


class FashionMNISTReader(ArrayReader):
    def __init__(self, path: str | Path | None = None):
        super().__init__("fashion-mnist", FASHION_MNIST_CLASSES)
        self.root = path

    def splits(self) -> list[str]:
        return ["train", "test"]

    def arrays(self, split):
        return fashion_mnist_arrays(split, self.root)


# -------------------------------------------------------------------------------------- CIFAR


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle CIFAR's dicts of numpy arrays and refuse anything else (pickle can run code)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")


def _load_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise UserError(f"{path}: not a readable CIFAR pickle ({err})") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path}: expected a dict in the CIFAR pickle, found {type(batch).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


class CIFARReader(ArrayReader):
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) python pickles.

    ``path`` may be the extracted folder or its parent.
    """

    def __init__(self, path: str | Path, num_classes: int):
        self.num_classes = num_classes
        folder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
        root = _require_dir(Path(path), f"cifar{num_classes}")
        self.root = root / folder if (root / folder).is_dir() else root
        meta_name, key = ("batches.meta", "label_names") if num_classes == 10 else ("meta", "fine_label_names")
        meta = self.root / meta_name
        classes = None
        if meta.is_file():
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _load_cifar_pickle(meta)[key]]
        super().__init__(f"cifar{num_classes}", classes)

    def splits(self) -> list[str]:
        return ["train", "test"]

    def _files(self, split: str) -> list[Path]:
        if self.num_classes == 10:
            names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        else:
            names = [split]
        files = [self.root / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UserError(f"cifar{self.num_classes}: missing {', '.join(missing)} "
                            f"(expected the python version of the dataset in {self.root})")
        return files

    def arrays(self, split):
        label_key = "labels" if self.num_classes == 10 else "fine_labels"
        images, labels = [], []
        for path in self._files(split):
            batch = _load_cifar_pickle(path)
            if "data" not in batch or label_key not in batch:
                raise UserError(f"{path}: CIFAR pickle lacks 'data' or '{label_key}'")
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise UserError(f"{path}: 'data' has shape {data.shape}, expected [N, 3072]")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)


# ------------------------------------------------------------------------------------- STL-10


class STL10Reader(ArrayReader):
    """STL-10 binaries (``stl10_binary/{train,test,unlabeled}_X.bin`` + ``_y.bin``), 96x96 RGB.

    Pixels are stored column-major per channel (Coates et al. 2011), hence the transpose; labels on
    disk are 1..10 and become 0..9.
    """

    CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]

    def __init__(self, path: str | Path):
        root = _require_dir(Path(path), "stl10")
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


# -------------------------------------------------------------------------------- ImageFolder


class FolderReader:
    """An ImageFolder tree: ``root/<class>/**/<image>``; images directly in ``root`` = unlabeled.

    If ``root`` has sub-folders named after splits (``train``, ``val``, ``test``, ``unlabeled``), each
    is a split; otherwise the whole tree is the ``train`` split. Classes are the sorted sub-folder
    names of the first split, so labels agree between splits.
    """

    SPLIT_NAMES = ("train", "val", "test", "unlabeled")

    def __init__(self, path: str | Path):
        self.root = _require_dir(Path(path), "folder")
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


# ------------------------------------------------------------------------------------ Parquet


class ParquetReader:
    """Existing Parquet files with an image column: raw bytes, or a struct with a ``bytes`` field
    (the Hugging Face ``datasets`` image format). One split, named after the input."""

    def __init__(self, path: str | Path, image_column: str = "image", label_column: str | None = "label",
                 split: str = "train"):
        path = Path(path)
        if not path.exists():
            raise UserError(f"parquet: {path} does not exist")
        self.files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not self.files:
            raise UserError(f"parquet: no *.parquet files under {path}")
        self.image_column, self.label_column, self.split = image_column, label_column, split
        self.classes = None

    def splits(self) -> list[str]:
        return [self.split]

    def _column_names(self, file: Path) -> list[str]:
        try:
            schema = pq.read_schema(file)
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"{file}: not a readable Parquet file ({err})") from None
        if self.image_column not in schema.names:
            raise UserError(f"{file}: no column {self.image_column!r} (columns: {', '.join(schema.names)}); "
                            "pass --image-column")
        image_type = schema.field(self.image_column).type
        if not (pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)
                or (pa.types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0)):
            raise UserError(f"{file}: column {self.image_column!r} has type {image_type}; expected image bytes "
                            "(binary, or a struct with a 'bytes' field)")
        columns = [self.image_column]
        if self.label_column and self.label_column in schema.names:
            columns.append(self.label_column)
        return columns

    def records(self, split: str) -> Iterator[RawImage]:
        for file in self.files:
            columns = self._column_names(file)
            parquet = pq.ParquetFile(file)
            row = 0
            for batch in parquet.iter_batches(columns=columns, batch_size=1024):
                images = batch.column(self.image_column)
                if pa.types.is_struct(images.type):
                    images = images.field("bytes")
                labels = batch.column(self.label_column).to_pylist() if len(columns) > 1 else [None] * len(batch)
                for image, label in zip(images.to_pylist(), labels):
                    yield RawImage(f"{file.stem}/{row:07d}", None if label is None else int(label),
                                   image or b"", f"{file} row {row}")
                    row += 1


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

