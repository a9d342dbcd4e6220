"""Where results and datasets live: a local folder, a mounted shared one (NFS), or object storage by URI.

A location is a plain path (``sweeps/q``, ``/mnt/nfs/sweeps/q``) or a URI that pyarrow opens
(``s3://bucket/sweeps/q``, ``gs://...``, ``file:///abs/path``, ``hdfs://...``). Ray Tune and Ray Data take
the same strings, so one ``--out`` / ``data.path`` works from a laptop to a cluster without shared disk.

Ray Train V2 leaves artifacts other than checkpoints to the user: ``RunMirror`` copies a run folder's
new and changed files (TensorBoard events, logs, the best checkpoint) from a node's local disk to the
location after every epoch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs

from sslray.errors import UserError


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def filesystem(location: str | os.PathLike, where: str = "--out") -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path on it)`` for a local path or a URI; an unknown scheme or missing credentials
    is a UserError naming ``where``."""
    location = str(location)
    if is_uri(location):
        try:
            return pafs.FileSystem.from_uri(location)
        except (pa.ArrowException, ValueError, OSError) as err:
            raise UserError(f"{where}: cannot open {location} ({err})") from None
    return pafs.LocalFileSystem(), str(PurePosixPath(Path(location).resolve()))


def join(location: str, *names: str) -> str:
    """``location/name/...`` for a path or a URI (query strings such as ``?endpoint_override=`` stay last)."""
    base, _, query = str(location).partition("?")
    joined = "/".join([base.rstrip("/"), *names])
    return f"{joined}?{query}" if query else joined


def split_parent(location: str) -> tuple[str, str]:
    """``("s3://b/sweeps", "q")`` for ``s3://b/sweeps/q``: Tune's storage_path and experiment name."""
    base, _, query = str(location).partition("?")
    parent, _, name = base.rstrip("/").rpartition("/")
    if not name or parent.endswith(":/") or parent.endswith(":"):
        raise UserError(f"--out: {location} names no folder inside a bucket/root; use e.g. s3://BUCKET/sweeps/NAME")
    return (f"{parent}?{query}" if query else parent), name


def has_files(location: str, where: str = "--out") -> bool:
    """Whether ``location`` exists and holds anything (a folder that is not empty, or a file)."""
    fs, path = filesystem(location, where)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return False
    if info.type == pafs.FileType.File:
        return True
    return bool(fs.get_file_info(pafs.FileSelector(path, recursive=False)))


def read_text(location: str, where: str) -> str:
    fs, path = filesystem(location, where)
    try:
        with fs.open_input_stream(path) as handle:
            return handle.read().decode()
    except (FileNotFoundError, pa.ArrowException, OSError) as err:
        raise UserError(f"{where}: cannot read {location} ({err})") from None


def upload_folder(local: Path, location: str) -> None:
    """Copy every file under ``local`` to ``location`` (same relative paths), replacing what is there."""
    RunMirror(local, location).sync()


class RunMirror:
    """Copies a local run folder to a storage location, sending only files that are new or changed since
    the last ``sync`` (by size and mtime): TensorBoard appends to its event files, the rest is small,
    and the best checkpoint is sent only when it changes. Each file is written to a temporary name
    and moved into place where the filesystem can rename (local/NFS), so a reader never sees half a file."""

    def __init__(self, local: Path, location: str) -> None:
        self.local = Path(local)
        self.fs, self.root = filesystem(location)
        self.sent: dict[str, tuple[int, int]] = {}

    def sync(self) -> int:
        """Send what changed; returns how many files were sent."""
        sent = 0
        if not self.local.is_dir():
            return 0
        for file in sorted(p for p in self.local.rglob("*") if p.is_file()):
            relative = file.relative_to(self.local).as_posix()
            stat = file.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            if self.sent.get(relative) == stamp:
                continue
            self._put(file, f"{self.root}/{relative}")
            self.sent[relative] = stamp
            sent += 1
        return sent

    def _put(self, file: Path, target: str) -> None:
        self.fs.create_dir(target.rpartition("/")[0], recursive=True)
        local_fs = isinstance(self.fs, pafs.LocalFileSystem)
        partial = f"{target}.partial" if local_fs else target  # object stores publish a file when it is closed
        with open(file, "rb") as source, self.fs.open_output_stream(partial) as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)
        if local_fs:
            self.fs.move(partial, target)


def local_staging(*names: str) -> Path:
    """A node-local folder for a run whose results go to a URI: ``<tmp>/sslray/<names...>``. The same
    names give the same folder, so a trial restarted on the same node continues its files."""
    folder = Path(tempfile.gettempdir(), "sslray", *names)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
