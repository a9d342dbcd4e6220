"""Locations: a local path or a URI that pyarrow opens (``s3://bucket/x``, ``gs://...``, ``file:///abs``,
``hdfs://...``). Ray Tune and Ray Data take the same strings, so one ``--out`` / ``data.path`` works from
a laptop to a cluster without shared disk. The one place that tells the two apart and opens either.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs

from sslray.errors import UserError


def absolute(location: str | os.PathLike) -> str:
    """A local path made absolute (it must mean the same file to a Ray worker started elsewhere);
    a URI unchanged."""
    return str(location) if is_uri(location) else str(Path(location).resolve())


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
