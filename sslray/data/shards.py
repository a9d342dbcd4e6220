"""The prepared-dataset format, and ``prepare``: any source -> checked images -> sharded Parquet.

A prepared split is a folder ``OUT/<split>/`` of ``part-NNNNN.parquet`` shards with the columns of
``SCHEMA`` and a ``dataset.json`` that records the source, row count, class names and every image that
was skipped, with the reason. Each split is written into a hidden ``.partial`` folder and renamed into
place at the end, so a crash never leaves a half-written split under the real name, and an existing
split is never overwritten without ``ShardOptions(overwrite=True)``.

Every image is decoded once, in a process pool, by ``sslray.data.encode`` (which decides what is stored
and why an image is refused): unreadable, truncated, empty or absurdly large images are skipped,
counted and listed, never fatal.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# BadImage, stored_bytes and the size limits are re-exported: callers import them from here too.
from sslray.data.encode import MAX_PIXELS, MAX_SIDE, BadImage, encode_record, stored_bytes
from sslray.data.readers import RawImage, Reader, open_source
from sslray.errors import UserError

SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("id", pa.string())])
FORMAT = "sslray-prepared/1"
CHUNK = 1024  # images per pool round trip: bounds memory and the work done past --limit
# Row groups are the units training shuffles and deals out to workers each epoch
# (sslray.data.pipeline.rank_views_dataset): small enough to mix well, big enough to read efficiently.
ROW_GROUP_ROWS = 1024
# ...and at most this many encoded bytes. A row group is one Ray Data task, and each epoch's first batch
# waits for a whole one to be decoded and augmented: ImageNet-size JPEGs (~108 KB) make groups of ~300
# rows, ~3.7 s of one core for SimCLR's 2 x 224 px views instead of 12 s (docs/scaling.md, "Epoch
# start"); small images (Fashion-MNIST, CIFAR) still fill 1,024 rows.
ROW_GROUP_BYTES = 32 << 20

__all__ = ["BadImage", "CHUNK", "FORMAT", "MAX_PIXELS", "MAX_SIDE", "ROW_GROUP_BYTES", "ROW_GROUP_ROWS", "SCHEMA",
           "ShardWriter", "ShardOptions", "SplitReport", "prepare", "resolve_classes", "row_group_rows",
           "stored_bytes", "write_split"]


def row_group_rows(images: list[bytes], max_bytes: int = ROW_GROUP_BYTES) -> int:
    """Rows per row group for these encoded images: ROW_GROUP_ROWS, fewer when that many would hold
    more than ``max_bytes`` on average."""
    mean = sum(len(image) for image in images) / max(1, len(images))
    return max(1, min(ROW_GROUP_ROWS, int(max_bytes // max(mean, 1.0))))


@dataclass
class SplitReport:
    split: str
    folder: Path
    rows: int = 0
    shards: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    composited: int = 0  # images with transparency, stored composited on white


class ShardWriter:
    """Writes rows into ``part-NNNNN.parquet`` shards of ``rows_per_shard`` rows inside a hidden
    partial folder; ``commit`` renames it to the final folder."""

    def __init__(self, final: Path, rows_per_shard: int, row_group_bytes: int = ROW_GROUP_BYTES):
        self.final = final
        self.partial = final.parent / f".{final.name}.partial-{os.getpid()}"
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.rows_per_shard = rows_per_shard
        self.row_group_bytes = row_group_bytes
        self.columns: dict[str, list] = {"image": [], "label": [], "id": []}
        self.shards = 0

    def add(self, image: bytes, label: int | None, image_id: str) -> None:
        self.columns["image"].append(image)
        self.columns["label"].append(label)
        self.columns["id"].append(image_id)
        if len(self.columns["id"]) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.columns["id"]:
            return
        table = pa.table(self.columns, schema=SCHEMA)
        rows = row_group_rows(self.columns["image"], self.row_group_bytes)
        pq.write_table(table, self.partial / f"part-{self.shards:05d}.parquet", row_group_size=rows)
        self.shards += 1
        self.columns = {"image": [], "label": [], "id": []}

    def commit(self, info: dict, overwrite: bool) -> None:
        self.flush()
        (self.partial / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
        if self.final.exists():
            if not overwrite:  # checked before any work too; re-checked in case it appeared meanwhile
                raise UserError(f"{self.final} already exists; pass --overwrite to replace it")
            old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
            self.final.rename(old)
            self.partial.rename(self.final)
            shutil.rmtree(old)
        else:
            self.partial.rename(self.final)

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def resolve_classes(reader: Reader, wanted: list[str] | None, num_classes: int | None) -> dict[int, int] | None:
    """Map source label -> new label for a class subset (``--classes`` names/indices or the first
    ``--num-classes``); None keeps all classes."""
    if wanted is None and num_classes is None:
        return None
    names = reader.classes
    if names is None:
        raise UserError("--classes/--num-classes: this source has no classes (unlabeled)")
    if num_classes is not None:
        if not 1 <= num_classes <= len(names):
            raise UserError(f"--num-classes: {num_classes} is out of range; the source has {len(names)} classes")
        return {i: i for i in range(num_classes)}
    # Where class names are themselves numbers ("1", "2", ...), "0" could be a name or an index: then
    # --classes takes names only, so no item means two different classes.
    numbered = any(name.isdigit() for name in names)
    chosen = []
    for item in wanted:
        if item in names:
            chosen.append(names.index(item))
        elif item.isdigit() and numbered:
            raise UserError(f"--classes: no class named {item!r}; this source's class names are numbers, so "
                            f"--classes takes names, not indices: {', '.join(names[:20])}"
                            + (", ..." if len(names) > 20 else ""))
        elif item.isdigit() and int(item) < len(names):
            chosen.append(int(item))
        else:
            raise UserError(f"--classes: unknown class {item!r}; the source has {len(names)} classes "
                            f"(names or indices 0..{len(names) - 1}): {', '.join(names[:20])}"
                            + (", ..." if len(names) > 20 else ""))
    if len(set(chosen)) != len(chosen):
        raise UserError(f"--classes: a class is listed twice in {','.join(wanted)}")
    return {old: new for new, old in enumerate(chosen)}


def _selected(records: Iterable[RawImage], remap: dict[int, int] | None) -> Iterator[RawImage]:
    for record in records:
        if remap is None:
            yield record
        elif record.label in remap:
            record.label = remap[record.label]
            yield record


def _chunks(records: Iterator[RawImage], size: int) -> Iterator[list[RawImage]]:
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_split(records: Iterator[RawImage], writer: ShardWriter, report: SplitReport, limit: int | None,
                pool, log: Callable[[str], None]) -> None:
    last_log = time.monotonic()
    for chunk in _chunks(records, CHUNK):
        results = pool.map(encode_record, chunk, chunksize=64) if pool else map(encode_record, chunk)
        for record, data, why, transparent in results:
            if data is None:
                report.skipped.append((record.source or record.id, why))
                continue
            report.composited += transparent
            writer.add(data, record.label, record.id)
            report.rows += 1
            if limit is not None and report.rows >= limit:
                return
        if time.monotonic() - last_log > 10:
            log(f"  {report.split}: {report.rows:,} images written, {len(report.skipped)} skipped so far")
            last_log = time.monotonic()


def _to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass(frozen=True)
class ShardOptions:
    """How ``prepare`` selects, reads, writes and reports: the ``sslray data prepare`` options but for
    the common ``--path``, ``--split`` and ``--limit``, which are its own keywords."""

    classes: list[str] | None = None  # class names or indices to keep, relabelled 0..k-1 (None: all)
    num_classes: int | None = None  # or: keep the first N classes
    rows_per_shard: int = 10_000  # rows per Parquet shard
    overwrite: bool = False  # replace splits that already exist in ``out``
    workers: int | None = None  # decode processes (None: every CPU)
    image_column: str = "image"  # parquet source: the column with image bytes
    label_column: str | None = "label"  # parquet source: the column with int labels (None: unlabeled)
    log: Callable[[str], None] = _to_stderr  # where progress lines go


def prepare(source: str, out: str | Path, *, path: str | None = None, split: str = "all",
            limit: int | None = None, options: ShardOptions = ShardOptions()) -> list[SplitReport]:
    """Convert ``source`` into prepared Parquet splits under ``out``; returns one report per split."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit: {limit} is out of range; must be >= 1")
    if options.rows_per_shard < 1:
        raise UserError(f"--shard-size: {options.rows_per_shard} is out of range; must be >= 1")
    reader = open_source(source, path, options.image_column, options.label_column)
    available = reader.splits()
    if split != "all" and split not in available:
        raise UserError(f"--split: {source} has no split {split!r}; it has {', '.join(available)}")
    splits = available if split == "all" else [split]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT: {out} is a file; give a folder to write the splits into")
    # The folder and parquet sources read every file under --path: an OUT there is read back on a re-run.
    if source in ("folder", "parquet") and path is not None and out.resolve().is_relative_to(Path(path).resolve()):
        raise UserError(f"OUT: {out} is inside --path {path}; prepare would read its own output as input "
                        "on the next run: choose an OUT outside it")
    for name in splits:  # refuse before doing any work, so nothing is half-replaced
        if (out / name).exists() and not options.overwrite:
            raise UserError(f"{out / name} already exists; pass --overwrite to replace it, or choose another OUT")
    remap = resolve_classes(reader, options.classes, options.num_classes)
    class_names = reader.classes if remap is None else [reader.classes[old] for old in remap]
    workers = options.workers or os.cpu_count() or 1
    reports = []
    with multiprocessing.get_context("fork").Pool(workers) if workers > 1 else _NoPool() as pool:
        for name in splits:
            report = SplitReport(name, out / name)
            writer = ShardWriter(out / name, options.rows_per_shard)
            try:
                write_split(_selected(reader.records(name), remap), writer, report, limit, pool, options.log)
                if report.rows == 0:
                    raise UserError(f"{source} split {name!r}: no images written"
                                    + _skip_summary(report) + (f" from {path}" if path else ""))
                report.shards = writer.shards + (1 if writer.columns["id"] else 0)
                writer.commit(_info(source, path, name, report, class_names), options.overwrite)
            except BaseException:
                writer.abort()
                raise
            reports.append(report)
    return reports


class _NoPool:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _skip_summary(report: SplitReport) -> str:
    if not report.skipped:
        return " (the source holds no images)"
    where, why = report.skipped[0]
    return f" ({len(report.skipped)} skipped as unreadable, e.g. {where}: {why})"


def _info(source, path, split, report: SplitReport, class_names) -> dict:
    return {
        "format": FORMAT, "source": source, "path": None if path is None else str(path), "split": split,
        "num_rows": report.rows, "num_shards": report.shards,
        "classes": class_names, "num_classes": None if class_names is None else len(class_names),
        "skipped": len(report.skipped),
        "composited_on_white": report.composited,  # images with transparency (sslray.data.encode)
        # Every skipped image, not a sample: the CLI prints the first few and points here for the rest.
        "skipped_examples": [{"where": w, "why": y} for w, y in report.skipped],
    }
