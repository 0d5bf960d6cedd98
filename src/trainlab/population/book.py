"""Each member of a population as a first-class trial: its own MLflow run, its own best.ckpt and
last.ckpt (ordinary single-model checkpoints), its own Optuna trial with per-epoch reports and pruning.

`MemberBook` is a Lightning callback of the population's trainer; it runs before the population's own
checkpoint callback, so a population checkpoint always holds the book as of the same epoch.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.run.interrupts import RESUME
from trainlab.tracking.pending import Pending
from trainlab.tracking.provenance import Record
from trainlab.tracking.tracker import RunInfo, Tracker, ending

log = logging.getLogger(__name__)

RUNNING, COMPLETE, PRUNED, FAIL = "RUNNING", "COMPLETE", "PRUNED", "FAIL"


@dataclass
class Member:
    """One trial of the population: its resolved config, where its files go, how it is tracked."""

    config: dict[str, Any]
    run_dir: Path
    tracker: Tracker
    trial: Any = None  # optuna.trial.Trial, inside an Optuna sweep
    state: str = RUNNING
    reason: str | None = None
    error: str | None = None  # the exception a standalone run would have raised (FAIL)
    best: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each metric
    step: int = 0  # the global step of the latest logged metrics
    stopped_early: int | None = None  # the epoch after which early stopping took it out (still COMPLETE)
    opening: tuple[dict[str, Any], str, RunInfo] | None = None  # what opens its run: config, yaml, info

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def open(self, datamodule: Any) -> None:
        """Open (or reopen) its MLflow run, with the params and tags a standalone run of it gets; linked to
        its Optuna trial."""
        from trainlab.data import log_class_names

        self.tracker.start(*self.opening)
        log_class_names(self.tracker, datamodule, self.run_dir)
        if self.trial is not None and self.tracker.run_id is not None:
            self.trial.set_user_attr("mlflow_run_id", self.tracker.run_id)

    def score(self, objective: str, monitor: str) -> float | None:
        """What a standalone run returns to the sweeper: the best checkpoint's score when the objective
        is the monitored metric, else the objective's latest value (test/* after the final test)."""
        return self.best if objective == monitor else self.metrics.get(objective)

    def result(self, objective: str, monitor: str) -> dict[str, Any]:
        """What a standalone run would return, and its final metrics as `trainlab.run.training.Outcome`'s
        (the monitored one at the best checkpoint)."""
        metrics = {**self.metrics, **({monitor: self.best} if self.best is not None else {})}
        return {
            "state": self.state,
            "value": self.score(objective, monitor),
            "reason": self.reason,
            "error": self.error,
            "run_dir": str(self.run_dir),
            "metrics": metrics,
        }


