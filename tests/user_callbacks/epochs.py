"""A user's callback: it writes one line per finished training epoch into a file."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class EpochLog(Callback):
    """Appends `epoch <n> <metric>=<value>` to `path` at each training epoch's end."""

    def __init__(self, path: str, metric: str = "train/loss") -> None:
        self.path, self.metric = Path(path), metric

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = float(trainer.callback_metrics[self.metric])
        with self.path.open("a") as file:
            file.write(f"epoch {trainer.current_epoch} {self.metric}={value}\n")


NOT_A_CALLBACK = object
