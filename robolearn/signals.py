"""Ctrl-C and `kill` (SIGINT/SIGTERM) as a clean stop: checkpoints, summaries and `finally` clauses run, and
the command exits 128 + signal number (130 for Ctrl-C, 143 for SIGTERM) so that no caller mistakes an
interrupted run for a finished one.

    with interruptible():                 # training loops: the signal raises Interrupted at once
        ...
    with interruptible(deferred=True):    # env loops: the signal only sets a flag ...
        stop_point()                      # ... and raises Interrupted here, between env steps

Contexts nest (DAgger records with deferred=True and retrains with an immediate context inside): a signal
that arrived in an outer context is not forgotten when an inner one exits, and an inner context entered after
a deferred stop was requested raises at once. The flag is process state by nature (signal handlers are
per process); it is cleared when the outermost context exits.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_STATE: dict = {"requested": None, "depth": 0}  # signum of a pending deferred stop; nesting depth


class Interrupted(KeyboardInterrupt):
    """A stop requested by SIGINT/SIGTERM; `signum` gives the exit code 128 + signum."""

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None):
        self.signum = int(signum)
        super().__init__(message or f"interrupted by {signal.Signals(self.signum).name}")


def exit_code(exc: BaseException | None = None, signum: int | None = None) -> int:
    """128 + the signal number of an interrupt (130 when unknown: a plain KeyboardInterrupt is Ctrl-C)."""
    s = signum if signum is not None else getattr(exc, "signum", signal.SIGINT)
    return 128 + int(s)


@contextmanager
def interruptible(deferred: bool = False):
    """Within the block SIGTERM and SIGINT end the work like Ctrl-C (raise `Interrupted`).

    deferred=False: the handler raises at once (torch code; checkpoint files are written atomically).
    deferred=True: the handler only records the signal and `stop_point()`, called between env steps, raises
    it - recording loops use this so the interrupt never lands inside h5py (a KeyboardInterrupt in an h5py
    finaliser can hang the interpreter's shutdown)."""

    def raising(signum, frame):
        _STATE["requested"] = signum
        raise Interrupted(signum)

    def flagging(signum, frame):
        _STATE["requested"] = signum

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGTERM, signal.SIGINT)
    if _STATE["depth"] == 0:
        _STATE["requested"] = None
    old = {s: signal.signal(s, flagging if deferred else raising) for s in sigs}
    _STATE["depth"] += 1
    try:
        if not deferred and _STATE["requested"] is not None:
            raise Interrupted(_STATE["requested"])  # a stop asked for in an outer, deferred context
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _STATE["depth"] -= 1
        if _STATE["depth"] == 0:
            _STATE["requested"] = None


def stop_point() -> None:
    """Raise `Interrupted` here if a deferred SIGINT/SIGTERM arrived (see `interruptible`)."""
    if _STATE["requested"] is not None:
        raise Interrupted(_STATE["requested"])
