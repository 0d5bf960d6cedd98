"""One MLflow client per store and process, opened the one way: its tables created one process at a
time (trainlab.tracking.creation_lock), a SQLite file set up for several writers."""

from __future__ import annotations

import functools
from typing import Any

from trainlab.tracking.creation_lock import creation_lock


def is_remote(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


@functools.cache
def open_store(tracking_uri: str) -> Any:
    """The store's MlflowClient. Opening one costs ~0.2 s (the store's engine and schema check), which a
    population job would otherwise pay once per member. A server is not contacted here (a run probes it
    first, to fail in seconds)."""
    from mlflow.tracking import MlflowClient

    with creation_lock(tracking_uri):  # opening a database store creates (migrates) its tables
        client = MlflowClient(tracking_uri)
        if not is_remote(tracking_uri):
            client.search_experiments(max_results=1)  # MLflow opens a store lazily: open it here
    return client
