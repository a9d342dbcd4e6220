"""A line on the run's output while it stands still because no live node carries its data labels.

Ray Data's tasks pinned by ``data.label_selector`` to a node that is lost stay pending until a node with
those labels joins (docs/ray.md §17): the run waits, silently. ``DataWait`` watches rank 0's batch loop
from a daemon thread. Once no batch has arrived for ``QUIET_S`` seconds it asks the GCS (``ray.nodes()``)
whether an alive node carries the labels; when none does it prints one line, and one more once batches
flow again with such a node back. It only reports: Ray keeps the tasks and runs them when a node joins.

Rank 0 alone watches: the labels are the same for every rank, so one line per run is what the user
needs, and rank 0 stalls with the others, because DDP's steps all-reduce in lockstep (a rank whose data
is late holds rank 0 in its next all-reduce, which is why the trigger is "no batch for a while", not
"inside ``next(batches)``"). A healthy run costs a float comparison every ``EVERY_S`` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sslray.cluster import alive_nodes_with_labels

QUIET_S = 10.0  # no batch for this long: ask the GCS (a slow step or a pipeline's start-up is shorter)
EVERY_S = 5.0  # how often the thread looks; also the "back after N s" line's precision


class DataWait:
    """Rank 0's watcher of one run (its state spans epochs: an outage is reported once, whatever the
    epoch in which batches come back). Inactive (no thread) for other ranks, for runs without
    ``data.label_selector`` and for selectors with Ray's operators (``alive_nodes_with_labels``)."""

    def __init__(self, label_selector: dict[str, str] | None, quiet_s: float = QUIET_S, every_s: float = EVERY_S):
        self.labels = dict(label_selector or {})
        self.active = bool(self.labels) and alive_nodes_with_labels([], self.labels) is not None
        self.quiet_s, self.every_s = quiet_s, every_s
        self._last_batch = time.monotonic()  # written by the loop, read by the thread (a float: atomic)
        self._batches = 0
        self._stalled_since: float | None = None  # the reported outage's last batch before it
        self._batches_then = 0

    def batch(self) -> None:
        """A batch arrived (the epoch loop calls this for each one)."""
        self._last_batch = time.monotonic()
        self._batches += 1

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Around an epoch's batch loop: a thread that looks every ``every_s`` seconds while it runs."""
        if not self.active:
            yield
            return
        self._last_batch = time.monotonic()  # an epoch's pipeline start is not a stall of the one before
        stop = threading.Event()
        thread = threading.Thread(target=self._watch, args=(stop,), name="sslray-data-wait", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            # The loop ended: batches came. A short epoch can end before the thread's next look, so the
            # line that the data is back would wait for a later stall.
            self._look()

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.every_s):
            self._look()

    def _look(self) -> None:
        import ray

        try:
            self.check(time.monotonic(), ray.nodes)
        except Exception:  # noqa: BLE001 - e.g. the GCS out of reach for a moment: the run's own calls say so
            pass

    def check(self, now: float, nodes: Callable[[], list[dict]]) -> str | None:
        """Print (and return) a line when the run has stalled with no live node carrying the labels, or
        when, after such a line, batches come again and such a node is alive. ``nodes`` (``ray.nodes``)
        is called only during a stall or a reported outage."""
        if self._stalled_since is None:
            if now - self._last_batch < self.quiet_s or alive_nodes_with_labels(nodes(), self.labels):
                return None
            self._stalled_since, self._batches_then = self._last_batch, self._batches
            line = (
                f"waiting for data: no live node has the labels {self.labels} (data.label_selector); "
                "the run goes on when one joins"
            )
        else:
            # Batches alone are no sign: some may have been computed before the node was lost.
            if self._batches == self._batches_then or not alive_nodes_with_labels(nodes(), self.labels):
                return None
            line = f"data: a node with {self.labels} is back after {now - self._stalled_since:.0f} s"
            self._stalled_since = None
        # Not print(): Ray Train patches it in its workers into a logger call that can also tee to stdout,
        # and the line came twice. stdout is what the worker loop writes its own lines to.
        sys.stdout.write(line + "\n")
        sys.stdout.flush()  # at once, not when the stalled loop next writes
        return line
