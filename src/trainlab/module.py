"""The LightningModule for classification: builds the network from the config, trains it with the
configured optimiser and weight penalty, and logs per-epoch metrics.

Metrics: train/loss (cross-entropy, comparable with val/loss), train/penalty (the regulariser's term;
the optimiser minimises loss + penalty), train/acc, train/lr (the learning rate of the epoch's last step),
val/loss, val/acc, test/loss, test/acc, and
weights/zero_fraction (the share of penalisable weights with |w| < 1e-3: at each validation, and at the
test, of the tested weights), whatever the regulariser, so sparsity can be an objective.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from trainlab.augment import build_augmentation
from trainlab.data import epoch_batches
from trainlab.errors import Diverged
from trainlab.init import initialize
from trainlab.models import build_model
from trainlab.optim import build_optimizer
from trainlab.regularizers import (
    activation_penalty,
    last_hidden_activation,
    penalized_weights,
    weight_penalty,
    zero_fraction,
)
from trainlab.scheduler import build_scheduler, lightning_config, planned_length

# The metrics logged at every epoch's end (by a population too): what a callback or a schedule may watch.
# Validation's, and the weights' sparsity measured with it, only in a run that validates.
TRAIN_METRICS = ("train/loss", "train/acc", "train/penalty", "train/lr")
VAL_METRICS = ("val/loss", "val/acc", "weights/zero_fraction")
# Logged by the final test of the best checkpoint, after training: what a run returns may name them too.
TEST_METRICS = ("test/loss", "test/acc")


def logged_metrics(trainer: DictConfig, tested: bool = False) -> tuple[str, ...]:
    """The metrics a run with the `trainer` settings logs at every epoch's end and, with `tested`, those of
    its final test as well: what a key that names a metric may name (trainlab.config.check_metrics).
    Diagnostics and learning curves go straight to the loggers (`grad_norm/*`, `curve/*`): none of them."""
    metrics = TRAIN_METRICS
    if trainer.get("limit_val_batches", 1.0) != 0:
        metrics += VAL_METRICS
    if tested and trainer.get("limit_test_batches", 1.0) != 0:
        metrics += TEST_METRICS
    return metrics


class Classifier(L.LightningModule):
    """A classifier over `image_shape` images with `num_classes` classes, configured by `config`.

    `config` is the run's resolved config as plain containers: it is stored in every checkpoint
    (loadable with `weights_only=True`) so `Classifier.load_from_checkpoint(path)` rebuilds the run.
    `class_names` (the data's names of labels 0…C−1) are stored with it, so a prediction can name its class.
    Training batches are augmented by the config's `augment` group (`trainlab.augment`).
    """

    def __init__(
        self,
        config: dict[str, Any],
        image_shape: tuple[int, ...],
        num_classes: int,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        cfg = OmegaConf.create(config)
        self.augmentation = build_augmentation(cfg.get("augment"))
        self.seed = int(cfg.get("seed") or 0)
        self.optimizer_cfg: DictConfig = cfg.optimizer
        self.scheduler_cfg: DictConfig = cfg.get("scheduler") or OmegaConf.create({"name": "none"})
        self.l1, self.l2 = float(cfg.regularizer.l1), float(cfg.regularizer.l2)
        self.model = build_model(cfg.model, cfg.norm, tuple(image_shape), num_classes)
        initialize(self.model, cfg.init)
        if cfg.model.get("channels_last", False):  # NHWC conv weights: the layout tensor cores want
            self.model.to(memory_format=torch.channels_last)
        if cfg.model.get("compile", False):  # compiles the network's forward in place: state_dict unchanged
            self.model.compile()
        self.penalized = penalized_weights(self.model)
        self.penalize_activations = cfg.regularizer.get("target", "weights") == "activations"
        # `trainer.detect_anomaly`: torch names the backward op that makes NaN; forward hooks name the layer
        # whose output first stopped being finite (the usual case: the loss is NaN before any backward).
        self.first_non_finite: str | None = None
        if cfg.get("trainer", {}).get("detect_anomaly", False):
            for name, layer in self.model.named_modules(prefix="model"):
                layer.register_forward_hook(self._watch_finite(name))
        if self.penalize_activations:
            last_hidden_activation(self.model).register_forward_hook(self._keep_activations)
        # The epoch's running sums on the device, float32 whatever the precision: per split [Σ loss·n,
        # Σ correct, Σ n], and "penalty" [Σ penalty, steps]. A few in-place adds a step, no sync with a
        # GPU, ~50 µs a step less than torchmetrics' MeanMetric + MulticlassAccuracy. Checkpoints
        # carry the training ones (save_epoch_sums): a resumed epoch's mean counts all its batches.
        self._epoch_sums: dict[str, torch.Tensor] = {}
        self._epoch_lr = 0.0  # the rate of the epoch's last step so far (logged as train/lr)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _evaluate(self, batch: Any, split: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        sums = self._sums(split, 3, loss.device)
        sums[0] += loss.detach() * len(labels)
        sums[1] += (logits.detach().argmax(1) == labels).sum()
        sums[2] += len(labels)
        return loss

    def _keep_activations(self, layer: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        """Forward hook: the last hidden layer's output, for `regularizer.target=activations`."""
        self.hidden_activations = output

    def _watch_finite(self, name: str) -> Any:
        def hook(layer: torch.nn.Module, inputs: Any, output: Any) -> None:
            if (
                self.first_non_finite is None
                and isinstance(output, torch.Tensor)
                and not output.is_meta  # the preflight's step: shapes only
                and not torch.isfinite(output).all()
            ):
                self.first_non_finite = f"{name} ({type(layer).__name__})"

        return hook

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.first_non_finite = None
        images, labels = batch
        images = self.augmentation(images, self.seed, self.current_epoch, batch_idx)
        loss = self._evaluate((images, labels), "train")
        if self.l1 or self.l2:
            penalty = (
                activation_penalty(self.hidden_activations, self.l1, self.l2)
                if self.penalize_activations
                else weight_penalty(self.penalized, self.l1, self.l2)
            )
            sums = self._sums("penalty", 2, penalty.device)
            sums[0] += penalty.detach()
            sums[1] += 1
            loss = loss + penalty
        return loss

    def on_before_backward(self, loss: torch.Tensor) -> None:
        """Stop at the first loss that is not finite, before its gradients reach the weights. (A hook, not
        part of `training_step`, so that the preflight can run that step on the meta device.)"""
        if not torch.isfinite(loss):
            where = f"first non-finite output: {self.first_non_finite}; " if self.first_non_finite else ""
            raise Diverged(
                f"train/loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                f"{where}lower optimizer.lr={self.optimizer_cfg.lr} or add a norm layer"
            )

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Under `trainer.detect_anomaly`, torch's error for a backward op that made NaN, as one line."""
        try:
            super().backward(loss, *args, **kwargs)
        except RuntimeError as error:
            if "returned nan values" not in str(error):
                raise
            said = str(error).strip().splitlines()[0]
            raise Diverged(f"a gradient became NaN at step {self.global_step}: {said}") from None

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _sums(self, name: str, size: int, device: torch.device) -> torch.Tensor:
        sums = self._epoch_sums.get(name)
        if sums is None or sums.device != device:  # none yet, or restored from a checkpoint on the CPU
            sums = torch.zeros(size, device=device) if sums is None else sums.to(device)
            self._epoch_sums[name] = sums
        return sums

    def _epoch_total(self, name: str, size: int) -> torch.Tensor:
        """The epoch's sums over every rank (under DDP); the next epoch starts from zero."""
        sums = self._epoch_sums.pop(name, None)
        if sums is None:
            sums = torch.zeros(size, device=self.device)
        return self.trainer.strategy.reduce(sums, reduce_op="sum")

    def _log_epoch(self, split: str) -> None:
        """One log call per epoch and split: loss = Σ loss·n / Σ n, acc = Σ correct / Σ n, over all ranks."""
        loss_sum, correct, count = self._epoch_total(split, 3)
        values = {f"{split}/loss": loss_sum / count, f"{split}/acc": correct / count}
        if split == "train":
            penalty, steps = self._epoch_total("penalty", 2)
            values["train/penalty"] = penalty / steps if steps else 0.0
            values["train/lr"] = self._epoch_lr
        else:
            values["weights/zero_fraction"] = zero_fraction([w.flatten() for w in self.penalized])
        self.log_dict(values, prog_bar=split != "test")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The rate this step uses; the epoch's last is logged (an epoch schedule steps before the log).
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        """The optimiser, and the schedule over it (Lightning steps it every `interval`)."""
        optimizer = build_optimizer(self.optimizer_cfg, self.parameters())
        if self.scheduler_cfg.name == "none":
            return optimizer
        length = schedule_length(self.scheduler_cfg, self.trainer) if self._trainer is not None else 10**6
        scheduler = build_scheduler(self.scheduler_cfg, optimizer, length)
        return {"optimizer": optimizer, "lr_scheduler": lightning_config(self.scheduler_cfg, scheduler)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the RNG state so dropout draws after a resume match an uninterrupted run, and the
        epoch's running sums so that an epoch resumed mid-way logs the mean of all its batches."""
        checkpoint["rng_state"] = torch.get_rng_state()
        save_epoch_sums(checkpoint, self._epoch_sums, self._epoch_lr)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["rng_state"])
        self._epoch_sums, self._epoch_lr = load_epoch_sums(checkpoint, self._epoch_lr)


# The running sums a checkpoint taken mid-epoch carries (validation and test sums never span one).
_SPANNING = ("train", "penalty")


def save_epoch_sums(checkpoint: dict[str, Any], sums: dict[str, torch.Tensor], lr: Any) -> None:
    checkpoint["epoch_sums"] = {k: v.detach().cpu() for k, v in sums.items() if k in _SPANNING}
    checkpoint["epoch_lr"] = lr


def load_epoch_sums(checkpoint: dict[str, Any], lr: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """The sums and learning rate of the epoch a checkpoint was taken in (none in older checkpoints)."""
    return dict(checkpoint.get("epoch_sums", {})), checkpoint.get("epoch_lr", lr)


def network_from_checkpoint(state: dict[str, Any]) -> torch.nn.Module:
    """The bare network of a `Classifier` checkpoint (as `torch.load(..., weights_only=True)` returns it),
    rebuilt from the config stored in it, in eval mode and uncompiled: what evaluation, prediction and
    serving run. It takes float images x/255 in [0, 1], (N, C, H, W), and returns logits.

    Raises KeyError (no trainlab config in it) or RuntimeError (weights of another network)."""
    hparams = state["hyper_parameters"]
    cfg = OmegaConf.create(hparams["config"])
    network = build_model(cfg.model, cfg.norm, tuple(hparams["image_shape"]), hparams["num_classes"])
    weights = state["state_dict"]
    if not all(key.startswith("model.") for key in weights):
        raise RuntimeError(f"weights not of a Classifier's network (e.g. {next(iter(weights), None)!r})")
    network.load_state_dict({key.removeprefix("model."): value for key, value in weights.items()})
    return network.eval()


def schedule_length(cfg: DictConfig, trainer: L.Trainer) -> int:
    """The run's length in the schedule's intervals: the training images this rank sees, in batches, over
    the trainer's epochs (not Lightning's `estimated_stepping_batches`: it builds the train loader before a
    resumed run's loader state is restored, and that loader would start its epoch again)."""
    return planned_length(cfg, trainer, epoch_batches(trainer.datamodule, trainer.world_size))[0]
