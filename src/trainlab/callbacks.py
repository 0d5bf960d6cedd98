"""The callbacks every run gets: best and last checkpoints, and a cheap progress bar."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig

from trainlab.cluster import RequeueOnSignal
from trainlab.interrupts import CheckpointOnInterrupt


def build_callbacks(run_cfg: DictConfig, checkpoint_dir: Path) -> list[Callback]:
    """The run's callbacks, the checkpoint ones first: `best.ckpt` by `callbacks.checkpoint.monitor`, then
    `resume_callbacks`, then the optional ones (timer, learning curves, diagnostics, the Optuna trial)."""
    cfg = run_cfg.callbacks
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="best",
            monitor=cfg.checkpoint.monitor,
            mode=cfg.checkpoint.mode,
            save_top_k=1,
            enable_version_counter=False,
        ),
        *resume_callbacks(run_cfg, checkpoint_dir),
    ]
    if cfg.get("timer"):
        callbacks.append(EpochTimer())
    callbacks.extend(curves_callback(run_cfg))
    if run_cfg.get("diagnostics", {}).get("enabled", False):
        from trainlab.diagnostics import build_diagnostics

        callbacks.append(build_diagnostics(run_cfg.diagnostics))
    from trainlab.trial import trial_callbacks  # inside an Optuna sweep: report, prune, tag the run

    callbacks.extend(trial_callbacks(run_cfg))
    return callbacks


def resume_callbacks(run_cfg: DictConfig, checkpoint_dir: Path) -> list[Callback]:
    """What lets a run be stopped and resumed, and shows progress: `last.ckpt` each epoch (or every N
    steps if set) and on Ctrl-C/SIGTERM or a SLURM warning signal, then the progress bar.

    `last.ckpt` has a callback of its own: Lightning's `save_last` skips epochs in which the best
    checkpoint did not improve, and resuming needs the newest state, not the best.
    """
    cfg = run_cfg.callbacks
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="last",
            every_n_train_steps=cfg.checkpoint.every_n_train_steps,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
        CheckpointOnInterrupt(checkpoint_dir / "last.ckpt"),
        RequeueOnSignal(checkpoint_dir / "last.ckpt"),  # SLURM preemption (trainlab.cluster)
    ]
    if cfg.progress_bar.refresh_rate:
        callbacks.append(TQDMProgressBar(refresh_rate=cfg.progress_bar.refresh_rate))
    return callbacks


def curves_callback(run_cfg: DictConfig, member_loggers: Mapping[int, Any] | None = None) -> list[Callback]:
    """[Curves] where `callbacks.curves` asks for learning curves within epochs, else []; a population
    passes its members' loggers."""
    curves = run_cfg.callbacks.get("curves")
    if not (curves and (curves.every_n_steps or curves.every_n_epochs)):
        return []
    from trainlab.curves import Curves

    return [Curves(curves.every_n_steps, curves.every_n_epochs, curves.max_images, member_loggers)]


class EpochTimer(Callback):
    """Logs `time/epoch_s`: wall seconds of each epoch's training batches, validation left out, the
    figure to compare with a hand-written loop (benchmarks/). On a GPU the clock waits for the device."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since: float | None = None

    @staticmethod
    def _now(module: L.LightningModule) -> float:
        if module.device.type == "cuda":
            import torch

            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds, self._since = 0.0, self._now(pl_module)

    def _pause(self, module: L.LightningModule) -> None:
        if self._since is not None:
            self.seconds += self._now(module) - self._since
            self._since = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":  # validation within an epoch (val_check_interval < 1): time goes on
            self._since = self._now(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)
        pl_module.log("time/epoch_s", self.seconds)
