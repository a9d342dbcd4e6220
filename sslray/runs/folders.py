"""Which results folders sslray may write into, and which it may replace (``--overwrite``).

Every command that writes results (``train``, ``sweep``, ``submit``, ``eval``, ``report``) asks here
before any work starts. An ``--out`` that holds files is refused unless ``--overwrite`` is given *and*
the folder is one sslray made for the same purpose, recognised by the file that kind of folder gets
first (its marker): a mistyped ``--out ~`` is refused instead of emptied. The deletion itself happens
only after the rest of the command line has been validated, so a mistake never costs the old results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow.fs as pafs

from sslray.errors import UserError
from sslray.runs.storage import filesystem, has_files


@dataclass(frozen=True)
class FolderKind:
    name: str                  # said in messages: "run", "sweep", "eval", "report"
    markers: tuple[str, ...]   # files sslray writes first into such a folder: one of them proves sslray made it
    resumable: bool = False    # `--resume` continues one (the message offers it)


def default_out(parent: str, name: str) -> str:
    """Where a run or sweep goes without ``--out``: ``parent/name-YYYYmmdd-HHMMSS``."""
    return f"{parent}/{name}-{time.strftime('%Y%m%d-%H%M%S')}"


RUN = FolderKind("run", ("config.yaml",), resumable=True)
SWEEP = FolderKind("sweep", ("space.yaml",), resumable=True)
# eval/report folders get options.json when created; results.json marks those written before it existed.
EVAL = FolderKind("eval", ("options.json", "results.json"))
REPORT = FolderKind("report", ("options.json", "results.json"))


def is_folder_of(location: str, kind: FolderKind, where: str = "--out") -> bool:
    """Whether ``location`` (a path or a URI) holds one of ``kind``'s marker files."""
    fs, path = filesystem(location, where)
    return any(fs.get_file_info(f"{path}/{marker}").type == pafs.FileType.File for marker in kind.markers)


def check_out(location: str, kind: FolderKind, overwrite: bool, where: str = "--out") -> None:
    """Refuse, before any work, a ``location`` that holds files, unless ``overwrite`` is given and it is
    an sslray folder of this ``kind``. Deletes nothing (``replace_folder`` does, later)."""
    if not has_files(location, where):
        return
    fs, path = filesystem(location, where)
    if fs.get_file_info(path).type == pafs.FileType.File:
        raise UserError(f"{where}: {location} is a file; give a folder")
    if not overwrite:
        resume = ", continue it with --resume" if kind.resumable else ""
        raise UserError(f"{where}: {location} already exists and is not empty; choose a new folder{resume}, "
                        "or replace it with --overwrite")
    if not is_folder_of(location, kind, where):
        raise UserError(f"{where}: {location} has files but no {' or '.join(kind.markers)}, so it is not an sslray "
                        f"{kind.name} folder; --overwrite only replaces those: choose a new folder")


def replace_folder(location: str, kind: FolderKind, where: str = "--out") -> None:
    """Delete ``location`` for ``--overwrite`` once the command has validated everything else; only an
    sslray folder of ``kind`` is deleted (``check_out`` again, in case it changed meanwhile)."""
    check_out(location, kind, overwrite=True, where=where)
    if has_files(location, where):
        fs, path = filesystem(location, where)
        fs.delete_dir(path)
