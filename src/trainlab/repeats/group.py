"""A group of repeats and folds: `repeats=N` trains N runs with seeds seed, seed+1, … (init, dropout masks
and data order all follow the seed), `data.folds=K` trains the K folds, both together N × K runs. Each is
an ordinary run, filed under one MLflow parent run named after the variant, which records every final
metric's mean, standard deviation, count and 95 % confidence interval (trainlab.repeats.stats).

The runs train as ONE population (trainlab.population, each member with its own batches: its seed's
data order, its fold) where a population can run them, else one after another. The group returns the
mean of `optimized_metric`, so a sweep optimises a robust value; in an Optuna trial the trial is told the
mean each epoch (in a population the members' mean, one after another the running mean of the runs so
far: trainlab.run.trial.MeanReport) and the std becomes a trial attribute. The same command with
`ckpt_path=last` resumes the group: finished runs are kept, the interrupted population or run continues
from its last.ckpt, the others start.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.errors import fail
from trainlab.repeats.stats import Summary, summarize
from trainlab.rules import is_int

log = logging.getLogger(__name__)

GROUP_RECORD = "group.json"
# The overrides a group gives each of its runs itself: they do not name the group or its runs' variant.
_GROUP_KEYS = ("repeats=", "seed=", "data.fold=", "data.folds=", "ckpt_path=")


def is_group(cfg: DictConfig) -> bool:
    """Whether `cfg` asks for several runs: `repeats` > 1, or `data.folds` without one `data.fold`."""
    repeats = cfg.get("repeats")
    folds = OmegaConf.select(cfg, "data.folds", default=None)
    return (is_int(repeats) and repeats > 1) or (
        folds is not None and OmegaConf.select(cfg, "data.fold", default=None) is None
    )


@dataclass(frozen=True)
class Member:
    """One run of the group: its seed and, with folds, the fold that validates."""

    seed: int
    fold: int | None

    @property
    def name(self) -> str:
        return f"seed_{self.seed}" + ("" if self.fold is None else f"_fold_{self.fold}")

    @property
    def overrides(self) -> list[str]:
        return [f"seed={self.seed}", *([] if self.fold is None else [f"data.fold={self.fold}"])]

    def config(self, cfg: DictConfig) -> DictConfig:
        """The group's config as this run's own: its seed and fold, one repeat."""
        child = copy.deepcopy(cfg)
        with open_dict(child):
            child.seed, child.repeats, child.ckpt_path = self.seed, 1, None
            if self.fold is not None:
                child.data.fold = self.fold
        return child


def group_members(cfg: DictConfig, seed: int) -> list[Member]:
    """The N × K runs, repeats outermost: seeds seed … seed+N−1, each over folds 0 … K−1 (or `data.fold`)."""
    folds, fold = cfg.data.get("folds"), cfg.data.get("fold")
    fold_range = list(range(folds)) if folds and fold is None else [fold]
    return [Member(seed + r, f) for r in range(cfg.repeats) for f in fold_range]


def variant_name(cfg: DictConfig, overrides: list[str]) -> str:
    """The parent run's name: an experiment's variant, else the overrides that make the variant."""
    if "variants" in cfg:
        return str(cfg.variant)
    return " ".join(o for o in overrides if not o.lstrip("+~").startswith(_GROUP_KEYS)) or "defaults"


def find_group(ckpt_path: str | None, output_dir: Path, roots: list[Path], overrides: list[str]) -> Path:
    """The group's folder: `output_dir`, or with ckpt_path=last the newest group with the same overrides."""
    from trainlab.run.resume import folders_for, job_overrides

    if ckpt_path is None:
        return output_dir
    found = folders_for(GROUP_RECORD, roots, overrides)
    if not found:
        log.warning(
            "ckpt_path=last: no earlier group with overrides %s; starting afresh", job_overrides(overrides)
        )
        return output_dir
    folder = max(found, key=lambda d: (d / GROUP_RECORD).stat().st_mtime)
    log.info("Resuming the group in %s", folder)
    return folder


