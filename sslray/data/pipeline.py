"""Ray Data pipelines over prepared datasets: read Parquet -> decode -> augment (CPU) -> uint8 views.

``views_dataset`` yields rows ``view_0 .. view_{V-1}`` (uint8 ``[C, S, S]``, global crops first) and
``label`` (int64, -1 when unlabeled); ``eval_dataset`` yields ``image`` (uint8, deterministic
centre crop) and ``label``. Decoding and augmentation run in ``map_batches`` tasks on whole batches
(``sslray.data.augment``), wherever Ray schedules them, so GPU nodes only receive finished uint8 views.

Views are a pure function of (seed, epoch, view index, sample id): build a new dataset per epoch with
the epoch number to get fresh augmentations, the same ones on every re-run. What a dataset renders
(``EpochViews``: view specs, channels, seed, epoch) and how Ray Data runs its tasks (``MapTasks``:
batch size, CPUs per task, node labels) are passed as two small frozen dataclasses.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sslray.data.augment import EvalViewSpec, ViewSpec, decode_images, render_eval_view, render_view
from sslray.data.batched_transforms import PerSampleRandom, sample_keys
from sslray.errors import UserError
from sslray.locations import filesystem

COLUMNS = ("image", "label", "id")
SHRINK_FACTOR = 2  # decoded images are shrunk to a shorter side of 2x the largest view (see decode_images)


@dataclass
class PreparedDataset:
    """A prepared split, checked: its Parquet shards, row count, row groups and class names (if known)."""
    path: str
    files: list[str]
    num_rows: int
    classes: list[str] | None
    row_groups: list[tuple[str, int, int]]  # (file, row group index, rows), in file order


def open_prepared(path: str, where: str = "data.path") -> PreparedDataset:
    """Check a prepared split (``sslray data prepare`` output) and describe it. A missing folder, a
    folder without shards or a shard with the wrong schema is a UserError naming the shard and column."""
    fs, root = filesystem(str(path), where)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{where}: {path} does not exist (prepare it with `sslray data prepare ...`, "
                        "or `make data` for Fashion-MNIST)")
    if info.type == pafs.FileType.File:
        files = [root]
    else:
        selector = pafs.FileSelector(root, recursive=True)
        files = sorted(f.path for f in fs.get_file_info(selector)
                       if f.type == pafs.FileType.File and f.path.endswith(".parquet")
                       and not any(part.startswith(".") for part in PurePosixPath(f.path).relative_to(root).parts))
    if not files:
        raise UserError(f"{where}: no .parquet shards in {path}")
    prefix = "" if "://" not in str(path) else str(path).split("://")[0] + "://"
    rows, row_groups = 0, []
    for file in files:
        try:
            with fs.open_input_file(file) as handle:
                meta = pq.ParquetFile(handle).metadata
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"{where}: shard {file} is not readable Parquet ({err})") from None
        _check_schema(file, meta.schema.to_arrow_schema())
        rows += meta.num_rows
        row_groups += [(prefix + file, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    classes = None
    if info.type == pafs.FileType.Directory:
        try:
            with fs.open_input_stream(f"{root}/dataset.json") as handle:
                classes = json.loads(handle.read()).get("classes")
        except (FileNotFoundError, OSError, ValueError):
            classes = None  # optional: a bare folder of shards has no class names
    return PreparedDataset(str(path), [prefix + f for f in files], rows, classes, row_groups)


def _check_schema(file: str, schema: pa.Schema) -> None:
    expected = {"image": (pa.types.is_binary, pa.types.is_large_binary), "label": (pa.types.is_integer,),
                "id": (pa.types.is_string, pa.types.is_large_string)}
    for column, checks in expected.items():
        if column not in schema.names:
            raise UserError(f"shard {file}: missing column {column!r} (has {', '.join(schema.names)}); "
                            "expected the sslray prepared format (image bytes, label int, id string)")
        kind = schema.field(column).type
        if not any(check(kind) for check in checks):
            raise UserError(f"shard {file}: column {column!r} has type {kind}; expected "
                            f"{ {'image': 'binary', 'label': 'integer', 'id': 'string'}[column] }")


def _columns(batch: pa.Table) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images = batch.column("image").to_numpy(zero_copy_only=False)
    labels = pc.fill_null(batch.column("label"), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return images, labels, batch.column("id").to_pylist()


def make_views(batch: pa.Table, *, specs: list[ViewSpec], channels: int, seed: int, epoch: int,
               with_ids: bool = False) -> dict[str, np.ndarray]:
    """The ``map_batches`` function: one batch of encoded images -> uint8 views + labels."""
    encoded, labels, ids = _columns(batch)
    images, sizes = decode_images(encoded, channels, SHRINK_FACTOR * max(s.size for s in specs))
    out = {f"view_{v}": render_view(images, sizes, spec, PerSampleRandom(sample_keys(ids, seed, epoch, v))).numpy()
           for v, spec in enumerate(specs)}
    out["label"] = labels
    if with_ids:
        out["id"] = np.array(ids, dtype=object)
    return out


def make_eval_images(batch: pa.Table, *, spec: EvalViewSpec, channels: int, with_ids: bool = False) -> dict:
    encoded, labels, ids = _columns(batch)
    images, sizes = decode_images(encoded, channels, max(spec.size, int(spec.size / spec.crop_fraction)))
    out = {"image": render_eval_view(images, sizes, spec).numpy(), "label": labels}
    if with_ids:
        out["id"] = np.array(ids, dtype=object)
    return out


def on_nodes(dataset, label_selector: dict[str, str] | None):
    """Restrict every task of ``dataset`` to Ray nodes carrying these labels (``data.label_selector``):
    decode/augment then runs on CPU-only data nodes, and trainers only receive uint8 batches."""
    if label_selector:
        dataset.context.execution_options.label_selector = dict(label_selector)
    return dataset


def _read(path: str):
    import ray.data

    prepared = open_prepared(path)
    return ray.data.read_parquet(prepared.files).select_columns(list(COLUMNS))


@dataclass(frozen=True)
class EpochViews:
    """Which views a dataset renders: a pure function of these, the view index and the sample id."""
    specs: list[ViewSpec]  # one per view, global crops first (AugmentConfig.view_specs())
    channels: int = 3      # 1 (grayscale) or 3 (RGB): data.channels
    seed: int = 0          # train.seed: with the epoch, keys every random choice
    epoch: int = 0         # a new epoch, fresh augmentations; the same epoch, the same views


@dataclass(frozen=True)
class MapTasks:
    """How Ray Data runs the decode/augment ``map_batches`` tasks."""
    batch_size: int = 256  # rows per task call (and per output block)
    num_cpus: float = 1.0  # CPUs reserved per task: data.cpus_per_task
    label_selector: dict[str, str] | None = None  # node labels the tasks run on: data.label_selector

    @classmethod
    def of(cls, data) -> MapTasks:
        """The tasks a recipe's ``data`` section asks for (its ``cpus_per_task`` and ``label_selector``)."""
        return cls(num_cpus=data.cpus_per_task, label_selector=data.label_selector)


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise UserError(f"data.channels: {channels!r} is not allowed; choose 1 or 3")


