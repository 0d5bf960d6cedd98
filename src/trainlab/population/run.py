"""One population job: K trials that differ only in hyperparameters, trained as one vectorised model.

The job's config carries `population`: one entry per member with the overrides that make it (on top of
the job's own) and, in an Optuna sweep, its trial id. Each member's config is composed exactly as a
standalone run of it would be, validated, and checked to share everything but the keys a population
may vary (`trainlab.population.members`). Returns one result per member for the sweeper.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from trainlab.atomic import write_atomically
from trainlab.config import validate
from trainlab.population.compose import compose_each
from trainlab.population.members import check_shared, member_specs

log = logging.getLogger(__name__)

MEMBERS_RECORD = "population.json"


def _compose(overrides: list[str]) -> tuple[DictConfig, dict[str, str], dict[str, str]]:
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


def train_population(job_cfg: DictConfig) -> list[dict[str, Any]]:
    """Train the job's members together; one {state, value, reason, run_dir} per member, in order."""
    import lightning as L
    import torch
    from hydra.core.hydra_config import HydraConfig

    from trainlab.callbacks import curves_callback, resume_callbacks
    from trainlab.cluster import requeued_checkpoint
    from trainlab.data import build_datamodule
    from trainlab.interrupts import graceful_interrupts
    from trainlab.population.book import MemberBook, finished, open_members, test_on_best
    from trainlab.population.module import PopulationClassifier
    from trainlab.resume import find_resume_point, write_record
    from trainlab.training import job_context, quiet_lightning
    from trainlab.trial import current_trial

    specs = member_specs(job_cfg.population)
    output_dir, overrides, tags = job_context()
    common = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+").startswith("population=")]
    # Each member's run config as `python src/train.py <common> <its overrides>` composes it.
    composed = compose_each([[*common, *spec.overrides] for spec in specs], _compose)
    configs = [cfg for cfg, _ in composed]
    for index, cfg in enumerate(configs):
        validate(cfg, build=index == 0)
    check_shared(configs)
    first = configs[0]
    quiet_lightning()

    root = Path(first.paths.root_dir)
    ckpt_path = job_cfg.ckpt_path or requeued_checkpoint(output_dir)
    resume = find_resume_point(ckpt_path, output_dir, [root / "outputs", root / "multirun"], overrides)
    link = current_trial()
    if link is not None and link.threads:
        torch.set_num_threads(link.threads)
    # Every member sees the same batches: the data order follows the first member's seed.
    datamodule = build_datamodule(first.data, first.seed)
    resolved = [OmegaConf.to_container(cfg, resolve=True) for cfg in configs]
    module = PopulationClassifier(resolved, datamodule.image_shape, datamodule.num_classes)
    members = open_members(
        specs,
        composed,
        resolved,
        common,
        tags,
        resume.run_dir,
        datamodule.source,
        _resumed_runs(resume.run_dir, len(specs)),
    )
    write_record(resume, overrides, None, first.logger.get("tracking_uri"))
    runs = {"mlflow_run_ids": [m.tracker.run_id for m in members]}
    write_atomically(resume.run_dir / MEMBERS_RECORD, json.dumps(runs, indent=2))

    checkpoint = first.callbacks.checkpoint
    book = MemberBook(members, checkpoint.monitor, checkpoint.mode, first.optimized_metric)
    module.on_diverged = lambda values: book.diverged(module, values)
    loggers = {index: member.tracker.lightning_logger for index, member in enumerate(members)}
    callbacks = [book, *resume_callbacks(first, resume.checkpoint_dir), *curves_callback(first, loggers)]
    with graceful_interrupts() as interrupts, finished(members, lambda: interrupts.received is not None):
        trainer_args = OmegaConf.to_container(first.trainer, resolve=True)
        trainer_args["enable_model_summary"] = False  # it would list the stacked (K, …) tensors
        trainer = L.Trainer(
            **trainer_args,
            logger=False,
            callbacks=callbacks,
            default_root_dir=resume.run_dir,
            enable_progress_bar=bool(first.callbacks.progress_bar.refresh_rate),
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume.checkpoint, weights_only=True)
        test_on_best(members, datamodule, module.device)
    results = [member.result(first.optimized_metric, checkpoint.monitor) for member in members]
    for index, result in enumerate(results):  # what each trial came to, as a sweep's log would say it
        why = ": ".join(part for part in (result["error"], result["reason"]) if part)
        log.info(
            "member_%d %s: %s=%s %s", index, result["state"], first.optimized_metric, result["value"], why
        )
    return results
