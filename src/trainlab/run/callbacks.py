"""The callbacks every run gets: best and last checkpoints, a one-line model summary and a cheap
progress bar; and those a config asks for: early stopping, learning curves, diagnostics and the user's own
(`callbacks.extra`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig

from trainlab.run.interrupts import StopOnSignal

log = logging.getLogger(__name__)


def build_callbacks(run_cfg: DictConfig, checkpoint_dir: Path, report: Any = None) -> list[Callback]:
    """The run's callbacks, the checkpoint ones first: `best.ckpt` by `callbacks.checkpoint.monitor`, then
    `resume_callbacks`, then the optional ones (early stopping, timer, learning curves, diagnostics, the
    Optuna trial, told the group's `report` in a group of repeats), then the user's `callbacks.extra`,
    instantiated by Hydra."""
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
    callbacks.append(ModelSize())  # one line about the network (a population has none: many members)
    stopping = cfg.get("early_stopping")
    if stopping is not None and stopping.enabled:
        callbacks.append(early_stopping(stopping))
    if cfg.get("timer"):
        callbacks.append(EpochTimer())
    callbacks.extend(curves_callback(run_cfg))
    if run_cfg.get("diagnostics", {}).get("enabled", False):
        from trainlab.diagnostics import build_diagnostics

        callbacks.append(build_diagnostics(run_cfg.diagnostics))
    from trainlab.run.trial import trial_callbacks  # inside an Optuna sweep: report, prune, tag the run

    callbacks.extend(trial_callbacks(run_cfg, report))
    if cfg.get("extra"):
        from hydra.utils import instantiate

        callbacks.extend(instantiate(entry) for entry in cfg.extra)
    return callbacks


def early_stopping(cfg: DictConfig) -> EarlyStopping:
    """Lightning's EarlyStopping from `callbacks.early_stopping`: stop once `monitor` has not improved by
    more than `min_delta` for `patience` validations in a row."""
    return EarlyStopping(
        monitor=cfg.monitor, mode=cfg.mode, patience=cfg.patience, min_delta=cfg.min_delta, verbose=False
    )


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
        StopOnSignal(checkpoint_dir / "last.ckpt"),  # Ctrl-C, SIGTERM, SLURM preemption
    ]
    if cfg.progress_bar.refresh_rate:
        callbacks.append(ProgressBar(refresh_rate=cfg.progress_bar.refresh_rate))
    return callbacks


def curves_callback(run_cfg: DictConfig, member_loggers: Mapping[int, Any] | None = None) -> list[Callback]:
    """[Curves] where `callbacks.curves` asks for learning curves within epochs, else []; a population
    passes its members' loggers."""
    curves = run_cfg.callbacks.get("curves")
    if not (curves and (curves.every_n_steps or curves.every_n_epochs)):
        return []
    from trainlab.tracking.curves import Curves

    return [Curves(curves.every_n_steps, curves.every_n_epochs, curves.max_images, member_loggers)]


def early_stop(callbacks: list[Callback]) -> tuple[int, str] | None:
    """(the epoch, why) if the run's EarlyStopping ended it, else None."""
    for callback in callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            best = float(callback.best_score)
            return callback.stopped_epoch, (
                f"{callback.monitor} did not improve by more than {abs(callback.min_delta):g} for "
                f"{callback.patience} validations (best {best:.4g})"
            )
    return None


def profiler_in(name: str, run_dir: Path) -> Any:
    """Lightning's profiler `name` (simple, advanced, pytorch) writing its report into `run_dir` as
    `fit-profile.txt` and `test-profile.txt` (by name alone it prints to the console only)."""
    from lightning.pytorch.profilers import AdvancedProfiler, PyTorchProfiler, SimpleProfiler

    profilers = {"simple": SimpleProfiler, "advanced": AdvancedProfiler, "pytorch": PyTorchProfiler}
    return profilers[name](dirpath=run_dir, filename="profile")


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


class ModelSize(Callback):
    """One line when training starts: the network, its parameters and its forward FLOPs per image. It
    replaces Lightning's summary table (`trainer.enable_model_summary: false`), whose FLOPs read 0 (it
    has no example input) and whose train/eval module counts a user cannot act on."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.utilities.model_summary import get_human_readable_count
        from torch.utils.flop_counter import FlopCounterMode

        if trainer.global_rank != 0:
            return
        network, shape = pl_module.model, tuple(pl_module.hparams.image_shape)
        training = network.training
        network.eval()  # one image: batch norm must use its running statistics
        # `.forward`, not the call: a `model.compile=true` network would compile for a batch of one.
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            network.forward(torch.zeros(1, *shape, device=pl_module.device))
        network.train(training)
        parameters = sum(p.numel() for p in network.parameters())
        log.info(
            "%s: %s parameters, %s FLOPs per image forward, %s images into %d classes",
            type(network).__name__,
            get_human_readable_count(parameters),
            get_human_readable_count(flops.get_total_flops()),
            "×".join(map(str, shape)),
            pl_module.hparams.num_classes,
        )


class ProgressBar(TQDMProgressBar):
    """Lightning's bar without `v_num`, the tail of the MLflow run id, which says nothing about training."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
