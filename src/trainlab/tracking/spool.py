"""Keep MLflow writes that could not be sent, and send them later: training never waits on, or dies of,
a tracking server that went away.

`ResilientClient` wraps an `MlflowClient`. For a server (http/https), a write that fails is appended to
a JSON-lines spool file in the run's folder, and every later write first tries to send the spool. What
is still spooled when the run ends stays on disk:

    # send it when the server is back:
    python -m trainlab.tracking.spool outputs/<date>/<time>/mlflow_spool.jsonl

For a local SQLite store, a write that meets "database is locked" (several processes logging at once)
is retried with back-off instead.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.tracking.store import open_store

log = logging.getLogger(__name__)

# The client methods that write to a run: kept in the spool while a server is away, retried while a
# SQLite store is locked. Anything else (reads) passes straight through.
WRITES = (
    "log_batch",
    "log_metric",
    "set_tag",
    "delete_tag",
    "set_terminated",
    "update_run",
    "log_artifact",
    "log_text",
)
# Writes that answer with something the caller needs (an id): retried while a SQLite store is locked, but
# never spooled (a run cannot start without its id; the server was probed before).
CREATES = ("create_run", "create_experiment", "set_experiment_tag", "restore_experiment")
_ENTITIES = ("metrics", "params", "tags")


def _encode(method: str, args: tuple, kwargs: dict[str, Any]) -> str:
    """One spool line; MLflow's Metric/Param/RunTag entities become plain lists."""
    kwargs = dict(kwargs)
    for name in _ENTITIES:
        if name in kwargs:
            kwargs[name] = [
                [e.key, e.value, *((e.timestamp, e.step) if name == "metrics" else ())] for e in kwargs[name]
            ]
    return json.dumps({"method": method, "args": list(args), "kwargs": kwargs})


def _decode(line: str) -> tuple[str, list, dict[str, Any]]:
    from mlflow.entities import Metric, Param, RunTag

    record = json.loads(line)
    kwargs = record["kwargs"]
    for name, entity in zip(_ENTITIES, (Metric, Param, RunTag), strict=True):
        if name in kwargs:
            kwargs[name] = [entity(*fields) for fields in kwargs[name]]
    return record["method"], record["args"], kwargs


def _is_locked(err: Exception) -> bool:
    return "database is locked" in str(err) or "database table is locked" in str(err)


