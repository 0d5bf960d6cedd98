"""Where a run stops after Ctrl-C, SIGTERM or a SLURM warning signal: at the end of a training batch, with
`last.ckpt` written there, so that `ckpt_path=last` goes on from exactly that step (trainlab.interrupts
records the signal; this callback is the run's safe point)."""

from __future__ import annotations

import logging
import signal
from typing import Any

from trainlab import interrupts
from trainlab.cluster.requeue import RequeueOnSignal

log = logging.getLogger(__name__)

RESUME = "the run is saved (MLflow run KILLED); the same command with ckpt_path=last resumes it"


class StopOnSignal(RequeueOnSignal):
    """At a training batch end (trainlab.cluster.requeue.safe_point), on every rank at once (a signal may
    reach one process only): a SLURM warning signal saves, requeues and exits (RequeueOnSignal); Ctrl-C or
    SIGTERM saves `checkpoint` and raises `Interrupted`. In the final test, Ctrl-C stops at the next test
    batch."""

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        interrupts.take_over()  # from Lightning's own SIGTERM handler, put in as `fit` started

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        interrupts.take_over()

    def asked(self) -> bool:
        return self.received is not None or interrupts.received() is not None

    def stop(self, trainer: Any) -> None:
        if self.received is not None:
            self.save_and_requeue(trainer)
        trainer.save_checkpoint(self.checkpoint)
        signum = interrupts.received() or signal.SIGTERM  # another rank's signal: the same stop
        log.warning(
            "%s: saved %s at step %d", signal.Signals(signum).name, self.checkpoint, trainer.global_step
        )
        raise interrupts.Interrupted(signum, RESUME)

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        interrupts.check(RESUME)
