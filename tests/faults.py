"""Fault injection at trainlab's write points (after SQLite's I/O-error tests, which make each I/O call
fail in turn): for the fault-injection harness (tests/test_faults.py), and for tests that stop a process
at a moment they choose instead of polling it and racing it on a loaded machine.

A write point is named `<kind>.<what>`: every MLflow client write (`mlflow.create_run`, `mlflow.log_batch`,
…), every Optuna storage write (`optuna.create_new_trial`, …), every file trainlab writes whole
(`file.<file name>`, trainlab.atomic), every Lightning checkpoint (`checkpoint.<file name>`) and every
MLflow spool line (`spool`). A `Fault` fires before the n-th write whose name starts with its `point`:
a signal sent to the process (SIGINT, SIGTERM, SIGKILL, SIGUSR2, …: what a user, a scheduler or the
kernel does; SIGSTOP holds it there until the test sends SIGCONT), or an exception raised in the write's
place (KeyboardInterrupt, ENOSPC: a full disk, locked: SQLite's "database is locked").

In a process of its own (the CLI), `$TRAINLAB_TEST_FAULT="<fault>@<point>#<n>"` with tests/fault_hook/
on PYTHONPATH installs it at start (`subprocess_env`).
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainlab.run.trial import STORAGE_WRITES

ENV = "TRAINLAB_TEST_FAULT"
HOOK = Path(__file__).resolve().parent / "fault_hook"

MLFLOW_WRITES = (
    "create_experiment",
    "set_experiment_tag",
    "restore_experiment",
    "create_run",
    "log_batch",
    "log_metric",
    "log_param",
    "set_tag",
    "delete_tag",
    "set_terminated",
    "update_run",
    "log_artifact",
    "log_artifacts",
    "log_text",
    "log_dict",
    "create_logged_model",
    "finalize_logged_model",
    "set_logged_model_tags",
    "create_registered_model",
    "create_model_version",
    "set_registered_model_tag",
)
OPTUNA_WRITES = STORAGE_WRITES  # the writes trainlab retries when the study's store is locked


@dataclass(frozen=True)
class Fault:
    """`kind` before the `n`-th write (1-based) whose name starts with `point` (and, given a `site`, that
    is made from that line of trainlab's code)."""

    kind: str
    point: str | tuple[str, ...] = ""  # a name's beginning, or one of several
    n: int = 1
    site: str | None = None
    each: bool = False  # fire at every such write point instead, the first time each is written

    @classmethod
    def parse(cls, text: str) -> Fault:
        kind, _, rest = text.partition("@")
        point, _, n = rest.partition("#")
        return cls(kind, point, int(n or 1))

    def __str__(self) -> str:
        return f"{self.kind}@{self.point}#{self.n}"

    def fire(self, point: str) -> None:
        if self.kind.startswith("SIG"):  # SIGSTOP holds the process still until the test sends SIGCONT
            os.kill(os.getpid(), getattr(signal, self.kind))
        elif self.kind == "KeyboardInterrupt":
            raise KeyboardInterrupt(f"injected at {point}")
        elif self.kind == "ENOSPC":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), point)
        elif self.kind == "locked":
            raise sqlite3.OperationalError("database is locked")
        else:
            raise ValueError(f"unknown fault {self.kind}")


@dataclass
class Injector:
    """Counts the writes of the main thread (`points`, in order, each with its `site`: the line of
    trainlab's code it comes from) and fires `fault` once, at its write. Writes of other threads (the
    sweeper's heartbeat) come at moments of the clock's choosing: they are neither counted nor hit."""

    fault: Fault | None = None
    points: list[tuple[str, str]] = field(default_factory=list)
    fired: str | None = None  # the (first) write it fired at
    hit: set[tuple[str, str]] = field(default_factory=set)  # with `each`: the points it fired at
    _matching: int = 0

    def arm(self, fault: Fault | None) -> Injector:
        """Count afresh, and fire `fault` (None: only count)."""
        self.fault, self.fired, self._matching = fault, None, 0
        self.points, self.hit = [], set()
        return self

    def before(self, point: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        site = _site()
        self.points.append((point, site))
        fault = self.fault
        if (
            fault is not None
            and fault.each
            and point.startswith(fault.point)
            and (point, site) not in self.hit
        ):
            self.hit.add((point, site))
            self.fired = self.fired or point
            fault.fire(point)
        if fault is None or fault.each or self.fired or not point.startswith(fault.point):
            return
        if fault.site is not None and site != fault.site:
            return
        self._matching += 1
        if self._matching == fault.n:
            self.fired = point
            fault.fire(point)

    def install(self, setattr_: Callable[[Any, str, Any], None] = setattr) -> Injector:
        """Wrap every write point (with `setattr_`: pytest's monkeypatch.setattr undoes it afterwards)."""
        import optuna
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
        from mlflow.tracking import MlflowClient

        import trainlab.atomic
        import trainlab.tracking.spool

        for owner, names, kind in (
            (MlflowClient, MLFLOW_WRITES, "mlflow"),
            (optuna.storages.RDBStorage, OPTUNA_WRITES, "optuna"),
        ):
            for name in names:
                if hasattr(owner, name):
                    point = f"{kind}.{name}"
                    setattr_(owner, name, self._wrap(getattr(owner, name), lambda *a, _p=point, **k: _p))
        setattr_(
            trainlab.atomic,
            "_write_beside",
            self._wrap(trainlab.atomic._write_beside, lambda path, *a, **k: f"file.{Path(path).name}"),
        )
        setattr_(
            trainlab.tracking.spool,
            "append_line",
            self._wrap(trainlab.tracking.spool.append_line, lambda *a, **k: "spool"),
        )
        setattr_(
            TorchCheckpointIO,
            "save_checkpoint",
            self._wrap(
                TorchCheckpointIO.save_checkpoint,
                lambda io, checkpoint, path, *a, **k: f"checkpoint.{Path(path).name}",
            ),
        )
        return self

    def _wrap(self, function: Callable, name_of: Callable[..., str]) -> Callable:
        @functools.wraps(function)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.before(name_of(*args, **kwargs))
            return function(*args, **kwargs)

        return wrapped


SRC = Path(__file__).resolve().parent.parent / "src"
# The write points themselves, and the retries around some: a site is the line of trainlab's code that
# asked for the write.
_CHOKE_POINTS = (str(SRC / "trainlab" / "atomic.py"), str(SRC / "trainlab" / "tracking" / "spool.py"))
_RETRIES = ("retrying",)


def _site(depth: int = 2) -> str:
    """The `file:line`s of the `depth` innermost frames in trainlab's own code (src/) that led to this
    write, innermost first: a helper's write (a tracker's) is told apart by who called it."""
    frame, found = sys._getframe(2), []
    while frame is not None and len(found) < depth:
        name = frame.f_code.co_filename
        if name.startswith(str(SRC)) and name not in _CHOKE_POINTS and frame.f_code.co_name not in _RETRIES:
            found.append(f"{Path(name).relative_to(SRC)}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(found) or "?"


def subprocess_env(fault: Fault | str, **extra: str) -> dict[str, str]:
    """The environment of a CLI process that injects `fault` (with the tests' own code importable)."""
    from conftest import REPO, cli_env

    path = os.pathsep.join([str(HOOK), str(REPO / "tests")])
    return cli_env(**{ENV: str(fault), "PYTHONPATH": path, **extra})
