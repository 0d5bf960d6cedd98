"""User mistakes, reported as one line and a non-zero exit instead of a traceback, and the one format of
that line for a config value."""

from __future__ import annotations

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


class Diverged(RuntimeError):
    """The training loss became NaN or infinite: the run stops at once rather than train on garbage."""


def fail(key: str, value: Any, allowed: str) -> ConfigError:
    """The project's one error format: `key=value: must be <allowed>`."""
    return ConfigError(f"{key}={value!r}: must be {allowed}")


def check_choice(key: str, value: Any, choices: Mapping[str, Any] | tuple[str, ...]) -> None:
    """Raise unless `value` names one of `choices` (a registry or a tuple of names)."""
    if value not in choices:
        raise fail(key, value, "one of " + ", ".join(sorted(choices)))
