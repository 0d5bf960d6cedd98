"""Ctrl-C and SIGTERM stop a run cleanly: `last.ckpt` is written where training stopped, the MLflow run
is marked KILLED, and the exit status is non-zero. A second signal exits at once (but in a notebook's
kernel, `kernel_safe`).

Lightning turns the first KeyboardInterrupt into a graceful shutdown and then ignores further Ctrl-C;
here a second signal always means "now".
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from lightning.pytorch.callbacks import Callback

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Which stop signal arrived first, if any (the tracker marks such a run KILLED, not FAILED)."""

    def __init__(self) -> None:
        self.received: int | None = None


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)


# False inside `kernel_safe()`: a process that must outlive its runs (a Jupyter kernel) is never ended by a
# second signal; it waits for the checkpoint to be written instead.
_second_signal_exits = True


@contextmanager
def kernel_safe() -> Iterator[None]:
    """Runs started inside leave the process alive whatever signals arrive (trainlab.api)."""
    global _second_signal_exits
    before, _second_signal_exits = _second_signal_exits, False
    try:
        yield
    finally:
        _second_signal_exits = before


def exit_on_next_signal() -> None:
    if _second_signal_exits and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _exit_at_once)


@contextmanager
def graceful_interrupts() -> Iterator[Interrupts]:
    """Turn the first SIGINT or SIGTERM into KeyboardInterrupt (Lightning's graceful shutdown), any later
    one into an immediate exit; restore the previous handlers afterwards."""
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield interrupts
        return

    def first(signum: int, frame: FrameType | None) -> None:
        interrupts.received = signum
        exit_on_next_signal()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, first) for sig in SIGNALS}
    try:
        yield interrupts
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class CheckpointOnInterrupt(Callback):
    """On Ctrl-C/SIGTERM, save the state where training stopped as `last.ckpt` (resume: `ckpt_path=last`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            exit_on_next_signal()  # Lightning has just set SIGINT to "ignore" for its shutdown
            trainer.save_checkpoint(self.path)
