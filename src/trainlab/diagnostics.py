"""Why a network trains or not, layer by layer: gradient norms, update ratios and activation statistics of
every affine/conv layer at sampled steps, and activation histograms, logged to MLflow (`diagnostics=on`).

Accuracy curves show that sigmoid + N(0, 0.01²) never learns; these show why: the gradient shrinks by
about σ'·‖W‖ ≤ 0.25·‖W‖ per layer on its way back, and the activations pile up at 0.5 (or at 0 and 1).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainlab.atomic import write_atomically
from trainlab.errors import fail
from trainlab.models.layers import ACTIVATIONS
from trainlab.tracking.tracker import log_points

# Each module's activation name ("sigmoid", ...) by its type: the inverse of the models' registry.
ACTIVATION_NAMES: dict[type[nn.Module], str] = {cls: name for name, cls in ACTIVATIONS.items()}
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
HISTOGRAM_FILE = "activations.json"
ARTIFACT_DIR = "diagnostics"
# Buffered points go to MLflow at an epoch's end once this long has passed (and at the end of training):
# one ~10-50 ms call per short epoch of a small MLP would cost more than the diagnostics themselves.
FLUSH_SECONDS = 30.0


def sigmoid_derivative(y: torch.Tensor) -> torch.Tensor:
    """σ'(x) = σ(x)(1 − σ(x)) = y(1 − y), from the output y; at most 1/4, at x = 0."""
    return y * (1 - y)


def tanh_derivative(y: torch.Tensor) -> torch.Tensor:
    """tanh'(x) = 1 − tanh²(x) = 1 − y²; at most 1, at x = 0."""
    return 1 - y * y


def relu_derivative(y: torch.Tensor) -> torch.Tensor:
    """relu'(x) = 1[x > 0] = 1[y > 0]: a unit at zero passes no gradient back ("dead" for that input)."""
    return (y > 0).to(y.dtype)


# The activations whose saturation is measured, by name: their derivative computed from their output.
DERIVATIVES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": sigmoid_derivative,
    "tanh": tanh_derivative,
    "relu": relu_derivative,
}

# Histogram ranges of the bounded activations, so runs compare bin for bin; others use the data's range.
HISTOGRAM_RANGES: dict[str, tuple[float, float]] = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def saturation(activation: str, y: torch.Tensor, below: float) -> torch.Tensor:
    """Fraction of outputs in the flat part of the activation: f'(x) < `below` (sigmoid/tanh near their
    asymptotes; ReLU at zero, with any `below` in (0, 1])."""
    return (DERIVATIVES[activation](y) < below).float().mean()


