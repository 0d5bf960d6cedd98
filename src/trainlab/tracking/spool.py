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

import functools
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainlab.atomic import write_atomically

log = logging.getLogger(__name__)

# The client methods that write; anything else (reads) passes straight through.
WRITES = ("log_batch", "set_tag", "delete_tag", "set_terminated", "update_run", "log_artifact", "log_text")
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


@functools.cache
def _mlflow_client(tracking_uri: str) -> Any:
    """One MlflowClient per store and process: opening one costs ~0.2 s (the store's engine and schema
    check), which a population job would pay once per member."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


class ResilientClient:
    """An MlflowClient whose writes survive an unreachable server (spooled) or a busy SQLite file
    (retried)."""

    def __init__(self, tracking_uri: str, spool_path: Path | None = None, attempts: int = 30) -> None:
        self.client = _mlflow_client(tracking_uri)
        self.remote = tracking_uri.startswith(("http://", "https://"))
        self.spool_path = spool_path
        self.attempts = attempts
        self._warned = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
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
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool_path, "a") as f:
            f.write(_encode(name, args, kwargs) + "\n")

    def pending(self) -> int:
        """How many writes wait in the spool."""
        if self.spool_path is None or not self.spool_path.exists():
            return 0
        return sum(1 for line in self.spool_path.read_text().splitlines() if line.strip())

    def flush(self) -> bool:
        """Send the spooled writes in order; keep whatever still fails. True when nothing is left."""
        if not self.pending():
            return True
        lines = [line for line in self.spool_path.read_text().splitlines() if line.strip()]
        for sent, line in enumerate(lines):
            method, args, kwargs = _decode(line)
            try:
                getattr(self.client, method)(*args, **kwargs)
            except Exception:
                write_atomically(self.spool_path, "".join(f"{rest}\n" for rest in lines[sent:]))
                return False
        self.spool_path.unlink()
        log.info("Sent %d spooled MLflow writes", len(lines))
        return True


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
