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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


def find_group(
    ckpt_path: str | None,
    output_dir: Path,
    roots: list[Path],
    overrides: list[str],
    record: str = GROUP_RECORD,
) -> Path:
    """The group's folder (or a population of groups', by its `record`): `output_dir`, or with
    ckpt_path=last its own if the same sweep ran there before (a study resumed: trainlab.studies), else the
    newest with the same overrides."""
    from trainlab.run.resume import folders_for, job_overrides, read_json

    if ckpt_path is None:
        return output_dir
    if read_json(output_dir / record).get("overrides") == job_overrides(overrides):
        log.info("Resuming %s", output_dir)
        return output_dir
    found = folders_for(record, roots, overrides)
    if not found:
        log.warning(
            "ckpt_path=last: no earlier group with overrides %s; starting afresh", job_overrides(overrides)
        )
        return output_dir
    folder = max(found, key=lambda d: (d / record).stat().st_mtime)
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
    for statistic in ("mean", "std", "count", "low", "high"):
        rows.append([statistic if statistic in ("mean", "std", "count") else f"ci95_{statistic}"])
        rows[-1] += [getattr(stats[n], statistic) for n in names]
    table = io.StringIO()
    csv.writer(table).writerows([["run", *names], *rows])
    write_atomically(path, table.getvalue())


def _population_entry(member: Member, overrides: list[str], tags: dict[str, str]) -> dict[str, Any]:
    """A group's run as a member of a population job: its overrides on top of the job's, its tags."""
    return {
        "overrides": [*overrides, "repeats=1", *member.overrides],
        "tags": tags | {"group.member": member.name},
    }


