"""Learning curves at a finer grain than the epoch: train and test accuracy and loss every N steps.

The report's figures 1–9 plot accuracy against iterations, so per-epoch metrics are too coarse (one
epoch of the MNIST subset is 36 iterations, of full MNIST 600). The points are held and sent together
(trainlab.tracking.pending) every few seconds at an epoch's end, at the end of fit and when the run stops:
MLflow's ~10 ms per call is paid a few times a minute, not per point or per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from trainlab.tracking.pending import Pending


class Curves(Callback):
    """Logs `curve/{train,test}/{acc,loss}`, `curve/lr` (the rate of the next step) and `curve/epoch`
    (fractional: step / steps per epoch) at
    step 0, then every `every_n_steps` optimiser steps and/or at every `every_n_epochs`-th epoch end.

    Each point evaluates the model (in eval mode: no dropout, running BN statistics) on the first
    `max_images` training images and the first `max_images` test images, as the study's curves do.
    For a population (logits (K, N, C), `module.members`), each member's points go to its own logger
    in `member_loggers`.
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        max_images: int | None = 1000,
        member_loggers: Mapping[int, Any] | None = None,
    ) -> None:
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images
        self.member_loggers = member_loggers or {}
        # Points by member id (None: the run's own model), sent every few seconds at an epoch's end.
        self.pending = Pending()
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
        members = getattr(module, "members", [None])
        epoch = step / max(trainer.num_training_batches, 1)
        points = [
            [("curve/epoch", epoch, step), ("curve/lr", lr, step)]
            for lr in learning_rates(trainer, len(members))
        ]
        for split, data in (("train", datamodule.train), ("test", datamodule.test)):
            n = len(data) if self.max_images is None else min(self.max_images, len(data))
            correct = torch.zeros(len(members), dtype=torch.float64)
            loss = torch.zeros(len(members), dtype=torch.float64)
            for start in range(0, n, 500):
                images, labels = data[torch.arange(start, min(start + 500, n))]
                batch = (images.to(module.device), labels.to(module.device))
                images, labels = datamodule.on_after_batch_transfer(batch, 0)
                logits = module(images).reshape(len(members), len(labels), -1)  # (members, N, classes)
                losses = F.cross_entropy(logits.flatten(0, 1), labels.repeat(len(members)), reduction="none")
                loss += losses.view(len(members), -1).sum(1).cpu()
                correct += (logits.argmax(-1) == labels).sum(1).cpu()
            for row in range(len(members)):
                points[row] += [
                    (f"curve/{split}/acc", correct[row].item() / n, step),
                    (f"curve/{split}/loss", loss[row].item() / n, step),
                ]
        for member, member_points in zip(members, points, strict=True):
            self.pending.add(member, member_points)
        module.train(was_training)

    def _flush(self, trainer: L.Trainer, force: bool = True) -> None:
        if trainer.is_global_zero:
            self.pending.flush(lambda m: trainer.logger if m is None else self.member_loggers[m], force)
        else:
            self.pending.points = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._evaluate(trainer, pl_module)
        self._flush(trainer, force=False)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._flush(trainer)  # a stopped run keeps its points

    def state_dict(self) -> dict[str, Any]:
        return self.pending.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending.load_state_dict(state)


def learning_rates(trainer: L.Trainer, members: int) -> list[float]:
    """The learning rate of the next step: one, or one per member for a population's optimiser, whose
    group holds them as `hypers["lr"]` (trainlab.population.optim)."""
    group = trainer.optimizers[0].param_groups[0] if trainer.optimizers else {}
    if "hypers" in group:
        return [float(lr) for lr in group["hypers"]["lr"]]
    return [float(group.get("lr", float("nan")))] * members
