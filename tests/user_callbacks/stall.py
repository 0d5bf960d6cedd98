"""A callback that holds a run still at a known point, so a test can kill it there instead of racing the
epochs that follow (a tiny run finishes several epochs between two polls on a loaded machine)."""

from __future__ import annotations

import os
import time

import lightning as L
from lightning.pytorch.callbacks import Callback


class StallAfterFirstEpoch(Callback):
    """Sleeps before the second epoch of a run whose checkpoint folder contains $TRAINLAB_TEST_STALL;
    does nothing when that variable is unset (the resumed run)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        member = os.environ.get("TRAINLAB_TEST_STALL")
        if member and trainer.current_epoch >= 1 and member in str(trainer.checkpoint_callback.dirpath):
            time.sleep(3600)
