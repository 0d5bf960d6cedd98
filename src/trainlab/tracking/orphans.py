"""Runs whose process is gone are not left RUNNING: a run killed with `kill -9`, by the out-of-memory
killer or with its machine would otherwise show RUNNING in MLflow for ever.

Each run records its owner (host, process id and the process's start time, so that a reused process id
is not mistaken for it) and, while open, a heartbeat. The next trainlab command on the store (a run, a
sweep, a report, an evaluation, the Python API's results) marks KILLED, with the reason as
`failure_reason`, every RUNNING run whose process is gone: on this machine, its process is not there;
on another, its heartbeat is older than GRACE_S.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OWNER_TAG = "trainlab.owner"  # host:pid:start
HEARTBEAT_TAG = "trainlab.heartbeat"  # Unix time of the owner's latest beat
HEARTBEAT_S = 60.0
GRACE_S = 600.0  # ten missed beats: a busy store or a paused job is not taken for a lost one


def _stat(pid: int) -> list[str] | None:
    """/proc's stat fields of process `pid` after its name (state first, start time at [19]); None where
    it or /proc is missing."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> str:
    """When process `pid` started (clock ticks after boot, /proc's field 22); "" where /proc is missing."""
    fields = _stat(pid)
    return fields[19] if fields else ""


def owner() -> str:
    """This process, as OWNER_TAG records it."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def is_alive(owner_tag: str, heartbeat: float, now: float) -> bool:
    """Whether the process that `owner_tag` names may still be running its run."""
    host, pid, start = owner_tag.rsplit(":", 2)
    if host != socket.gethostname():
        return now - heartbeat <= GRACE_S
    return process_running(int(pid), start)


def process_running(pid: int, start: str = "") -> bool:
    """Whether process `pid` of this machine runs (and, given its `start`, is still the one that started
    then: a process id is reused). A zombie (ended, not yet waited for by its parent) does not."""
    if Path("/proc").is_dir():
        fields = _stat(pid)
        return fields is not None and fields[0] != "Z" and (not start or fields[19] == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def reap(client: Any) -> list[str]:
    """Mark KILLED the store's RUNNING runs whose owner is gone; their ids."""
    now = time.time()
    experiments = [e.experiment_id for e in client.search_experiments()]
    reaped = []
    for start in range(0, len(experiments), 100):
        for run in client.search_runs(experiments[start : start + 100], "attributes.status = 'RUNNING'"):
            tag = run.data.tags.get(OWNER_TAG)
            heartbeat = float(run.data.tags.get(HEARTBEAT_TAG) or run.info.start_time / 1000)
            if tag is None or is_alive(tag, heartbeat, now):
                continue
            host, pid, _ = tag.rsplit(":", 2)
            reason = (
                f"its process ({host}, pid {pid}) ended without ending the run (killed, out of memory, or "
                "its machine lost); marked KILLED by the next trainlab command on the store"
            )
            client.set_tag(run.info.run_id, "failure_reason", reason)
            client.set_terminated(run.info.run_id, "KILLED")
            reaped.append(run.info.run_id)
    if reaped:
        log.warning(
            "Marked %d MLflow run(s) KILLED whose process is gone: %s", len(reaped), ", ".join(reaped)
        )
    return reaped


class Heartbeats:
    """One daemon thread per process that beats every open run (HEARTBEAT_TAG) every HEARTBEAT_S; a
    beat that fails is skipped (the next one may pass)."""

    def __init__(self) -> None:
        self.runs: dict[str, Any] = {}  # run id → the client to beat it with
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, client: Any, run_id: str) -> None:
        with self.lock:
            self.runs[run_id] = client
            if self.thread is None:
                self.thread = threading.Thread(target=self._beat, daemon=True, name="trainlab-heartbeat")
                self.thread.start()

    def remove(self, run_id: str) -> None:
        with self.lock:
            self.runs.pop(run_id, None)

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self.lock:
                runs = list(self.runs.items())
            for run_id, client in runs:
                try:
                    client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
                except Exception as err:  # an unreachable server, a busy store: the owner is alive anyway
                    log.debug("heartbeat of %s skipped: %s", run_id, err)


HEARTBEATS = Heartbeats()


def reap_orphans(tracking_uri: str) -> None:
    """Before a command reads or writes the store (a server: after it answered): send what ended runs kept
    in the store's spool folder, then mark the runs whose process is gone KILLED. Each time (one query):
    a notebook's kernel lives longer than the runs killed while it runs."""
    from trainlab.tracking.spool import send_store_spools
    from trainlab.tracking.store import open_store

    try:
        send_store_spools(tracking_uri)
        reap(open_store(tracking_uri))
    except Exception as err:  # a store that fails now fails the command's own next call, in one line
        log.debug("orphaned runs not checked: %s", err)


def store_without_orphans(tracking_uri: str) -> Any:
    """The store's client, once its runs whose process is gone are marked: what a command that shows runs
    (a report, an evaluation, the Python API's results) reads."""
    from trainlab.tracking.store import open_store

    client = open_store(tracking_uri)
    reap_orphans(tracking_uri)
    return client