def _mean(values: list[Any]) -> float | list[float | None] | None:
    """The members' mean return value (one per objective for a list), None if any is missing."""
    if values and isinstance(values[0], list):
        return [_mean([v[i] for v in values]) for i in range(len(values[0]))]  # type: ignore[misc]
    return None if any(v is None for v in values) else sum(values) / len(values)


def summaries(done: dict[str, dict[str, Any]]) -> dict[str, Summary]:
    """Each final metric (trainlab.run.training.FINAL_METRICS, the gap) over the members that logged it."""
    from trainlab.run.training import FINAL_METRICS, GAP

    values = {n: [m["metrics"][n] for m in done.values() if n in m["metrics"]] for n in (*FINAL_METRICS, GAP)}
    return {name: summarize(found) for name, found in values.items() if found}


def _write_table(path: Path, done: dict[str, dict[str, Any]], stats: dict[str, Summary]) -> None:
    """group.csv: one row per run, then the mean, std, count and CI rows."""
    names = list(stats)
    rows = [[name, *(m["metrics"].get(n, "") for n in names)] for name, m in done.items()]
    for field in ("mean", "std", "count", "low", "high"):
        rows.append([field if field in ("mean", "std", "count") else f"ci95_{field}"])
        rows[-1] += [getattr(stats[n], field) for n in names]
    table = io.StringIO()
    csv.writer(table).writerows([["run", *names], *rows])
    write_atomically(path, table.getvalue())


def _train_together(cfg: DictConfig, members: list[Member], job: Any) -> dict[str, dict[str, Any]]:
    """The group's runs as one population job in `job.output_dir` (resumed from its last.ckpt); each
    run's {value, metrics}. A population whose members failed or were pruned raises what a run would."""
    from trainlab.errors import Diverged
    from trainlab.population.run import train_population
    from trainlab.run.training import final_metrics

    last = job.output_dir / "checkpoints" / "last.ckpt"
    population = copy.deepcopy(cfg)
    with open_dict(population):
        population.ckpt_path = str(last) if last.is_file() else None
        population.population = [
            {"overrides": ["repeats=1", *m.overrides], "tags": {"group.member": m.name}} for m in members
        ]
    results = train_population(population, job)
    if all(r["state"] == "PRUNED" for r in results):
        import optuna

        raise optuna.TrialPruned(results[0]["reason"])
    if failed := [r for r in results if r["state"] != "COMPLETE"]:
        error = Diverged if failed[0].get("error") == "Diverged" else RuntimeError
        raise error(failed[0]["reason"])
    return {
        m.name: {"value": r["value"], "metrics": final_metrics(r["metrics"])}
        for m, r in zip(members, results, strict=True)
    }


def train_group(cfg: DictConfig) -> float | list[float | None] | None:
    """Train the group's runs under one parent run, as one population or one after another; return the
    optimised metric's mean. Ctrl-C or SIGTERM stops the run in training at its next batch, saved, and
    the parent KILLED; `ckpt_path=last` resumes the group."""
    with interrupts.cooperative():
        return _train_group(cfg)


