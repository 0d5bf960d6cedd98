"""One population job: K trials that differ only in hyperparameters, trained as one vectorised model.

The job's config carries `population`: one entry per member with the overrides that make it (on top of
the job's own) and, in an Optuna sweep, its trial id. Each member's config is composed exactly as a
standalone run of it would be, validated, and checked to share everything but the keys a population
may vary (`trainlab.population.members`). Returns one result per member for the sweeper. A group of
repeats and folds (trainlab.repeats) trains as a population too, in the folder, under the parent run and
for the Optuna trial that its `Job` gives.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.config import validate
from trainlab.population.compose import compose_each
from trainlab.population.members import check_shared, member_specs

if TYPE_CHECKING:
    from trainlab.run.job import Job

log = logging.getLogger(__name__)

MEMBERS_RECORD = "population.json"


def compose_member(overrides: list[str]) -> tuple[DictConfig, dict[str, str], dict[str, str]]:
    """The run config `python src/train.py <overrides>` composes, and its config-group choices (for
    `compose_each`, which tells groups by them, and for the member's record)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    cfg = compose(HydraConfig.get().job.config_name, overrides=overrides, return_hydra_config=True)
    choices = {g: str(o) for g, o in cfg.hydra.runtime.choices.items() if not g.startswith("hydra")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices, choices


def _resumed_runs(run_dir: Path, size: int) -> list[str | None]:
    """The members' MLflow run ids of the population being resumed in `run_dir` (None: new runs)."""
    try:
        runs = json.loads((run_dir / MEMBERS_RECORD).read_text())["mlflow_run_ids"]
    except (OSError, ValueError, KeyError):
        return [None] * size
    return runs if len(runs) == size else [None] * size


def own_batches(configs: list[DictConfig]) -> bool:
    """Whether members need batches of their own: they differ in seed or fold (the data trainlab batches
    from memory; a custom DataModule's batches are shared)."""
    differ = len({(c.seed, c.data.get("fold")) for c in configs}) > 1
    return differ and configs[0].data.name != "custom"


def train_population(job_cfg: DictConfig, group: Job | None = None) -> list[dict[str, Any]]:
    """Train the job's members together; one {state, value, reason, run_dir, metrics} per member, in
    order. `group`: the members are a group's runs (its folder, overrides, tags and trial report). Ctrl-C
    or SIGTERM stops it at the next batch, saved, every member's run KILLED."""
    with interrupts.cooperative():
        return _train_population(job_cfg, group)


def _train_population(job_cfg: DictConfig, group: Job | None) -> list[dict[str, Any]]:
    from trainlab.tracking.provenance import Provenance

    provenance = Provenance()  # git, packages, devices: read while torch and Lightning import
    import lightning as L
    import torch
    from hydra.core.hydra_config import HydraConfig

    from trainlab.cluster.requeue import requeued_checkpoint
    from trainlab.data import build_datamodule, build_member_datamodule, describe_data, example_inputs
    from trainlab.population.book import RUNNING, MemberBook, members_of, running, test_on_best
    from trainlab.population.module import PopulationClassifier
    from trainlab.run.callbacks import curves_callback, resume_callbacks
    from trainlab.run.interrupts import RESUME
    from trainlab.run.job import job_context, quiet_lightning
    from trainlab.run.resume import find_resume_point, write_record
    from trainlab.run.training import log_best_network
    from trainlab.run.trial import current_trial, trial_handle
    from trainlab.scheduler import check_schedule_fits
    from trainlab.tracking.model import network_label
    from trainlab.tracking.tracker import logs_model, make_tracker

    specs = member_specs(job_cfg.population)
    output_dir, overrides, tags, _ = group or job_context()
    common = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+").startswith("population=")]
    # Each member's run config as `python src/train.py <common> <its overrides>` composes it.
    composed = compose_each([[*common, *spec.overrides] for spec in specs], compose_member)
    configs = [cfg for cfg, _ in composed]
    for index, cfg in enumerate(configs):
        validate(cfg, build=index == 0)
    check_shared(configs)
    first = configs[0]
    quiet_lightning()
    store = make_tracker(first.logger)
    store.check()  # a server answers; the store's runs whose process is gone are marked
    if first.logger.get("register_model"):  # the name must be free or this network's, before any run
        data = describe_data(first.data)
        store.check_model_name(network_label(first.model, data.image_shape, data.num_classes))

    root = Path(first.paths.root_dir)
    ckpt_path = job_cfg.ckpt_path or requeued_checkpoint(output_dir)
    resume = find_resume_point(ckpt_path, output_dir, [root / "outputs", root / "multirun"], overrides)
    resume.check_fits(first.trainer.get("max_epochs"))
    link = current_trial()
    if link is not None and link.threads:
        torch.set_num_threads(link.threads)
    if own_batches(configs):  # each member its own data order and fold, as its standalone run
        datamodule = build_member_datamodule([c.data for c in configs], [c.seed for c in configs])
    else:  # every member sees the same batches: the data order follows the first member's seed
        datamodule = build_datamodule(first.data, first.seed)
    for cfg in configs:  # a warm-up longer than the run, now that its size is known
        check_schedule_fits(cfg, datamodule)
    resolved = [OmegaConf.to_container(cfg, resolve=True) for cfg in configs]
    shape = (datamodule.image_shape, datamodule.num_classes, datamodule.class_names)
    module = PopulationClassifier(resolved, *shape)
    record = provenance.collect()
    members = members_of(
        specs,
        composed,
        resolved,
        common,
        tags,
        resume.run_dir,
        datamodule,
        _resumed_runs(resume.run_dir, len(specs)),
        record,
    )
    if any(OmegaConf.is_dict(value) for value in first.logger.values()):
        log.warning(
            "logger=[…,tensorboard]: a population job writes no TensorBoard files (its members' metrics "
            "are in their MLflow runs); run the trials as single jobs to see them in TensorBoard"
        )
    checkpoint = first.callbacks.checkpoint
    stopping = OmegaConf.to_container(first.callbacks.get("early_stopping") or {}, resolve=True)
    # A group in an Optuna trial: the members' mean is the trial's, reported and pruned as one.
    trial = trial_handle(link.study, link.trial_id) if group and link and link.trial_id is not None else None
    book = MemberBook(members, checkpoint.monitor, checkpoint.mode, first.optimized_metric, stopping, trial)
    module.on_diverged = lambda values: book.diverged(module, values)
    interrupts.check()  # stopped while the data loaded: no run was opened

    with running(members, datamodule):
        record.write(resume.run_dir / "provenance")
        write_record(resume, overrides, None, first.logger.get("tracking_uri"))
        runs = {"mlflow_run_ids": [m.tracker.run_id for m in members]}
        write_atomically(resume.run_dir / MEMBERS_RECORD, json.dumps(runs, indent=2))
        loggers = {index: member.tracker.lightning_logger for index, member in enumerate(members)}
        callbacks = [book, *resume_callbacks(first, resume.checkpoint_dir), *curves_callback(first, loggers)]
        trainer_args = OmegaConf.to_container(first.trainer, resolve=True)
        trainer_args["enable_model_summary"] = False  # it would list the stacked (K, …) tensors
        trainer = L.Trainer(
            **trainer_args,
            logger=False,
            callbacks=callbacks,
            default_root_dir=resume.run_dir,
            enable_progress_bar=bool(first.callbacks.progress_bar.refresh_rate),
        )
        interrupts.check(RESUME)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume.checkpoint, weights_only=True)
        interrupts.check(RESUME)
        test_on_best(members, datamodule, module.device)
        if logs_model(first.logger, sweep=True):  # asked for: logger.log_model=true or register_model
            for member in members:
                if member.state == RUNNING and (member.checkpoint_dir / "best.ckpt").is_file():
                    best = member.checkpoint_dir / "best.ckpt"
                    log_best_network(member.tracker, best, example_inputs(datamodule))
    results = [member.result(first.optimized_metric, checkpoint.monitor) for member in members]
    for index, result in enumerate(results):  # what each trial came to, as a sweep's log would say it
        why = ": ".join(part for part in (result["error"], result["reason"]) if part)
        log.info(
            "member_%d %s: %s=%s %s", index, result["state"], first.optimized_metric, result["value"], why
        )
    return results
