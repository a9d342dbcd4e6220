"""CIFAR-10 / CIFAR-100, the python-pickle versions."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from sslray.data.readers.base import ArrayReader, require_dir
from sslray.errors import UserError


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
        root = require_dir(Path(path), f"cifar{num_classes}")
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
