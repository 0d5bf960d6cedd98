"""User mistakes, reported as one line and a non-zero exit instead of a traceback, and the one format of
that line for a config value."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any


class UserError(Exception):
    """Something the user can fix: the message is one line saying what is wrong and what to do."""


class ConfigError(UserError, ValueError):
    """A config value that is not allowed: the message names the key, the value and what is allowed."""


class DataError(UserError):
    """A data set that is missing or unreadable: the message names the file or folder and how to fix it."""


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded safely: corrupt, truncated, or holding code to run."""


class SweepFailed(UserError):
    """A sweep stopped because too many of its trials failed (`hydra.sweeper.max_failure_rate`)."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite: the run stops at once rather than train on garbage."""


# A file that cannot be written: no space, no quota, read-only, no permission.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOTDIR)
# What SQLite says (through MLflow, Optuna and SQLAlchemy) of a disk that is full or a store it cannot take.
STORE_ERRORS = ("database or disk is full", "database is locked", "disk I/O error", "readonly database")


def storage_error(err: BaseException) -> UserError | None:
    """The one line for a file or a store that cannot be written, or None for any other error."""
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        return UserError(
            f"cannot write {err.filename or 'a file'}: {err.strerror}; free space or set paths.root_dir to a "
            "writable folder (what was saved before is intact)"
        )
    text = str(err).strip()
    found = next((words for words in STORE_ERRORS if words in text), None)
    if found is None:
        return None
    return UserError(
        f"cannot write the store: {found}; free space, or wait for the process that holds it (what was "
        "saved before is intact)"
    )


def as_mistake(err: BaseException) -> UserError | Diverged | None:
    """What a command reports in one line: a user's mistake, a diverged run, a file or store that cannot
    be written; None for anything else (a bug: its traceback)."""
    return err if isinstance(err, UserError | Diverged) else storage_error(err)


def fail(key: str, value: Any, allowed: str) -> ConfigError:
    """The project's one error format: `key=value: must be <allowed>`."""
    return ConfigError(f"{key}={value!r}: must be {allowed}")


def check_choice(key: str, value: Any, choices: Mapping[str, Any] | tuple[str, ...]) -> None:
    """Raise unless `value` names one of `choices` (a registry or a tuple of names)."""
    if value not in choices:
        raise fail(key, value, "one of " + ", ".join(sorted(choices)))


class Stop(SystemExit):
    """A command that ends on purpose with one line: the CLI prints `error: <error>` and exits with `code`
    (trainlab.cli.fast_exit), the Python API raises `error` itself. A SystemExit, so that it passes
    through Hydra's own error reporting (which prints a traceback for any Exception) from its callbacks,
    sweepers and launchers alike."""

    def __init__(self, error: BaseException, code: int = 2) -> None:
        super().__init__(code)
        self.error = error
