"""A user's callback that records what the network is shown at each step: the batch the data gave and the
images that reached the LightningModule's forward, so a test can see what augmentation did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

Steps = dict[str, dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]]


class NetworkInputs(Callback):
    """`steps["train"|"val"][(epoch, batch)] = (given, seen)`: the step's images as the data gave them (on
    the device, after the DataModule's transfer hooks) and the images the module's forward was first called
    with in that step. Sanity-check steps are left out. With `filename`, `steps` is saved (`torch.save`)
    into the run folder at the end of `fit`."""

    def __init__(self, filename: str | None = None) -> None:
        self.filename = filename
        self.steps: Steps = {"train": {}, "val": {}}
        self._step: tuple[str, tuple[int, int], torch.Tensor] | None = None
        self._hook: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook = pl_module.register_forward_pre_hook(self._record)

    def _record(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self._step is not None:
            split, key, given = self._step
            self.steps[split][key] = (given, args[0].detach().cpu().clone())
            self._step = None

    def _start(self, split: str, trainer: L.Trainer, batch: Any, batch_idx: int) -> None:
        given = batch[0].detach().cpu().clone()
        self._step = None if trainer.sanity_checking else (split, (trainer.current_epoch, batch_idx), given)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start("train", trainer, batch, batch_idx)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        self._start("val", trainer, batch, batch_idx)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook.remove()
        if self.filename:
            torch.save(self.steps, Path(trainer.default_root_dir) / self.filename)


def load_steps(path: Path) -> Steps:
    """The `steps` a `NetworkInputs` saved to `path`."""
    return torch.load(path, weights_only=True)
