"""Files a killed run must not leave half-written (checkpoints, records, tables, the MLflow spool)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

# The names of files being written: a reader (or a check for torn files) skips them.
PARTIAL = ".partial"


def write_atomically(path: Path, data: bytes | memoryview | str) -> None:
    """Write beside `path` under a name of its own, flush it to the disk, then rename it over `path`: a
    process killed mid-write, a full disk or a power cut leaves the previous file whole (as Lightning's own
    checkpoints are written), never a truncated one; two writers never share the half-written file."""
    path = Path(path)
    partial = _write_beside(path, data.encode() if isinstance(data, str) else data)
    try:
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    _sync_folder(path.parent)


def _write_beside(path: Path, payload: bytes | memoryview) -> str:
    """`payload` in a new file beside `path`, on the disk; its name."""
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL, dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from a shared group
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return partial


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX: a folder's entries are flushed with the folder)."""
    with contextlib.suppress(OSError):  # a file system that cannot open folders (Windows) keeps it anyway
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask can only set it, racing other threads)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    return 0o022


def write_figure(figure: Any, path: Path, **savefig: Any) -> Path:
    """A matplotlib figure saved whole: drawn into memory, then `write_atomically` (a report killed while
    saving leaves the previous figure, not a truncated image)."""
    drawn = io.BytesIO()
    figure.savefig(drawn, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    write_atomically(Path(path), drawn.getbuffer())
    return Path(path)