def check_diagnostics(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad `diagnostics.*` key (`diagnostics=on` only)."""
    if not cfg.get("enabled", False):
        return
    every = cfg.every_n_steps
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise fail("diagnostics.every_n_steps", every, "an integer >= 1")
    steps = OmegaConf.to_container(cfg.histogram_steps)
    if not isinstance(steps, list) or not all(isinstance(s, int) and s >= -1 for s in steps):
        raise fail("diagnostics.histogram_steps", steps, "a list of steps >= 0 (-1: the last step)")
    if not isinstance(cfg.bins, int) or isinstance(cfg.bins, bool) or cfg.bins < 1:
        raise fail("diagnostics.bins", cfg.bins, "an integer >= 1")
    for name, below in cfg.saturated_below.items():
        if name not in DERIVATIVES:
            raise fail(
                f"diagnostics.saturated_below.{name}", below, "keyed by one of " + ", ".join(DERIVATIVES)
            )
        if isinstance(below, bool) or not isinstance(below, int | float) or below <= 0:
            raise fail(f"diagnostics.saturated_below.{name}", below, "a number > 0")


def build_diagnostics(cfg: DictConfig) -> Diagnostics:
    """The callback for `diagnostics=on` (with `off` no callback is built, so nothing is hooked at all)."""
    check_diagnostics(cfg)
    return Diagnostics(
        every_n_steps=cfg.every_n_steps,
        histogram_steps=list(cfg.histogram_steps),
        bins=cfg.bins,
        saturated_below=dict(cfg.saturated_below),
    )


def find_layers(model: nn.Module) -> list[tuple[nn.Module, nn.Module | None, str | None]]:
    """(layer, its activation module, the activation's name) for each Linear/Conv in depth order: the
    activation is the first one that follows the layer before the next layer (None for the output layer).

    Depth order is registration order, which is the forward order of the project's Sequential models.
    """
    found: list[list[Any]] = []
    for module in model.modules():
        if isinstance(module, LAYER_TYPES):
            found.append([module, None, None])
        elif type(module) in ACTIVATION_NAMES and found and found[-1][1] is None:
            found[-1][1:] = [module, ACTIVATION_NAMES[type(module)]]
    return [tuple(entry) for entry in found]


def tensorboard_writers(trainer: Trainer) -> list[Any]:
    """The SummaryWriters of the run's TensorBoard loggers (global rank 0 only). MLflow stores no
    histograms (mlflow#8145): TensorBoard gets each layer's activations and weight gradients at every
    sampled step, the vanishing gradient's picture over time (one device sync per histogram)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    loggers = trainer.loggers if trainer.is_global_zero else []
    return [logger.experiment for logger in loggers if isinstance(logger, TensorBoardLogger)]


class Diagnostics(Callback):
    """Every `every_n_steps` optimiser steps (and at step 0) records, for layer k = 1, 2, … in depth order:

    - `grad_norm/layerk`: ‖∂L/∂W‖ of the layer's weight, before the step;
    - `update_ratio/layerk`: ‖ΔW‖ / ‖W‖, the step's relative change of the weight;
    - `act_mean/layerk`, `act_std/layerk`: of the activation that follows the layer, over the batch;
    - `saturation/layerk`: the fraction of those activations with f'(x) < `saturated_below[activation]`.

    With a TensorBoard logger, also each layer's activation and gradient histograms at those steps.
    At `histogram_steps` (−1: the last step) it keeps histograms of each activation, written at the end of
    training to `<run dir>/diagnostics/activations.json` and logged as an MLflow artifact. Metrics are
    buffered on the device and sent with `log_points` at an epoch's end at most every FLUSH_SECONDS, and at
    the end: one MLflow call and one device sync each time.
    Forward hooks exist only from the start to the end of `fit` and return at once on unsampled steps.
    """

    def __init__(
        self, every_n_steps: int, histogram_steps: list[int], bins: int, saturated_below: dict[str, float]
    ) -> None:
        self.every_n_steps = every_n_steps
        self.histogram_steps = histogram_steps
        self.bins = bins
        self.saturated_below = saturated_below
        self.layers: list[tuple[nn.Module, nn.Module | None, str | None]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._histogram_at: set[int] = set()
        self._step: int | None = None  # the sampled step in progress, None between samples
        self._before: list[torch.Tensor] = []
        self._pending: list[tuple[str, int, torch.Tensor]] = []
        self._histograms: list[dict[str, Any]] = []
        self._writers: list[Any] = []  # TensorBoard's SummaryWriters, if any (logger=[…,tensorboard])
        self._flushed_at = time.monotonic()

    def layer_name(self, index: int) -> str:
        return f"layer{index + 1}"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.layers = find_layers(pl_module)
        self._writers = tensorboard_writers(trainer)
        last = trainer.estimated_stepping_batches - 1
        self._histogram_at = {
            int(last) if step == -1 else step
            for step in self.histogram_steps
            if step != -1 or math.isfinite(last)
        }
        for index, (_, activation, name) in enumerate(self.layers):
            if activation is not None:
                hook = partial(self._record_activation, self.layer_name(index), name)
                self._handles.append(activation.register_forward_hook(hook))

    def _sampled(self, step: int) -> bool:
        return step % self.every_n_steps == 0 or step in self._histogram_at

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, idx: int
    ) -> None:
        self._step = trainer.global_step if self._sampled(trainer.global_step) else None

    def _record_activation(
        self, layer: str, activation: str, module: nn.Module, args: Any, output: Any
    ) -> None:
        if self._step is None or not torch.is_grad_enabled():
            return
        y = output.detach().float()
        self._pending += [
            (f"act_mean/{layer}", self._step, y.mean()),
            (f"act_std/{layer}", self._step, y.std()),
        ]
        if activation in self.saturated_below:
            fraction = saturation(activation, y, self.saturated_below[activation])
            self._pending.append((f"saturation/{layer}", self._step, fraction))
        for writer in self._writers:
            writer.add_histogram(f"activation/{layer}", y, self._step)
        if self._step in self._histogram_at:
            low, high = HISTOGRAM_RANGES.get(activation) or (y.min().item(), y.max().item())
            counts = torch.histc(y, self.bins, low, high)
            self._histograms.append(
                {
                    "step": self._step,
                    "layer": layer,
                    "activation": activation,
                    "range": [low, high],
                    "counts": counts,
                }
            )

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if self._step is None:
            return
        self._before = []
        for index, (layer, _, _) in enumerate(self.layers):
            weight = layer.weight
            if weight.grad is not None:
                self._pending.append((f"grad_norm/{self.layer_name(index)}", self._step, weight.grad.norm()))
                for writer in self._writers:
                    writer.add_histogram(
                        f"gradient/{self.layer_name(index)}", weight.grad.float(), self._step
                    )
            self._before.append(weight.detach().clone())

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._step is None:
            return
        # Nothing to compare on a micro-batch that only accumulated gradients (no optimiser step).
        for index, ((layer, _, _), before) in enumerate(zip(self.layers, self._before, strict=False)):
            ratio = (layer.weight.detach() - before).norm() / before.norm()
            self._pending.append((f"update_ratio/{self.layer_name(index)}", self._step, ratio))
        self._before = []
        self._step = None

    def flush(self, trainer: Trainer) -> None:
        """Send the buffered points in one batch: one device sync, one MLflow call per 1,000 points."""
        if not self._pending:
            return
        self._flushed_at = time.monotonic()
        values = torch.stack([value.float() for _, _, value in self._pending]).tolist()
        points = [(name, value, step) for (name, step, _), value in zip(self._pending, values, strict=True)]
        self._pending = []
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                log_points(logger, points)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.flush(trainer)
        self.remove_hooks()
        if trainer.is_global_zero:
            self.save_histograms(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def layer_table(self) -> list[dict[str, Any]]:
        """What each `layerk` is: its type, weight shape and activation, for readers of the metrics."""
        return [
            {
                "name": self.layer_name(index),
                "type": type(layer).__name__,
                "shape": list(layer.weight.shape),
                "activation": activation,
            }
            for index, (layer, _, activation) in enumerate(self.layers)
        ]

    def save_histograms(self, trainer: Trainer) -> Path:
        """Write `diagnostics/activations.json` into the run folder and log it to the MLflow run."""
        for entry in self._histograms:
            entry["counts"] = entry["counts"].tolist()
        folder = Path(trainer.default_root_dir) / ARTIFACT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / HISTOGRAM_FILE
        record = {"bins": self.bins, "layers": self.layer_table(), "histograms": self._histograms}
        write_atomically(path, json.dumps(record))
        logger = trainer.logger
        if hasattr(logger, "run_id") and hasattr(logger, "experiment"):  # MLflow
            logger.experiment.log_artifact(logger.run_id, str(path), ARTIFACT_DIR)
        return path
