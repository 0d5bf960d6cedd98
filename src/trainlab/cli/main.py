"""The entry point's job: one run, a population job or a group, with a user mistake, an unwritable file,
a diverged run or an interrupt turned into one line on stderr and a non-zero exit status."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig

from trainlab import interrupts
from trainlab.errors import Diverged, Stop, as_mistake
from trainlab.run.job import in_sweep

T = TypeVar("T")


def run_job(cfg: DictConfig) -> float | list[float | None] | list[dict] | None:
    """`train`, `train_population` for a job given `population` (K trials at once; `train_groups` when
    each is a group), or `train_group` for `repeats`/`data.folds` (one parent run, the mean returned);
    errors raised (trainlab.api calls this as Hydra's task function, so that a notebook gets exceptions)."""
    from trainlab.repeats.group import is_group, train_group, train_groups

    if cfg.get("population"):
        if is_group(cfg):  # K variants, each with its repeats: all their runs in one population
            return train_groups(cfg)
        from trainlab.population.run import train_population

        return train_population(cfg)
    if is_group(cfg):
        return train_group(cfg)
    from trainlab.run.training import train

    return train(cfg).value


def main(cfg: DictConfig) -> float | list[float | None] | list[dict] | None:
    """`run_job`, its mistakes reported as `reporting_errors` does. In a sweep the error is raised
    instead, so the sweeper records the job as failed and decides whether to go on."""
    return reporting_errors(lambda: run_job(cfg))


def reporting_errors(job: Callable[[], T]) -> T:
    """`job()` with Ctrl-C and SIGTERM as a request (trainlab.interrupts), and its user mistakes and
    unwritable files as `Stop`: one line on stderr and exit status 2, a diverged run status 1 (what
    `src/train.py`, `src/eval.py` and `src/predict.py` share; trainlab.cli.fast_exit prints the line)."""
    try:
        with interrupts.cooperative():
            return job()
    except Exception as err:
        mistake = as_mistake(err)
        if in_sweep() or mistake is None:
            raise
        raise Stop(mistake, 1 if isinstance(mistake, Diverged) else 2) from None