class ResilientClient:
    """An MlflowClient whose writes survive an unreachable server (spooled) or a busy SQLite file
    (retried)."""

    # Each attempt on a SQLite store already waits up to MLflow's 20 s busy timeout for the lock.
    def __init__(self, tracking_uri: str, spool_path: Path | None = None, attempts: int = 6) -> None:
        self.client = open_store(tracking_uri)
        self.tracking_uri = tracking_uri
        self.remote = tracking_uri.startswith(("http://", "https://"))
        self.spool_path = spool_path
        self.attempts = attempts
        self._warned = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if name in CREATES and not self.remote:
            return lambda *args, **kwargs: self._with_retries(attribute, args, kwargs)
        if name not in WRITES:
            return attribute
        return lambda *args, **kwargs: self._write(name, attribute, args, kwargs)

    def _write(self, name: str, method: Callable, args: tuple, kwargs: dict[str, Any]) -> Any:
        if not self.remote:
            return self._with_retries(method, args, kwargs)
        if self.spool_path is None:
            return method(*args, **kwargs)
        if self.pending() and not self.flush():
            self._spool(name, args, kwargs)
            return None
        try:
            return method(*args, **kwargs)
        except Exception as err:
            self._spool(name, args, kwargs, err)
            return None

    def _with_retries(self, method: Callable, args: tuple, kwargs: dict[str, Any]) -> Any:
        for attempt in range(self.attempts):
            try:
                return method(*args, **kwargs)
            except Exception as err:
                if not _is_locked(err) or attempt == self.attempts - 1:
                    raise
                time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _spool(self, name: str, args: tuple, kwargs: dict[str, Any], err: Exception | None = None) -> None:
        if not self._warned:
            log.warning(
                "MLflow server unreachable (%s): training goes on; its MLflow writes are kept in %s "
                "and sent when the server answers again (or: python -m trainlab.tracking.spool %s)",
                str(err).splitlines()[0][:200] if err else "earlier writes still pending",
                self.spool_path,
                self.spool_path,
            )
            self._warned = True
        append_line(self.spool_path, _encode(name, args, kwargs))

    def keep(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Spool the write `name(*args, **kwargs)` whatever the store: what `flush` sends later."""
        append_line(self.spool_path, _encode(name, args, kwargs))

    def reconnect(self) -> None:
        """Drop the store's pooled database connections: the next write opens a fresh one (one left
        holding a lock by an interrupted write would otherwise keep failing)."""
        engine = getattr(getattr(self.client._tracking_client, "store", None), "engine", None)
        if engine is not None:
            engine.dispose()

    def pending(self) -> int:
        """How many writes wait in the spool."""
        return len(spooled(self.spool_path)) if self.spool_path is not None else 0

    def flush(self) -> bool:
        """Send the spooled writes in order; keep whatever still fails. True when nothing is left."""
        if self.spool_path is None or not self.spool_path.exists():
            return True
        lines = spooled(self.spool_path)
        for sent, line in enumerate(lines):
            method, args, kwargs = _decode(line)
            try:
                getattr(self.client, method)(*args, **kwargs)
            except Exception:
                write_atomically(self.spool_path, "".join(f"{rest}\n" for rest in lines[sent:]))
                return False
        self.spool_path.unlink()
        if lines:
            log.info("Sent %d spooled MLflow writes", len(lines))
        return True


def store_spool_folder(tracking_uri: str) -> Path | None:
    """Where runs on a SQLite store keep the writes that ending them could not make
    (`<folder>/<run id>.jsonl`): beside the database, where the next trainlab command on the store finds
    and sends them (trainlab.tracking.orphans). None for a server: its runs spool in their own folder."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).parent / "spool"


def send_store_spools(tracking_uri: str) -> None:
    """Send what ended runs kept in the store's spool folder."""
    folder = store_spool_folder(tracking_uri)
    for path in sorted(folder.glob("*.jsonl")) if folder is not None else []:
        ResilientClient(tracking_uri, path).flush()


def append_line(path: Path, line: str) -> None:
    """Append one line to a spool; a torn last line (a kill or a full disk mid-append) is ended first, so
    that it stays the one line lost. A second Ctrl-C waits for the append (trainlab.interrupts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with interrupts.critical(), open(path, "ab+") as file:
        file.seek(0, os.SEEK_END)
        if file.tell():
            file.seek(-1, os.SEEK_END)
            ended = file.read(1) == b"\n"
            file.seek(0, os.SEEK_END)
            if not ended:
                file.write(b"\n")
        file.write(line.encode() + b"\n")


def spooled(path: Path) -> list[str]:
    """The writes kept in a spool file; a line that is not whole JSON (torn mid-append) is left out with a
    warning: the write it held never completed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines, torn = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            torn += 1
            continue
        lines.append(line)
    if torn:
        log.warning("%s: %d torn line(s) left out (writes that never completed)", path, torn)
    return lines


def main(argv: list[str]) -> int:
    """`python -m trainlab.tracking.spool SPOOL_FILE [TRACKING_URI]`: send what a run kept while MLflow
    was away."""
    import os

    if not argv or not Path(argv[0]).is_file():
        print(
            "usage: python -m trainlab.tracking.spool SPOOL_FILE [TRACKING_URI]"
            "  (default: $MLFLOW_TRACKING_URI)"
        )
        return 2
    spool = Path(argv[0])
    uri = (
        argv[1]
        if len(argv) > 1
        else os.environ.get("MLFLOW_TRACKING_URI")
        or json.loads((spool.parent / "run.json").read_text()).get("tracking_uri")
    )
    client = ResilientClient(uri, spool)
    waiting = client.pending()
    if client.flush():
        print(f"sent {waiting} MLflow writes to {uri}")
        return 0
    print(f"error: {uri} still unreachable; {client.pending()} writes kept in {spool}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