def views_dataset(path: str, views: EpochViews, tasks: MapTasks = MapTasks(), *, with_ids: bool = False,
                  keep_ids: list[str] | None = None):
    """Ray Dataset of augmented uint8 views of the prepared split at ``path`` (only the rows whose id
    is in ``keep_ids`` when given: a label fraction is chosen before any image is decoded)."""
    _check_channels(views.channels)
    fn = functools.partial(make_views, specs=views.specs, channels=views.channels, seed=views.seed,
                           epoch=views.epoch, with_ids=with_ids)
    rows = _read(path)
    if keep_ids is not None:
        wanted = pa.array(sorted(keep_ids), type=pa.string())
        rows = rows.map_batches(lambda t: t.filter(pc.is_in(t.column("id"), value_set=wanted)),
                                batch_format="pyarrow", num_cpus=tasks.num_cpus)
    return on_nodes(rows.map_batches(fn, batch_format="pyarrow", batch_size=tasks.batch_size, num_cpus=tasks.num_cpus),
                    tasks.label_selector)


def split_index(path: str) -> tuple[list[str], np.ndarray]:
    """Ids and labels (-1: unlabelled) of a prepared split in file order, without reading any image."""
    prepared = open_prepared(path)
    table = pa.concat_tables(pq.read_table(f, columns=["id", "label"]) for f in prepared.files)
    return table.column("id").to_pylist(), pc.fill_null(table.column("label"), -1).to_numpy().astype(np.int64)


def eval_dataset(path: str, spec: EvalViewSpec, *, channels: int = 3, tasks: MapTasks = MapTasks(),
                 with_ids: bool = False):
    """Ray Dataset of deterministic eval images (uint8) and labels."""
    _check_channels(channels)
    fn = functools.partial(make_eval_images, spec=spec, channels=channels, with_ids=with_ids)
    return on_nodes(_read(path).map_batches(fn, batch_format="pyarrow", batch_size=tasks.batch_size,
                                            num_cpus=tasks.num_cpus), tasks.label_selector)


# ------------------------------------------------------------------ per-worker training datasets


