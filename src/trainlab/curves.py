"""Learning curves at a finer grain than the epoch: train and test accuracy and loss every N steps.

The report's figures 1–9 plot accuracy against iterations, so per-epoch metrics are too coarse (one
epoch of the MNIST subset is 36 iterations, of full MNIST 600). The points are buffered and sent with
`trainlab.tracking.log_points` once per epoch and at the end of fit: MLflow's ~10 ms per call is paid
per epoch, not per point.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from trainlab.tracking import log_points


class Curves(Callback):
    """Logs `curve/{train,test}/{acc,loss}` and `curve/epoch` (fractional: step / steps per epoch) at
    step 0, then every `every_n_steps` optimiser steps and/or at every `every_n_epochs`-th epoch end.

    Each point evaluates the model (in eval mode: no dropout, running BN statistics) on the first
    `max_images` training images and the first `max_images` test images, as the study's curves do.
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        max_images: int | None = 1000,
    ) -> None:
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images
        self.points: list[tuple[str, float, int]] = []
        self._last_step = -1

    @torch.no_grad()
    def _evaluate(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step:  # the epoch end can fall on a step already sampled
            return
        self._last_step = step
        was_training = module.training
        module.eval()
        datamodule = trainer.datamodule
        for split, data in (("train", datamodule.train), ("test", datamodule.test)):
            n = len(data) if self.max_images is None else min(self.max_images, len(data))
            correct, loss = 0, 0.0
            for start in range(0, n, 500):
                images, labels = data[torch.arange(start, min(start + 500, n))]
                batch = (images.to(module.device), labels.to(module.device))
                images, labels = datamodule.on_after_batch_transfer(batch, 0)
                logits = module(images)
                loss += F.cross_entropy(logits, labels, reduction="sum").item()
                correct += (logits.argmax(1) == labels).sum().item()
            self.points += [
                (f"curve/{split}/acc", correct / n, step),
                (f"curve/{split}/loss", loss / n, step),
            ]
        self.points.append(("curve/epoch", step / max(trainer.num_training_batches, 1), step))
        module.train(was_training)

    def _flush(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            log_points(trainer.logger, self.points)
        self.points = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._evaluate(trainer, pl_module)
        self._flush(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
