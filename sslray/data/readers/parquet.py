"""Existing Parquet files with an image-bytes column (raw, or Hugging Face's struct format)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sslray.data.readers.base import RawImage
from sslray.errors import UserError


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
            label_type = schema.field(self.label_column).type
            # Class indices only: int("cat") would crash mid-way, int(0.5) would silently make it 0.
            if not (pa.types.is_integer(label_type) or pa.types.is_null(label_type)):
                raise UserError(f"{file}: column {self.label_column!r} has type {label_type}; expected integer "
                                "class indices (pass --label-column NAME for another column, or "
                                "--label-column '' for none)")
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
