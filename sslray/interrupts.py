"""Ctrl-C and SIGTERM on ``sslray train`` and ``sslray sweep``: stop, say what was kept and the exact
command that continues, exit 130.

Ray has its own SIGINT handlers, and neither said anything useful: Ray Train's ``fit`` aborts the run and
the process exits 1 with no message and no result.json; Ray Tune stops gracefully (saving the experiment
state) but then returns as if the sweep had ended, so interrupted trials were labelled "stopped early"
and the command exited 0. Neither handles SIGTERM (what ``kill``, a batch scheduler or ``ray job stop``
sends). So:

- a sweep keeps Tune's graceful stop, reached through SIGUSR1 (Tune's other stop signal, registered for
  every ``Tuner.fit``): ``tune_stops_on_signals`` takes SIGINT and SIGTERM, records that the sweep was
  interrupted and forwards the stop, so the leaderboard labels unfinished trials "interrupted";
- a run trains in a helper thread (``run_until_interrupted``): Ray Train registers its handler only from
  the main thread, so the signal reaches sslray's main thread as ``KeyboardInterrupt``, and the caller
  shuts Ray down. Checkpoints are written atomically at each epoch's end, so the last one is whole.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sslray.console import say

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_sweep_stopping = threading.Event()  # set while a sweep winds down after a signal


def stop_requested() -> bool:
    """A signal asked the running sweep to stop: trials that end now were cut by it, not by a scheduler."""
    return _sweep_stopping.is_set()


class Interrupted(Exception):
    """The command was stopped by Ctrl-C or SIGTERM; the message says what was kept and how to continue."""


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_until_interrupted(work: Callable[[], T]) -> T:
    """``work()`` in a helper thread; Ctrl-C or SIGTERM in the meantime raises KeyboardInterrupt here,
    in the main thread (``work`` is left to the caller to stop, e.g. by ``ray.shutdown()``)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        return work()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread below
            outcome["error"] = err

    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        thread = threading.Thread(target=target, name="sslray-work", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@contextmanager
def tune_stops_on_signals() -> Iterator[threading.Event]:
    """Inside: the first SIGINT/SIGTERM sets the yielded event and asks Ray Tune to stop gracefully
    (SIGUSR1, once ``Tuner.fit`` has registered it; before that, KeyboardInterrupt); a second one stops
    at once (KeyboardInterrupt)."""
    stopped = _sweep_stopping
    stopped.clear()
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield stopped
        return

    def handler(signum, frame) -> None:
        if stopped.is_set() or signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt
        stopped.set()
        say(
            f"sslray: {signal.Signals(signum).name}: stopping the sweep; running trials keep their last "
            "checkpoint (Ctrl-C again to stop at once)",
            err=True,
        )
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # sslray's handler, not Tune's, takes SIGINT
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield stopped
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = env
