"""User mistakes, reported as one line and a non-zero exit instead of a traceback."""


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
