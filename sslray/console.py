"""sslray's own lines on the console, everything else the process writes into a log file.

A sweep's driver process carries far more output than its user reads: Ray's and Tune's log lines, the
trials' stdout and stderr that Ray forwards to the driver, and the C++ core worker's messages, which
Python's ``logging`` never sees. ``quiet(LOG)`` points file descriptors 1 and 2 at ``LOG`` (so all of that
lands there, whoever writes it) and keeps duplicates of the original descriptors, which ``say`` writes
to. Outside ``quiet``, ``say`` is a plain ``print``.

Under a test harness that replaced ``sys.stdout`` / ``sys.stderr`` with objects of its own (pytest's
``capsys``), those objects are the console.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass
class Console:
    """Where ``say`` writes inside ``quiet``: the original stdout and stderr, and the log's path."""

    out: TextIO
    err: TextIO
    log: Path

    @property
    def tty(self) -> bool:
        """A terminal (a table can be redrawn in place), not a pipe, file or CI log."""
        return bool(getattr(self.out, "isatty", lambda: False)())


_active: list[Console] = []


def say(text: str = "", *, err: bool = False) -> None:
    """One line (or several) for the user: to the console, also inside ``quiet``."""
    if _active:
        stream = _active[-1].err if err else _active[-1].out
    else:
        stream = sys.stderr if err else sys.stdout
    print(text, file=stream, flush=True)


def console() -> Console | None:
    """The console of the innermost ``quiet``, if any."""
    return _active[-1] if _active else None


def _keep(stream: TextIO, fd: int) -> tuple[TextIO, bool]:
    """A stream that still reaches what ``stream`` reaches once descriptor ``fd`` points elsewhere, and
    whether it was opened here (and must be closed)."""
    try:
        if stream.fileno() != fd:
            return stream, False
    except (AttributeError, OSError, ValueError):  # a harness's in-memory stream
        return stream, False
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace"), True


@contextmanager
def quiet(log: Path) -> Iterator[Console]:
    """Inside: file descriptors 1 and 2 append to ``log``; ``say`` writes to the console. On exit (an
    exception too) the descriptors are restored, so a traceback or an error line reaches the user."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    out, own_out = _keep(sys.stdout, 1)
    err, own_err = _keep(sys.stderr, 2)
    saved = (os.dup(1), os.dup(2))
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _active.append(Console(out=out, err=err, log=log))
    try:
        yield _active[-1]
    finally:
        _active.pop()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)
        for stream, own in ((out, own_out), (err, own_err)):
            if own:
                stream.close()
