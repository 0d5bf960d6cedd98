"""A callback that signals its own process at a chosen batch: a Ctrl-C, a SIGTERM or a kill -9 at the
moment a test names, instead of a test polling the run and racing it on a loaded machine."""

from __future__ import annotations

import os
import signal

import lightning as L
from lightning.pytorch.callbacks import Callback


class SignalAt(Callback):
    """Sends `name` (SIGINT, SIGTERM, SIGKILL, …) to this process as training batch `batch` of epoch
    `epoch` starts: the signal arrives mid-batch."""

    def __init__(self, epoch: int = 0, batch: int = 0, name: str = "SIGINT") -> None:
        self.epoch, self.batch, self.signal = epoch, batch, getattr(signal, name)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args, **kwargs) -> None:
        if (trainer.current_epoch, args[-1]) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signal)


class SignalAtSteps(Callback):
    """Sends SIGINT as the batch after global step N starts, for each N in $TRAINLAB_TEST_SIGNAL_STEPS
    (comma-separated): the overrides stay the same, so that `ckpt_path=last` resumes the stopped run."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args, **kwargs) -> None:
        steps = os.environ.get("TRAINLAB_TEST_SIGNAL_STEPS", "")
        if str(trainer.global_step) in steps.split(","):
            os.kill(os.getpid(), signal.SIGINT)
