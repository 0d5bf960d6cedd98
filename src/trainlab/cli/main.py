"""The entry point's job: one run or one population job, with a user mistake, an unwritable file or a
diverged run turned into one line on stderr and a non-zero exit status."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig

from trainlab.errors import Diverged, UserError
from trainlab.run.job import in_sweep

T = TypeVar("T")

# A file that cannot be written: no space, no quota, read-only, no permission.
_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOTDIR)


def run_job(cfg: DictConfig) -> float | list[float | None] | list[dict] | None:
    """`train`, `train_population` for a job given `population` (K trials at once), or `train_group` for
    `repeats`/`data.folds` (one parent run, the mean returned); errors raised (trainlab.api calls this as
    Hydra's task function, so that a notebook gets exceptions)."""
    if cfg.get("population"):
        from trainlab.population.run import train_population

        return train_population(cfg)
    from trainlab.repeats.group import is_group, train_group

    if is_group(cfg):
        return train_group(cfg)
    from trainlab.run.training import train

    return train(cfg).value


def main(cfg: DictConfig) -> float | list[float | None] | list[dict] | None:
    """`run_job`, its mistakes reported as `reporting_errors` does. In a sweep the error is raised
    instead, so the sweeper records the job as failed and decides whether to go on."""
    return reporting_errors(lambda: run_job(cfg))


def reporting_errors(job: Callable[[], T]) -> T:
    """`job()`, with its user mistakes and unwritable files as one line on stderr and exit status 2, a
    diverged run as exit status 1 (what `src/train.py`, `src/eval.py` and `src/predict.py` share)."""
    try:
        return job()
    except (UserError, Diverged, OSError) as err:
        if in_sweep() or (isinstance(err, OSError) and err.errno not in _STORAGE_ERRORS):
            raise
        if isinstance(err, OSError):
            err = UserError(
                f"cannot write {err.filename or 'a file'}: {err.strerror}; free space or set paths.root_dir "
                "to a writable folder (the previous checkpoints are intact)"
            )
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1 if isinstance(err, Diverged) else 2) from None
