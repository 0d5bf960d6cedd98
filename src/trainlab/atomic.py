"""Files a killed run must not leave half-written (checkpoints, the MLflow spool, resume records)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes | memoryview | str) -> None:
    """Write beside `path`, then rename over it: a process killed mid-write leaves the previous file
    whole (as Lightning's own checkpoints are written), never a truncated one."""
    partial = path.with_name(path.name + ".partial")
    if isinstance(data, str):
        partial.write_text(data)
    else:
        partial.write_bytes(data)
    os.replace(partial, path)
