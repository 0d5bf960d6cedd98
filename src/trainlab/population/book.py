"""Each member of a population as a first-class trial: its own MLflow run, its own best.ckpt and
last.ckpt (ordinary single-model checkpoints), its own Optuna trial with per-epoch reports and pruning.

`MemberBook` is a Lightning callback of the population's trainer; it runs before the population's own
checkpoint callback, so a population checkpoint always holds the book as of the same epoch.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from trainlab.atomic import write_atomically
from trainlab.tracking import Tracker

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

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def score(self, objective: str, monitor: str) -> float | None:
        """What a standalone run returns to the sweeper: the best checkpoint's score when the objective
        is the monitored metric, else the objective's latest value (test/* after the final test)."""
        return self.best if objective == monitor else self.metrics.get(objective)

    def result(self, objective: str, monitor: str) -> dict[str, Any]:
        return {
            "state": self.state,
            "value": self.score(objective, monitor),
            "reason": self.reason,
            "error": self.error,
            "run_dir": str(self.run_dir),
        }


def _improves(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


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
        },
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": L.__version__,
    }


class MemberBook(Callback):
    """Logs each member's epoch metrics to its own run, keeps its best and last checkpoints, reports to
    its trial, and takes pruned members out of the population."""

    def __init__(self, members: list[Member], monitor: str, mode: str, objective: str) -> None:
        self.members = members
        self.monitor, self.mode, self.objective = monitor, mode, objective

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

    def _end(self, member: Member, state: str, reason: str | None = None, error: str | None = None) -> None:
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
            logger = member.tracker.lightning_logger
            if logger:
                logger.log_metrics({**metrics, "epoch": float(epoch)}, step)
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
        if pruned:
            module.keep([m for m in module.members if m not in pruned])
        if not module.members:
            trainer.should_stop = True

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
                }
                for m in self.members
            ]
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


def open_members(
    specs: list[Any],
    composed: list[tuple[Any, dict[str, str]]],
    resolved: list[dict[str, Any]],
    common: list[str],
    job_tags: dict[str, str],
    run_dir: Path,
    data_source: str,
    resumed_runs: list[str | None],
) -> list[Member]:
    """A tracker and an MLflow run per member, with the params and tags a standalone run of it gets
    (reopened when the population resumes), filed under the sweep's parent run and linked to its trial."""
    from omegaconf import OmegaConf

    from trainlab.tracking import RunInfo, make_tracker, redact_environment
    from trainlab.trial import current_trial, trial_handle

    link = current_trial()
    members = []
    for index, (spec, (cfg, choices), config) in enumerate(zip(specs, composed, resolved, strict=True)):
        overrides = [o for o in (*common, *spec.overrides) if not o.startswith("paths.")]
        tags = {f"choice.{group}": option for group, option in choices.items()}
        tags.update({k: v for k, v in job_tags.items() if k in ("sweep_dir",)})
        tags.update({"overrides": " ".join(overrides) or "(defaults)", "data.source": data_source})
        tags.update({"population.job": run_dir.name, "population.member": str(index)})
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
        (member_dir / "config.yaml").write_text(config_yaml)
        tracker = make_tracker(cfg.logger)
        name = " ".join(o for o in overrides if not o.startswith("ckpt_path=")) or "defaults"
        tracker.start(public, config_yaml, RunInfo(name, tags, resumed_runs[index], member_dir))
        if trial is not None and tracker.run_id is not None:
            trial.set_user_attr("mlflow_run_id", tracker.run_id)
        members.append(Member(config, member_dir, tracker, trial))
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
    sums = torch.zeros(len(done), 3, device=device)
    for images, labels in datamodule.test_dataloader():
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
def finished(members: list[Member], interrupted: Any = lambda: False) -> Iterator[None]:
    """End every member's run whatever happens: members still training when the population stops are
    COMPLETE (FINISHED); an exception ends them FAILED with its reason, Ctrl-C/SIGTERM or a requeue KILLED."""
    try:
        yield
    except BaseException as err:
        for member in members:
            if member.state != RUNNING:
                continue
            if isinstance(err, KeyboardInterrupt) or interrupted():
                member.tracker.end("KILLED", "interrupted (Ctrl-C or SIGTERM)")
            elif isinstance(err, SystemExit):
                member.tracker.end("KILLED", "preempted: saved and requeued")
            else:
                member.tracker.end("FAILED", f"{type(err).__name__}: {err}"[:5000])
        raise
    for member in members:
        if member.state == RUNNING:
            member.state = COMPLETE
            member.tracker.end("FINISHED")