def leading_row_groups(prepared: PreparedDataset, limit: int | None = None) -> list[tuple[str, int, int]]:
    """(file, row group, rows) units holding the first ``limit`` rows in file order (the last one cut short)."""
    units, left = [], limit if limit is not None else prepared.num_rows
    for file, group, rows in prepared.row_groups:
        if left <= 0:
            break
        units.append((file, group, min(rows, left)))
        left -= rows
    return units


def epoch_row_groups(prepared: PreparedDataset, *, seed: int, epoch: int, rank: int, world: int,
                     limit: int | None = None) -> list[tuple[str, int, int]]:
    """The row groups worker ``rank`` of ``world`` reads in ``epoch``: a seeded permutation of all row
    groups (of the first ``limit`` rows), dealt round-robin. Every worker computes every worker's share,
    so all agree on the epoch's length without talking to each other."""
    units = leading_row_groups(prepared, limit)
    order = np.random.default_rng([seed, epoch]).permutation(len(units))
    return [units[i] for i in order[rank::world]]


def worker_shares(prepared: PreparedDataset, *, seed: int, epoch: int, world: int,
                  limit: int | None = None) -> list[int]:
    """Rows each of ``world`` workers reads in ``epoch`` (whole row groups, ``epoch_row_groups``)."""
    return [sum(rows for _, _, rows in epoch_row_groups(prepared, seed=seed, epoch=epoch, rank=r, world=world,
                                                        limit=limit)) for r in range(world)]


def steps_per_epoch(prepared: PreparedDataset, *, seed: int, epoch: int, world: int, batch_per_worker: int,
                    limit: int | None = None) -> int:
    """Full batches every worker can take in ``epoch``: the smallest share decides (DDP needs equal steps)."""
    return min(worker_shares(prepared, seed=seed, epoch=epoch, world=world, limit=limit)) // batch_per_worker


def read_row_groups(units: pa.Table) -> pa.Table:
    """(file, row_group, rows) units -> the rows they name."""
    tables = []
    for file, group, rows in zip(*(units.column(c).to_pylist() for c in ("file", "row_group", "rows"))):
        fs, local = filesystem(file, "a prepared shard")
        with fs.open_input_file(local) as handle:
            tables.append(pq.ParquetFile(handle).read_row_group(group, columns=list(COLUMNS)).slice(0, rows))
    return pa.concat_tables(tables)


def first_rows(prepared: PreparedDataset, limit: int | None = None) -> Iterator[pa.Table]:
    """The first ``limit`` rows of a prepared split in file order, one row group at a time, read right
    here (no Ray): for small fixed sets such as the online kNN's, where starting a pipeline costs more
    than decoding them."""
    for file, group, rows in leading_row_groups(prepared, limit):
        yield read_row_groups(pa.table({"file": [file], "row_group": [group], "rows": [rows]}))


def row_group_views(units: pa.Table, *, batch_size: int, **view_options) -> Iterator[dict[str, np.ndarray]]:
    """``map_batches`` generator: one row group unit in, its views out in blocks of ``batch_size`` rows.

    Reading and augmenting in one function, one task per row group, is what spreads an epoch over
    every CPU: as two chained ``map_batches``, Ray Data fuses them and bundles as many *units* per task
    as the second one's batch size (256 row groups: a whole epoch in one task on one core, and no batch
    before all of it is done). Yielding block by block bounds a task's memory and lets training start
    after the first block."""
    rows = read_row_groups(units)
    for start in range(0, rows.num_rows, batch_size):
        yield make_views(rows.slice(start, batch_size), **view_options)


def rank_views_dataset(prepared: PreparedDataset, views: EpochViews, tasks: MapTasks = MapTasks(), *, rank: int,
                       world: int, limit: int | None = None):
    """Worker ``rank``'s views for ``views.epoch``, in a deterministic order: its row groups
    (``epoch_row_groups``) read in order, augmented with (seed, epoch)-keyed randomness. Shuffle within
    the worker with ``iter_torch_batches(local_shuffle_buffer_size=..., local_shuffle_seed=...)``."""
    import ray.data

    units = epoch_row_groups(prepared, seed=views.seed, epoch=views.epoch, rank=rank, world=world, limit=limit)
    items = [{"file": f, "row_group": g, "rows": n} for f, g, n in units]
    fn = functools.partial(row_group_views, batch_size=tasks.batch_size, specs=views.specs, channels=views.channels,
                           seed=views.seed, epoch=views.epoch)
    ds = (ray.data.from_items(items, override_num_blocks=max(1, len(items)))
          .map_batches(fn, batch_size=1, batch_format="pyarrow", num_cpus=tasks.num_cpus))
    ds.context.execution_options.preserve_order = True  # order = row-group order: reproducible batches
    return on_nodes(ds, tasks.label_selector)