def _outcomes(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A group's members' results as one: PRUNED if all were, FAILED (the first failure's reason and
    error) if any failed, else COMPLETE."""
    if all(r["state"] == "PRUNED" for r in results):
        return {"state": "PRUNED", "reason": results[0]["reason"], "error": None}
    if failed := [r for r in results if r["state"] != "COMPLETE"]:
        return {"state": "FAILED", "reason": failed[0]["reason"], "error": failed[0].get("error")}
    return {"state": "COMPLETE", "reason": None, "error": None}


def _raise(outcome: dict[str, Any]) -> None:
    """What a standalone run would have raised, for an outcome that is not COMPLETE."""
    from trainlab.errors import Diverged

    if outcome["state"] == "PRUNED":
        import optuna

        raise optuna.TrialPruned(outcome["reason"])
    if outcome["state"] == "FAILED":
        raise (Diverged if outcome["error"] == "Diverged" else RuntimeError)(outcome["reason"])


def _finished(members: list[Member], results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from trainlab.run.training import final_metrics

    return {
        m.name: {"value": r["value"], "metrics": final_metrics(r["metrics"])}
        for m, r in zip(members, results, strict=True)
    }


@dataclass
class GroupRun:
    """One group on its way: its config, folder, runs, what is done (its record, `group.json`) and the
    tracker of its parent run."""

    cfg: DictConfig
    folder: Path
    overrides: list[str]  # the job's (a variant's) overrides
    tags: dict[str, str]  # the job's tags, and the group's own
    name: str
    seed: int
    members: list[Member]
    configs: list[DictConfig]
    done: dict[str, dict[str, Any]]
    tracker: Any
    resume_run_id: str | None
    outcome: dict[str, Any] = field(
        default_factory=lambda: {"state": "COMPLETE", "reason": None, "error": None}
    )
    stats: dict[str, Summary] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.members)

    def save(self) -> None:
        from trainlab.run.resume import job_overrides

        state = {"overrides": job_overrides(self.overrides), "mlflow_run_id": self.tracker.run_id}
        state |= {"seed": self.seed, "done": self.done}
        write_atomically(self.folder / GROUP_RECORD, json.dumps(state, indent=2))

    def opening(self) -> tuple[dict[str, Any], str, Any]:
        """What opens (or reopens) the parent run: its public config, config.yaml and RunInfo."""
        from trainlab.tracking.tracker import RunInfo, redact_environment

        config = OmegaConf.to_container(self.cfg, resolve=True) | {"seed": self.seed}
        public = redact_environment(config, OmegaConf.to_container(self.cfg, resolve=False))
        info = RunInfo(self.name, self.tags, self.resume_run_id, self.folder)
        return public, OmegaConf.to_yaml(OmegaConf.create(public)), info

    def opened(self) -> None:
        """Once the parent run is open: the folder's records name it."""
        from trainlab.run.resume import ResumePoint, write_record

        write_record(
            ResumePoint(self.folder), self.overrides, self.tracker.run_id, self.cfg.logger.get("tracking_uri")
        )
        self.save()

    def run_tags(self) -> dict[str, str]:
        """The tags of the group's runs: under its parent run."""
        tags = {**self.tags, "group.parent": str(self.tracker.run_id), "group.name": self.name}
        if self.tracker.run_id is not None:
            tags["mlflow.parentRunId"] = self.tracker.run_id
        return tags

    def finish(self) -> dict[str, Summary]:
        """The mean, std and CI of every final metric, logged on the parent run and as group.csv."""
        stats = summaries(self.done)
        logger = self.tracker.lightning_logger
        if logger:
            logger.log_metrics({k: v for n, s in stats.items() for k, v in s.metrics(n).items()}, step=0)
            logger.save()
        _write_table(self.folder / "group.csv", self.done, stats)
        self.tracker.log_artifact(self.folder / "group.csv")
        return stats

    def value(self) -> float | list[float | None] | None:
        return _mean([self.done[m.name]["value"] for m in self.members])


def prepare(cfg: DictConfig, folder: Path, overrides: list[str], tags: dict[str, str]) -> GroupRun:
    """A group's runs, checked, with what its folder's record says is done (a resumed group keeps the
    first seed that `seed=null` drew)."""
    from trainlab.config import validate
    from trainlab.data import build_datamodule
    from trainlab.run.resume import read_json
    from trainlab.tracking.tracker import make_tracker

    validate(cfg, build=False)
    if cfg.ckpt_path not in (None, "last"):
        allowed = '"last" or null with repeats or data.folds (each run resumes from its own last.ckpt)'
        raise fail("ckpt_path", cfg.ckpt_path, allowed)
    record = read_json(folder / GROUP_RECORD)
    seed = cfg.seed if cfg.seed is not None else record.get("seed", random.randrange(2**31))
    members = group_members(cfg, seed)
    configs = [member.config(cfg) for member in members]
    for index, config in enumerate(configs):
        validate(config, build=index == 0)
    if cfg.data.get("folds"):  # enough images of each class for every fold: known once the data is read
        build_datamodule(configs[0].data, seed)
    tags = {**tags, "group.repeats": str(cfg.repeats), "group.runs": str(len(members))}
    if cfg.data.get("folds"):
        tags["group.folds"] = str(cfg.data.folds)
    tracker = make_tracker(cfg.logger)
    tracker.check()
    name = variant_name(cfg, overrides)
    done = record.get("done", {})
    return GroupRun(
        cfg, folder, overrides, tags, name, seed, members, configs, done, tracker, record.get("mlflow_run_id")
    )


def _log_summaries(group: GroupRun, stats: dict[str, Summary]) -> None:
    for metric, summary in stats.items():
        log.info(
            "Group %s: %s = %.4f ± %.4f (95 %% CI [%.4f, %.4f], %d runs)",
            group.name,
            metric,
            summary.mean,
            summary.std,
            summary.low,
            summary.high,
            summary.count,
        )


def train_group(cfg: DictConfig) -> float | list[float | None] | None:
    """Train the group's runs under one parent run, as one population or one after another; return the
    optimised metric's mean. Ctrl-C or SIGTERM stops the run in training at its next batch, saved, and
    the parent KILLED; `ckpt_path=last` resumes the group."""
    with interrupts.cooperative():
        return _train_group(cfg)


def _train_group(cfg: DictConfig) -> float | list[float | None] | None:
    from trainlab.population.members import unsupported
    from trainlab.population.run import train_population
    from trainlab.run.job import Job, job_context
    from trainlab.run.training import train
    from trainlab.run.trial import MeanReport, current_trial, trial_handle

    job = job_context()
    root = Path(cfg.paths.root_dir)
    folder = find_group(cfg.ckpt_path, job.output_dir, [root / "outputs", root / "multirun"], job.overrides)
    link = current_trial()
    trial = trial_handle(link.study, link.trial_id) if link and link.trial_id is not None else None
    tags = dict(job.tags)
    if trial is not None:
        tags |= {"optuna.study": link.study, "optuna.trial": str(trial.number)}
        if link.parent_run_id:
            tags["mlflow.parentRunId"] = link.parent_run_id
    group = prepare(cfg, folder, job.overrides, tags)
    common = [o for o in job.overrides if not o.lstrip("+~").startswith(_GROUP_KEYS)]
    together = unsupported(group.configs[0]) is None and cfg.data.name != "custom"
    interrupts.check()
    with group.tracker.run(*group.opening()):
        if trial is not None and group.tracker.run_id is not None:
            trial.set_user_attr("mlflow_run_id", group.tracker.run_id)
        group.opened()
        run_tags = group.run_tags()
        if together and not group.finished:
            log.info("Group %s: %d runs as one population", group.name, len(group.members))
            population = copy.deepcopy(cfg)
            last = folder / "population" / "checkpoints" / "last.ckpt"
            with open_dict(population):
                population.ckpt_path = str(last) if last.is_file() else None
                population.population = [_population_entry(m, [], {}) for m in group.members]
            results = train_population(population, Job(folder / "population", job.overrides, run_tags))
            _raise(_outcomes(results))
            group.done |= _finished(group.members, results)
            group.save()
        report = MeanReport() if trial is not None else None
        for member, config in zip(group.members, group.configs, strict=True):
            if member.name in group.done:
                continue
            run_dir = folder / member.name
            last = run_dir / "checkpoints" / "last.ckpt"
            if last.is_file():  # interrupted: this run resumes where it stopped
                with open_dict(config):
                    config.ckpt_path = str(last)
            log.info(
                "Group %s: run %s (%d of %d)",
                group.name,
                member.name,
                len(group.done) + 1,
                len(group.members),
            )
            member_tags = {**run_tags, "group.member": member.name}
            outcome = train(config, Job(run_dir, [*common, *member.overrides], member_tags, report))
            group.done[member.name] = {"value": outcome.value, "metrics": outcome.metrics}
            group.save()
        stats = group.finish()
    _log_summaries(group, stats)
    values = [group.done[m.name]["value"] for m in group.members]
    if trial is not None and all(isinstance(v, float) for v in values):
        trial.set_user_attr("std", summarize(values).std)
        trial.set_user_attr("runs", len(values))
    return group.value()


GROUPS_RECORD = "groups.json"


def train_groups(cfg: DictConfig) -> list[dict[str, Any]]:
    """A population job whose members are groups (a grid sweep's variants, each with its repeats and
    folds): every variant's every run trains in ONE population, each variant keeping its folder, its
    parent run and its record, as its own job would. One result per variant, for the sweeper."""
    with interrupts.cooperative():
        return _train_groups(cfg)


def _train_groups(cfg: DictConfig) -> list[dict[str, Any]]:
    from hydra.core.hydra_config import HydraConfig

    from trainlab.population.compose import compose_each
    from trainlab.population.members import member_specs
    from trainlab.population.run import MEMBERS_RECORD, compose_member, train_population
    from trainlab.run.job import Job, job_context
    from trainlab.run.resume import job_overrides, read_json

    job = job_context()
    root = Path(cfg.paths.root_dir)
    roots = [root / "outputs", root / "multirun"]
    folder = find_group(cfg.ckpt_path, job.output_dir, roots, job.overrides, GROUPS_RECORD)
    specs = member_specs(cfg.population)
    common = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+").startswith("population=")]
    variants = [[*common, *spec.overrides] for spec in specs]
    groups = []
    for index, (spec, (variant_cfg, choices)) in enumerate(
        zip(specs, compose_each(variants, compose_member), strict=True)
    ):
        overrides = [o for o in variants[index] if not o.startswith("paths.")]
        tags = {k: v for k, v in job.tags.items() if not k.startswith(("choice.", "job_num"))}
        tags |= {f"choice.{g}": option for g, option in choices.items()}
        tags["overrides"] = " ".join(overrides) or "(defaults)"
        if spec.job_num is not None:
            tags["job_num"] = str(spec.job_num)
        name = str(spec.job_num if spec.job_num is not None else index)
        groups.append(prepare(variant_cfg, folder / name, overrides, tags))
    waiting = [g for g in groups if not g.finished]
    # The population's last.ckpt holds the members of the groups it was training: resumed only for them.
    training = [g.folder.name for g in waiting]
    last = folder / "population" / "checkpoints" / "last.ckpt"
    resumable = last.is_file() and read_json(folder / GROUPS_RECORD).get("training") == training
    record = {"overrides": job_overrides(job.overrides), "groups": [g.folder.name for g in groups]}
    write_atomically(folder / GROUPS_RECORD, json.dumps(record | {"training": training}, indent=2))
    if not resumable:  # another set of members: none of the earlier population's runs is reopened
        (folder / "population" / MEMBERS_RECORD).unlink(missing_ok=True)
    interrupts.check()
    with opened(groups):
        if waiting:
            log.info(
                "%d groups of %d runs as one population", len(waiting), sum(len(g.members) for g in waiting)
            )
            population = copy.deepcopy(cfg)
            with open_dict(population):
                population.ckpt_path = str(last) if resumable else None
                population.population = [
                    _population_entry(m, list(spec.overrides), g.run_tags())
                    for spec, g in zip(specs, groups, strict=True)
                    if not g.finished
                    for m in g.members
                ]
            shared = {k: v for k, v in job.tags.items() if k == "sweep_dir"}
            results = train_population(population, Job(folder / "population", job.overrides, shared))
            for group in waiting:
                mine, results = results[: len(group.members)], results[len(group.members) :]
                group.outcome = _outcomes(mine)
                if group.outcome["state"] == "COMPLETE":
                    group.done |= _finished(group.members, mine)
                    group.save()
    returned = []
    for group in groups:
        complete = group.outcome["state"] == "COMPLETE"
        if complete:
            _log_summaries(group, group.stats)
        value = group.value() if complete else None
        returned.append({**group.outcome, "value": value, "run_dir": str(group.folder), "metrics": {}})
    return returned


@contextmanager
def opened(groups: list[GroupRun]) -> Iterator[None]:
    """Every group's parent run open, then each ended as its group came out: FINISHED with its summary,
    FAILED with its runs' first failure; all KILLED or FAILED when the population stops. All open, or
    none."""
    from trainlab.tracking.tracker import ending

    started: list[GroupRun] = []
    try:
        for group in groups:
            started.append(group)  # before its run opens: a run half-opened is ended too
            group.tracker.start(*group.opening())
            group.opened()
        yield
        for group in groups:
            if group.outcome["state"] == "COMPLETE":
                group.stats = group.finish()
                group.tracker.end("FINISHED")
            else:
                group.tracker.end("FAILED", group.outcome["reason"])
            started.remove(group)
    except BaseException as err:
        for group in started:
            group.tracker.end(*ending(err))
        raise