def _improves(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


@dataclass
class Patience:
    """A member's early stopping, Lightning's EarlyStopping rule: an epoch improves when
    value − min_delta > best (max) or value + min_delta < best (min); stop after `patience` epochs in a
    row that do not, or at a value that is not finite."""

    monitor: str
    mode: str
    patience: int
    min_delta: float
    best: float | None = None
    wait: int = 0

    def should_stop(self, value: float) -> bool:
        if not math.isfinite(value):
            return True
        shifted = value - self.min_delta if self.mode == "max" else value + self.min_delta
        if _improves(shifted, self.best, self.mode):
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def why(self) -> str:
        return (
            f"{self.monitor} did not improve by more than {self.min_delta:g} for {self.patience} "
            f"validations (best {self.best:.4g})"
        )


def member_checkpoint(module: Any, row: int, member: Member, epoch: int, global_step: int) -> dict[str, Any]:
    """Member `row`'s weights as a standalone run's Lightning checkpoint: `Classifier.load_from_checkpoint`
    (weights_only) opens it as an ordinary single model."""
    state = {f"model.{name}": value for name, value in module.net.member_state(row).items()}
    return {
        "state_dict": state,
        "hyper_parameters": {
            "config": member.config,
            "image_shape": tuple(module.image_shape),
            "num_classes": module.num_classes,
            "class_names": module.class_names,
        },
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": L.__version__,
    }


class MemberBook(Callback):
    """Logs each member's epoch metrics to its own run, keeps its best and last checkpoints, reports to
    its trial, and takes pruned members out of the population. A group's members (trainlab.repeats) share
    one `trial` instead: it is told their mean objective each epoch, and pruning it stops them all."""

    def __init__(
        self,
        members: list[Member],
        monitor: str,
        mode: str,
        objective: str,
        early_stopping: dict[str, Any] | None = None,
        trial: Any = None,
    ) -> None:
        self.members = members
        self.trial = trial
        self.pending = Pending()  # the members' epoch metrics, sent every few seconds
        self.monitor, self.mode, self.objective = monitor, mode, objective
        # One Patience per member when callbacks.early_stopping is on (its numbers are shared).
        self.patience = (
            [
                Patience(
                    early_stopping["monitor"],
                    early_stopping["mode"],
                    early_stopping["patience"],
                    float(early_stopping["min_delta"]),
                )
                for _ in members
            ]
            if early_stopping and early_stopping.get("enabled")
            else None
        )

    def diverged(self, module: Any, values: dict[int, float]) -> None:
        for index, value in values.items():
            member = self.members[index]
            lr = member.config["optimizer"]["lr"]
            self._end(
                member,
                FAIL,
                f"train/loss became {value} at step {module.global_step} (epoch "
                f"{module.current_epoch}); lower optimizer.lr={lr} or add a norm layer",
                error="Diverged",
            )

    def _logger(self, index: int | None) -> Any:
        return self.members[index].tracker.lightning_logger

    def _end(self, member: Member, state: str, reason: str | None = None, error: str | None = None) -> None:
        self.pending.flush(self._logger, force=True, key=self.members.index(member))
        member.state, member.reason, member.error = state, reason, error
        status = {COMPLETE: "FINISHED", PRUNED: "KILLED", FAIL: "FAILED"}[state]
        member.tracker.end(status, f"{error}: {reason}" if error else reason)
        log.info("Member %s: %s%s", member.run_dir.name, state, f" ({reason})" if reason else "")

    def on_train_epoch_end(self, trainer: L.Trainer, module: Any) -> None:
        values = {**module.epoch_metrics("train"), **module.epoch_metrics("val")}
        step, epoch = trainer.global_step, trainer.current_epoch
        pruned = []
        for row, index in enumerate(module.members):
            member = self.members[index]
            metrics = {key: float(value[row]) for key, value in values.items()}
            member.metrics.update(metrics)
            self.pending.add(
                index, [*((k, v, step) for k, v in metrics.items()), ("epoch", float(epoch), step)]
            )
            member.step = step
            member.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            checkpoint = io.BytesIO()
            torch.save(member_checkpoint(module, row, member, epoch, step), checkpoint)
            monitored = metrics.get(self.monitor)
            if monitored is not None and _improves(monitored, member.best, self.mode):
                member.best = monitored
                write_atomically(member.checkpoint_dir / "best.ckpt", checkpoint.getbuffer())
            write_atomically(member.checkpoint_dir / "last.ckpt", checkpoint.getbuffer())
            if member.trial is not None and self.objective in metrics:
                member.trial.report(metrics[self.objective], step=epoch)
                if member.trial.should_prune():
                    reason = f"pruned after epoch {epoch}: {self.objective}={metrics[self.objective]:.4g}"
                    self._end(member, PRUNED, reason)
                    pruned.append(index)
                    continue
            if self.patience and self.patience[index].should_stop(metrics[self.patience[index].monitor]):
                # It leaves the population as a pruned member does, but its trial completes with its best.
                member.stopped_early = epoch
                member.tracker.set_tags({"early_stopping.epoch": str(epoch)})
                log.info(
                    "Member %s: stopped early after epoch %d: %s",
                    member.run_dir.name,
                    epoch,
                    self.patience[index].why(),
                )
                pruned.append(index)
        pruned += self._report_mean(values, module, epoch)
        if pruned:
            module.keep([m for m in module.members if m not in pruned])
        module.step_plateaus(epoch, {m: self.members[m].metrics for m in module.members})
        if not module.members:
            trainer.should_stop = True
        self.pending.flush(self._logger)

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        self.pending.flush(self._logger, force=True)

    def on_exception(self, trainer: L.Trainer, module: Any, exception: BaseException) -> None:
        self.pending.flush(self._logger, force=True)  # before the members' runs end

    def _report_mean(self, values: dict[str, torch.Tensor], module: Any, epoch: int) -> list[int]:
        """The group's trial told the members' mean objective; the members it prunes (all or none)."""
        running = [m for m in module.members if self.members[m].state == RUNNING]
        if self.trial is None or self.objective not in values or not running:
            return []
        rows = [module.members.index(m) for m in running]
        mean = float(values[self.objective][rows].mean())
        self.trial.report(mean, step=epoch)
        if not self.trial.should_prune():
            return []
        for index in running:
            self._end(
                self.members[index],
                PRUNED,
                f"pruned after epoch {epoch}: the mean {self.objective}={mean:.4g}",
            )
        return running

    def state_dict(self) -> dict[str, Any]:
        return {
            "members": [
                {
                    "state": m.state,
                    "reason": m.reason,
                    "error": m.error,
                    "best": m.best,
                    "metrics": m.metrics,
                    "step": m.step,
                    "stopped_early": m.stopped_early,
                }
                for m in self.members
            ],
            "patience": [vars(p) for p in self.patience] if self.patience else None,
            "pending": self.pending.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resuming: the members' records as of the checkpoint; the runs of members that had already
        ended (reopened with the others) end again as they had."""
        for member, saved in zip(self.members, state["members"], strict=True):
            member.state, member.reason, member.best = saved["state"], saved["reason"], saved["best"]
            member.error = saved["error"]
            if member.state != RUNNING:
                self._end(member, member.state, member.reason, member.error)
            member.metrics, member.step = dict(saved["metrics"]), saved["step"]
            member.stopped_early = saved.get("stopped_early")
        if self.patience and state.get("patience"):
            self.patience = [Patience(**saved) for saved in state["patience"]]
        self.pending.load_state_dict(state.get("pending", {}))  # sent with the next points


def members_of(
    specs: list[Any],
    composed: list[tuple[Any, dict[str, str]]],
    resolved: list[dict[str, Any]],
    common: list[str],
    job_tags: dict[str, str],
    run_dir: Path,
    datamodule: Any,
    resumed_runs: list[str | None],
    provenance: Record | None = None,
) -> list[Member]:
    """The population's members, each with its folder, config.yaml, tracker and what opens its run (the
    params and tags a standalone run of it gets, reopened when the population resumes, filed under the
    sweep's parent run and linked to its trial); no run is opened yet (`running`)."""
    from omegaconf import OmegaConf

    from trainlab.data import data_tags
    from trainlab.run.trial import current_trial, trial_handle
    from trainlab.tracking.tracker import make_tracker, redact_environment, run_tags

    link = current_trial()
    members = []
    for index, (spec, (cfg, choices), config) in enumerate(zip(specs, composed, resolved, strict=True)):
        overrides = [o for o in (*common, *spec.overrides) if not o.startswith("paths.")]
        tags = {f"choice.{group}": option for group, option in choices.items()}
        tags.update({k: v for k, v in job_tags.items() if k in ("sweep_dir",) or k.startswith("group.")})
        tags.update(dict(spec.tags))
        if "mlflow.parentRunId" in job_tags:  # a group's run: under the group's parent run
            tags["mlflow.parentRunId"] = job_tags["mlflow.parentRunId"]
        data = datamodule.modules[index] if hasattr(datamodule, "modules") else datamodule  # its own fold
        tags.update({"overrides": " ".join(overrides) or "(defaults)", **data_tags(data)})
        tags.update({"population.job": run_dir.name, "population.member": str(index)})
        tags.update(run_tags(cfg.get("tags")))
        if spec.job_num is not None:
            tags["job_num"] = str(spec.job_num)
        trial = None
        if link is not None and spec.trial_id is not None:
            trial = trial_handle(link.study, spec.trial_id)
            tags.update({"optuna.study": link.study, "optuna.trial": str(trial.number)})
            if link.parent_run_id:
                tags["mlflow.parentRunId"] = link.parent_run_id
        member_dir = run_dir / f"member_{index}"
        member_dir.mkdir(parents=True, exist_ok=True)
        public = redact_environment(config, OmegaConf.to_container(cfg, resolve=False))
        config_yaml = OmegaConf.to_yaml(OmegaConf.create(public))
        write_atomically(member_dir / "config.yaml", config_yaml)
        name = " ".join(o for o in overrides if not o.startswith("ckpt_path=")) or "defaults"
        info = RunInfo(name, tags, resumed_runs[index], member_dir, provenance)
        member = Member(config, member_dir, make_tracker(cfg.logger), trial)
        member.opening = (public, config_yaml, info)
        members.append(member)
    return members


@torch.no_grad()
def test_on_best(members: list[Member], datamodule: Any, device: torch.device) -> None:
    """test/loss and test/acc of every member that completed, each on its own best checkpoint, in one
    vectorised pass over the test set."""
    from trainlab.population.module import build_member_networks
    from trainlab.population.stacked import StackedNetwork

    done = [m for m in members if m.state == RUNNING and (m.checkpoint_dir / "best.ckpt").is_file()]
    if not done:
        return
    networks = build_member_networks([m.config for m in done], datamodule.image_shape, datamodule.num_classes)
    for network, member in zip(networks, done, strict=True):
        state = torch.load(member.checkpoint_dir / "best.ckpt", map_location="cpu", weights_only=True)
        network.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    stacked = StackedNetwork(networks).to(device).eval()
    datamodule.setup("test")  # as `trainer.test` would: a user's DataModule may build its test set here
    sums = torch.zeros(len(done), 3, device=device)
    for images, labels in datamodule.test_dataloader():
        interrupts.check(RESUME)
        images, labels = datamodule.on_after_batch_transfer((images.to(device), labels.to(device)), 0)
        logits = stacked(images)
        losses = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), labels.repeat(len(done)), reduction="none"
        ).view(len(done), -1)
        sums[:, 0] += losses.sum(1)
        sums[:, 1] += (logits.argmax(-1) == labels).sum(1)
        sums[:, 2] += len(labels)
    for row, member in enumerate(done):
        metrics = {
            "test/loss": float(sums[row, 0] / sums[row, 2]),
            "test/acc": float(sums[row, 1] / sums[row, 2]),
        }
        member.metrics.update(metrics)
        logger = member.tracker.lightning_logger
        if logger:
            logger.log_metrics(metrics, member.step)


@contextmanager
def running(members: list[Member], datamodule: Any) -> Iterator[None]:
    """Open every member's run, then end each whatever happens: those still training when the population
    stops are COMPLETE (FINISHED); an error ends them FAILED with its reason, Ctrl-C/SIGTERM or a requeue
    KILLED. A member whose run fails to open ends the others' too: all are open, or none."""
    try:
        for member in members:
            member.open(datamodule)
        yield
    except BaseException as err:
        status, reason = ending(err)
        for member in members:
            if member.state == RUNNING:
                member.tracker.end(status, reason)  # never raises: each member is ended
        raise
    for member in members:
        if member.state == RUNNING:
            member.state = COMPLETE
            member.tracker.end("FINISHED")
