"""Ctrl-C and SIGTERM as a request, never an exception in the middle of a write.

The first SIGINT or SIGTERM is only recorded. The work stops at its next safe point (`check`): the end of
a training batch (where `last.ckpt` is written first: trainlab.run.interrupts), between the runs of a
group, between a sweep's trials, between test batches. So an MLflow or Optuna write, a checkpoint or a
record is never torn by the signal, and the run ends KILLED with its reason. A second signal exits at once
(status 128 + signal), except inside a `critical` write (an MLflow spool line), which it lets finish
first; in a notebook's kernel (`kernel_safe`) it never ends the process.

Python delivers signals to the main thread only: elsewhere `cooperative` installs nothing, and `check`
still sees a signal that the main thread recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised at a safe point after Ctrl-C or SIGTERM. Not an Exception, so that no `except Exception`
    swallows it, and not a KeyboardInterrupt, which Lightning turns into `sys.exit(1)` and a SIGINT it
    ignores from then on. `resume` says how to go on; the CLI prints it, the Python API raises
    KeyboardInterrupt with it."""

    def __init__(self, signum: int, resume: str = "") -> None:
        super().__init__(signum, resume)
        self.signum = signum
        self.resume = resume

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {self.name}" + (f": {self.resume}" if self.resume else "")


class _State:
    received: int | None = None  # the first stop signal, until the outermost `cooperative` ends
    installed: int = 0  # nesting depth of `cooperative`
    critical: int = 0  # nesting depth of `critical`
    exit_pending: int | None = None  # a second signal that arrived inside a critical write
    second_signal_exits: bool = True  # False inside `kernel_safe`


_state = _State()


def received() -> int | None:
    """The stop signal received, if any."""
    return _state.received


def reason() -> str:
    """The failure_reason of a run stopped by it."""
    name = signal.Signals(_state.received).name if _state.received else "an interrupt"
    return f"interrupted ({name})"


def request(signum: int = signal.SIGINT) -> bool:
    """Record a stop as a signal would, inside `cooperative` (whether it was): for a KeyboardInterrupt
    caught where it must not escape (a run's end is written first); the next safe point raises
    `Interrupted`."""
    if _state.installed and _state.received is None:
        _state.received = signum
    return bool(_state.installed)


def check(resume: str = "") -> None:
    """A safe point: raise `Interrupted` if a stop signal was received."""
    if _state.received is not None:
        raise Interrupted(_state.received, resume)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state.received is None:
        _state.received = signum
        log.warning(
            "%s: stopping at the next batch, with everything saved (%s again stops at once)",
            signal.Signals(signum).name,
            "Ctrl-C" if signum == signal.SIGINT else "SIGTERM",
        )
        return
    if not _state.second_signal_exits:
        return
    if _state.critical:
        _state.exit_pending = signum
        return
    os._exit(128 + signum)


@contextmanager
def cooperative() -> Iterator[None]:
    """Stop signals are recorded, not raised, inside (nested uses share one record); the previous handlers
    come back afterwards."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        _state.installed += 1
        try:
            yield
        finally:
            _state.installed -= 1
        return
    previous = {sig: signal.signal(sig, _on_signal) for sig in SIGNALS}
    _state.installed += 1
    try:
        yield
    finally:
        _state.installed -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.received = None


def take_over() -> None:
    """Handle the stop signals again inside `cooperative`, after a library put in handlers of its own:
    Lightning's SIGTERM handler stops a run at moments of its choosing, unsaved, and exits with status 0."""
    if _state.installed and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _on_signal)


@contextmanager
def critical() -> Iterator[None]:
    """A write that a second signal must not tear: it waits for the write to end, then exits."""
    _state.critical += 1
    try:
        yield
    finally:
        _state.critical -= 1
        if not _state.critical and _state.exit_pending is not None:
            os._exit(128 + _state.exit_pending)


@contextmanager
def kernel_safe() -> Iterator[None]:
    """Inside, no signal ends the process: it must outlive its runs (a Jupyter kernel, trainlab.api)."""
    before, _state.second_signal_exits = _state.second_signal_exits, False
    try:
        yield
    finally:
        _state.second_signal_exits = before
