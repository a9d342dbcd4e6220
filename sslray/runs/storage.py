"""Where results and datasets live: a local folder, a mounted shared one (NFS), or object storage by URI.

A location is a plain path (``sweeps/q``, ``/mnt/nfs/sweeps/q``) or a URI that pyarrow opens
(``s3://bucket/sweeps/q``, ``gs://...``, ``file:///abs/path``, ``hdfs://...``). Ray Tune and Ray Data take
the same strings, so one ``--out`` / ``data.path`` works from a laptop to a cluster without shared disk.

Ray Train V2 leaves artifacts other than checkpoints to the user: ``RunMirror`` copies a run folder's
new and changed files (TensorBoard events, logs, the best checkpoint) from a node's local disk to the
location after every epoch.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from sslray.errors import UserError
from sslray.locations import filesystem, is_uri, join, split_parent

__all__ = ["RunMirror", "filesystem", "has_files", "is_uri", "join", "local_staging", "read_text", "split_parent",
           "upload_folder"]


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
