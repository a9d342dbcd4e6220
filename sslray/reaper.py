"""Stop a local Ray's processes when the process that started it dies without shutting it down.

``ray.init()`` starts a local Ray as children of the driver; when the driver is killed (SIGKILL, the OOM
killer), the GCS and raylet follow within seconds, but Ray's dashboard and runtime-env agents keep running
for a minute or more (measured: 60-90 s with Ray 2.60), holding ports and memory. ``watch`` starts this
module as a separate process: it notes the driver's Ray descendants every second and, once the driver is
gone, sends SIGTERM and then SIGKILL to those still alive. Linux only (it reads ``/proc``); it never
touches a process that was not a Ray descendant of the driver (each PID is checked with its start time,
so a reused PID is left alone).

Usage (what ``sslray.cluster.init_ray`` does): ``watch(os.getpid())``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0
GRACE_S = 3.0  # after the driver dies: Ray's own processes first get to exit by themselves
TERM_WAIT_S = 5.0  # between SIGTERM and SIGKILL
_watched: dict[int, subprocess.Popen] = {}  # one reaper per driver, kept referenced (it outlives the driver)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent PID, start time in clock ticks) of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[19])


def _is_ray(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return command.startswith((b"ray::", b"ray-dashboard")) or b"/ray/" in command


def _ray_descendants(root: int) -> dict[int, int]:
    """PID -> start time of every Ray process below ``root``."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[1], []).append(int(entry))
            started[int(entry)] = stat[2]
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid in started and _is_ray(pid):
            found[pid] = started[pid]
    return found


def _alive(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[0] != "Z"


def reap(driver: int) -> None:
    """Watch ``driver``; when it is gone, stop the Ray processes it had started."""
    first = _stat(driver)
    if first is None:
        return
    known: dict[int, int] = {}
    while _alive(driver, first[2]):
        known.update(_ray_descendants(driver))
        time.sleep(POLL_S)
    time.sleep(GRACE_S)
    for sig, wait in ((signal.SIGTERM, TERM_WAIT_S), (signal.SIGKILL, 0.0)):
        left = {pid: start for pid, start in known.items() if _alive(pid, start)}
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline and any(_alive(p, s) for p, s in left.items()):
            time.sleep(0.2)


def watch(driver: int) -> None:
    """Start the reaper for ``driver`` in a process of its own (its own session: a Ctrl-C on the terminal
    does not stop it before the driver). A no-op off Linux."""
    if not sys.platform.startswith("linux") or driver in _watched:
        return
    _watched[driver] = subprocess.Popen(
        [sys.executable, "-m", "sslray.reaper", str(driver)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


if __name__ == "__main__":
    reap(int(sys.argv[1]))
