"""The LightningModule of a population: K members of one architecture, trained on the same batches, or
each on its own (a (K, B, …) batch from trainlab.data.members: members that differ in seed or fold).

The objective is the sum of the members' own objectives (cross-entropy + their own penalty), so the
gradient reaching member k's weights is exactly its own. Metrics are kept per member as (K, …) sums.
A member whose loss becomes NaN/inf, or that its pruner cuts, leaves the population: its rows are
dropped from every parameter, buffer and optimiser state, so it stops costing compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from trainlab.augment import build_augmentation
from trainlab.module import Classifier, load_epoch_sums, save_epoch_sums, schedule_length
from trainlab.population.optim import PopulationOptimizer, member_hypers, shared_flags
from trainlab.population.schedules import MemberSchedule, member_schedules, rates
from trainlab.population.stacked import StackedNetwork
from trainlab.regularizers import penalized_weights, zero_fraction


def build_member_networks(
    configs: list[dict[str, Any]], image_shape: tuple[int, ...], num_classes: int
) -> list[nn.Module]:
    """Each member's network, built and initialised exactly as a standalone run of its config builds it
    (`Classifier` after seeding with the member's seed), so member k starts from the same weights."""
    networks = []
    for config in configs:
        L.seed_everything(config["seed"], workers=True, verbose=False)
        networks.append(Classifier(config, image_shape, num_classes).model)
    return networks


class PopulationClassifier(L.LightningModule):
    """`members` (their ids) trained together; `configs[k]` is member k's resolved run config."""

    def __init__(
        self,
        configs: list[dict[str, Any]],
        image_shape: tuple[int, ...],
        num_classes: int,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.configs = configs
        self.members = list(range(len(configs)))  # ids of the members still training, in row order
        self.image_shape, self.num_classes, self.class_names = tuple(image_shape), num_classes, class_names
        self.augmentation = build_augmentation(OmegaConf.create(configs[0]).get("augment"))
        networks = build_member_networks(configs, tuple(image_shape), num_classes)
        self.net = StackedNetwork(networks)
        penalized = {id(w) for w in penalized_weights(networks[0])}
        self.penalized = [name for name, w in networks[0].named_parameters() if id(w) in penalized]
        self.register_buffer("l1", torch.tensor([float(c["regularizer"]["l1"]) for c in configs]))
        self.register_buffer("l2", torch.tensor([float(c["regularizer"]["l2"]) for c in configs]))
        self.uses_penalty = bool(self.l1.any() or self.l2.any())
        self._epoch_sums: dict[str, torch.Tensor] = {}
        self.schedules: dict[int, MemberSchedule] = {}  # by member id, built with the optimiser
        self._schedule_states: dict[int, Any] = {}  # from a checkpoint being resumed
        self._epoch_lr = torch.zeros(len(configs), dtype=torch.float64)
        # Told {member id: objective} when members' objectives become NaN/inf (the book fails their trials).
        self.on_diverged: Callable[[dict[int, float]], None] = lambda values: None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images, per_member=images.dim() == len(self.image_shape) + 2)

    def _own_rows(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch as the members still training see it: of per-member batches ((K, B) labels, one row
        per member the population started with), their rows."""
        images, labels = batch
        if labels.dim() == 2 and len(self.members) < len(labels):
            rows = torch.tensor(self.members, device=labels.device)
            images, labels = images[rows], labels[rows]
        return images, labels

    def _member_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy over its batch: (K,)."""
        k, n = logits.shape[:2]
        targets = labels.flatten() if labels.dim() == 2 else labels.repeat(k)
        return F.cross_entropy(logits.flatten(0, 1), targets, reduction="none").view(k, n).mean(1)

    def _penalties(self) -> torch.Tensor:
        """l1·Σ|w| + (l2/2)·Σw² per member over its affine/conv weights, as `regularizers.weight_penalty`."""
        stacked = self.net.stacked()
        weights = [stacked[name].flatten(1) for name in self.penalized]
        total = torch.zeros_like(self.l1)
        if self.l1.any():
            total = total + self.l1 * sum(w.abs().sum(1) for w in weights)
        if self.l2.any():
            total = total + 0.5 * self.l2 * sum(w.pow(2).sum(1) for w in weights)
        return total

    def _accumulate(
        self, split: str, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor
    ) -> None:
        correct = (logits.detach().argmax(-1) == labels).sum(1)
        n = torch.full_like(losses, labels.shape[-1])
        sums = torch.stack([losses.detach() * n, correct.to(losses.dtype), n], 1)
        previous = self._epoch_sums.get(split)
        self._epoch_sums[split] = sums if previous is None else previous.to(sums.device) + sums

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if not self.members:  # every member failed earlier in this epoch: nothing left to train
            self.trainer.should_stop = True
            return
        images, labels = self._own_rows(batch)
        epoch = self.current_epoch
        if labels.dim() == 2:  # per-member batches: each member's augmentation from its own seed
            seeds = [self.configs[m]["seed"] for m in self.members]
            augmented = [
                self.augmentation(x, s, epoch, batch_idx) for x, s in zip(images, seeds, strict=True)
            ]
            images = torch.stack(augmented)
        else:  # one batch for all members, augmented from the first member's seed (as the data order is)
            images = self.augmentation(images, self.configs[0]["seed"], epoch, batch_idx)
        logits = self(images)
        losses = self._member_losses(logits, labels)
        self._accumulate("train", logits, labels, losses)
        objective = losses
        if self.uses_penalty:
            penalties = self._penalties()
            self._accumulate_penalty(penalties)
            objective = losses + penalties
        finite = torch.isfinite(objective)
        optimizer = self.optimizers()
        self._epoch_lr = optimizer.param_groups[0]["hypers"][
            "lr"
        ]  # this step's rates: the last one is logged
        self.manual_backward(torch.where(finite, objective, 0).sum())
        if not finite.all():  # those members fail; the others go on with this very step
            rows = (~finite).nonzero().flatten().tolist()
            self.on_diverged({self.members[i]: objective[i].item() for i in rows})
            self.keep([m for i, m in enumerate(self.members) if i not in rows])
        if self.members:
            optimizer.step()
            last = batch_idx + 1 == self.trainer.num_training_batches
            for member in self.members:
                self.schedules[member].after_batch(batch_idx, self.current_epoch, last)
            self.set_rates()
        optimizer.zero_grad()

    def set_rates(self) -> None:
        """The optimiser's per-member `lr` from the members' schedules."""
        self.trainer.optimizers[0].param_groups[0]["hypers"]["lr"] = rates(self.schedules, self.members)

    def step_plateaus(self, epoch: int, metrics: dict[int, dict[str, float]]) -> None:
        """The members' plateau schedules after `epoch`'s validation, each told its own metrics."""
        for member in self.members:
            self.schedules[member].after_validation(epoch, metrics[member])
        self.set_rates()

    def _accumulate_penalty(self, penalties: torch.Tensor) -> None:
        sums = torch.stack([penalties.detach(), torch.ones_like(penalties)], 1)
        previous = self._epoch_sums.get("penalty")
        self._epoch_sums["penalty"] = sums if previous is None else previous.to(sums.device) + sums

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if not self.members:
            return
        images, labels = self._own_rows(batch)
        logits = self(images)
        self._accumulate("val", logits, labels, self._member_losses(logits, labels))

    def epoch_metrics(self, split: str) -> dict[str, torch.Tensor]:
        """{metric: (K,) values} of the split's epoch so far; the next epoch starts from zero."""
        sums = self._epoch_sums.pop(split, None)
        if sums is None:
            return {}
        loss_sum, correct, count = sums.T
        values = {f"{split}/loss": loss_sum / count, f"{split}/acc": correct / count}
        if split == "train":
            values["train/lr"] = self._epoch_lr.to(count)
            penalty = self._epoch_sums.pop("penalty", None)
            values["train/penalty"] = (
                penalty[:, 0] / penalty[:, 1] if penalty is not None else torch.zeros_like(count)
            )
        else:  # as a standalone run logs it (trainlab.module), per member
            stacked = self.net.stacked()
            values["weights/zero_fraction"] = zero_fraction([stacked[n].flatten(1) for n in self.penalized])
        return values

    def keep(self, members: list[int]) -> None:
        """Continue with `members` only (a subset of `self.members`): their rows of every parameter,
        buffer, epoch sum and optimiser state."""
        index = self._select(members)
        self._epoch_lr = self._epoch_lr[index]
        for name, sums in self._epoch_sums.items():
            self._epoch_sums[name] = sums[index.to(sums.device)]
        if self._trainer is not None and self.trainer.optimizers:
            self.trainer.optimizers[0].keep(index)

    def _select(self, members: list[int]) -> torch.Tensor:
        index = torch.tensor([self.members.index(m) for m in members], dtype=torch.long)
        self.net.keep(index.to(self.l1.device))
        self.l1, self.l2 = self.l1[index.to(self.l1.device)], self.l2[index.to(self.l1.device)]
        self.members = list(members)
        return index

    def configure_optimizers(self) -> PopulationOptimizer:
        optimizers = [c["optimizer"] for c in self.configs]
        option = optimizers[0]["name"]
        arguments = [{k: v for k, v in o.items() if k != "name"} for o in optimizers]
        hypers = {k: v[self.members] for k, v in member_hypers(option, arguments).items()}
        self.schedules = member_schedules(self.configs, lambda cfg: schedule_length(cfg, self.trainer))
        for member, state in self._schedule_states.items():
            self.schedules[member].load_state_dict(state)
        hypers["lr"] = rates(self.schedules, self.members)  # a warm-up or one-cycle starts below optimizer.lr
        return PopulationOptimizer(self.net.parameters(), option, hypers, shared_flags(arguments))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["population_members"] = list(self.members)
        checkpoint["rng_state"] = torch.get_rng_state()
        checkpoint["member_schedules"] = {m: self.schedules[m].state_dict() for m in self.members}
        save_epoch_sums(checkpoint, self._epoch_sums, self._epoch_lr)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Shrink to the members the checkpoint holds before Lightning loads their tensors."""
        self._select(checkpoint["population_members"])
        torch.set_rng_state(checkpoint["rng_state"])
        self._schedule_states = checkpoint.get("member_schedules", {})  # applied when the schedules are built
        self._epoch_sums, self._epoch_lr = load_epoch_sums(checkpoint, self._epoch_lr)