def _train_group(cfg: DictConfig) -> float | list[float | None] | None:
    from trainlab.config import validate
    from trainlab.data import build_datamodule
    from trainlab.population.members import unsupported
    from trainlab.run.job import Job, job_context
    from trainlab.run.resume import ResumePoint, job_overrides, write_record
    from trainlab.run.training import train
    from trainlab.run.trial import MeanReport, current_trial, trial_handle
    from trainlab.tracking.tracker import RunInfo, make_tracker, redact_environment

    validate(cfg, build=False)
    if cfg.ckpt_path not in (None, "last"):
        allowed = '"last" or null with repeats or data.folds (each run resumes from its own last.ckpt)'
        raise fail("ckpt_path", cfg.ckpt_path, allowed)
    job = job_context()
    root = Path(cfg.paths.root_dir)
    folder = find_group(cfg.ckpt_path, job.output_dir, [root / "outputs", root / "multirun"], job.overrides)
    from trainlab.run.resume import read_json

    record = read_json(folder / GROUP_RECORD)
    done: dict[str, dict[str, Any]] = record.get("done", {})
    # seed=null draws the first seed once: a resumed group keeps it.
    seed = cfg.seed if cfg.seed is not None else record.get("seed", random.randrange(2**31))
    members = group_members(cfg, seed)
    configs = [member.config(cfg) for member in members]
    for index, config in enumerate(configs):
        validate(config, build=index == 0)
    if cfg.data.get("folds"):  # enough images of each class for every fold: known once the data is read
        build_datamodule(configs[0].data, seed)

    link = current_trial()
    trial = trial_handle(link.study, link.trial_id) if link and link.trial_id is not None else None

    tags = {**job.tags, "group.repeats": str(cfg.repeats), "group.runs": str(len(members))}
    if cfg.data.get("folds"):
        tags["group.folds"] = str(cfg.data.folds)
    if trial is not None:
        tags |= {"optuna.study": link.study, "optuna.trial": str(trial.number)}
        if link.parent_run_id:
            tags["mlflow.parentRunId"] = link.parent_run_id
    tracker = make_tracker(cfg.logger)
    tracker.check()
    config = OmegaConf.to_container(cfg, resolve=True) | {"seed": seed}
    public = redact_environment(config, OmegaConf.to_container(cfg, resolve=False))
    config_yaml = OmegaConf.to_yaml(OmegaConf.create(public))
    name = variant_name(cfg, job.overrides)

    def save() -> None:
        state = {"overrides": job_overrides(job.overrides), "mlflow_run_id": tracker.run_id, "seed": seed}
        state["done"] = done
        write_atomically(folder / GROUP_RECORD, json.dumps(state, indent=2))

    common = [o for o in job.overrides if not o.lstrip("+~").startswith(_GROUP_KEYS)]
    together = unsupported(configs[0]) is None and cfg.data.name != "custom"
    interrupts.check()
    with tracker.run(public, config_yaml, RunInfo(name, tags, record.get("mlflow_run_id"), folder)):
        if trial is not None and tracker.run_id is not None:
            trial.set_user_attr("mlflow_run_id", tracker.run_id)
        write_record(ResumePoint(folder), job.overrides, tracker.run_id, cfg.logger.get("tracking_uri"))
        save()
        run_tags = {**job.tags, "group.parent": str(tracker.run_id), "group.name": name}
        if tracker.run_id is not None:
            run_tags["mlflow.parentRunId"] = tracker.run_id
        if together and len(done) < len(members):
            log.info("Group %s: %d runs as one population", name, len(members))
            done |= _train_together(cfg, members, Job(folder / "population", job.overrides, run_tags))
            save()
        report = MeanReport() if trial is not None else None
        for member, config in zip(members, configs, strict=True):
            if member.name in done:
                continue
            run_dir = folder / member.name
            last = run_dir / "checkpoints" / "last.ckpt"
            if last.is_file():  # interrupted: this run resumes where it stopped
                with open_dict(config):
                    config.ckpt_path = str(last)
            log.info("Group %s: run %s (%d of %d)", name, member.name, len(done) + 1, len(members))
            member_tags = {**run_tags, "group.member": member.name}
            outcome = train(config, Job(run_dir, [*common, *member.overrides], member_tags, report))
            done[member.name] = {"value": outcome.value, "metrics": outcome.metrics}
            save()
        stats = summaries(done)
        logger = tracker.lightning_logger
        if logger:
            logger.log_metrics({k: v for n, s in stats.items() for k, v in s.metrics(n).items()}, step=0)
            logger.save()
        _write_table(folder / "group.csv", done, stats)
        tracker.log_artifact(folder / "group.csv")
    for metric, summary in stats.items():
        log.info(
            "Group %s: %s = %.4f ± %.4f (95 %% CI [%.4f, %.4f], %d runs)",
            name,
            metric,
            summary.mean,
            summary.std,
            summary.low,
            summary.high,
            summary.count,
        )
    values = [done[m.name]["value"] for m in members]
    if trial is not None and all(isinstance(v, float) for v in values):
        trial.set_user_attr("std", summarize(values).std)
        trial.set_user_attr("runs", len(values))
    return _mean(values)
