"""Metric points held back and sent together, at most every few seconds: a population's members log at
every epoch's end, and an epoch of 300 images is 3 steps, so 25 members × 333 epochs made 8,325 MLflow
calls (~4 ms each: a quarter of the overfitting exercise's time). Sent when `FLUSH_EVERY_S` have passed,
at the end of fit, when the run stops on an error or a signal, and when a member's run ends.

What is not sent yet is part of the callback's checkpoint state (`state_dict`): a run resumed from its
last checkpoint after a kill -9 sends the points that checkpoint held, so the curves have no gap (a
kill in the instant between a send and the checkpoint that follows it may send a point twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from trainlab.tracking.tracker import log_points

FLUSH_EVERY_S = 5.0

Point = tuple[str, float, int]  # (metric, value, step)


class Pending:
    """Points by key (a population member's index, or None for the run's own logger)."""

    def __init__(self, every_s: float = FLUSH_EVERY_S) -> None:
        self.every_s = every_s
        self.points: dict[int | None, list[Point]] = {}
        self._sent = time.monotonic()

    def add(self, key: int | None, points: list[Point]) -> None:
        self.points.setdefault(key, []).extend(points)

    def flush(self, logger_of: Callable[[int | None], Any], force: bool = False, key: Any = ...) -> None:
        """Send what is held (only `key`'s, if given) once `every_s` have passed, or now with `force`."""
        if not force and time.monotonic() - self._sent < self.every_s:
            return
        keys = list(self.points) if key is ... else [key]
        for each in keys:
            log_points(logger_of(each), self.points.pop(each, []))
        if key is ...:
            self._sent = time.monotonic()

    def state_dict(self) -> dict[str, Any]:
        return {"points": {("self" if k is None else k): list(v) for k, v in self.points.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("points", {})
        self.points = {(None if k == "self" else k): [tuple(p) for p in v] for k, v in saved.items()}
