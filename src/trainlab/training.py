"""One training run from a composed config: validate, load data, train, test the best checkpoint, record.

Everything a user can get wrong is checked before the first MLflow call, so a bad config leaves no run.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from trainlab.config import validate
from trainlab.errors import Diverged, UserError

log = logging.getLogger(__name__)


def job_context() -> tuple[Path, list[str], dict[str, str]]:
    """(output folder, the job's overrides, tags naming the job and its group choices) from Hydra."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    # Where files go is the machine's business, not the run's: keep paths out of names and tags. Unresolved,
    # so that `key=${oc.env:TOKEN}` stays that text and the token's value never reaches MLflow.
    task = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
    overrides = [o for o in task if not o.startswith("paths.")]
    tags = {
        f"choice.{group}": str(option)
        for group, option in hydra_cfg.runtime.choices.items()
        if not group.startswith("hydra")
    }
    tags["overrides"] = " ".join(overrides) or "(defaults)"
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        tags["sweep_dir"] = str(Path(hydra_cfg.sweep.dir).name)
        tags["job_num"] = str(hydra_cfg.job.num)
    return Path(hydra_cfg.runtime.output_dir), overrides, tags


def quiet_lightning() -> None:
    """Lightning logs through its own handler as well as Hydra's: print each line once; and keep out a
    deprecation warning of Lightning's own that a user cannot act on."""
    logging.getLogger("lightning.pytorch").propagate = False
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # Metrics are logged once per epoch (trainlab.module), never every `log_every_n_steps`: an epoch
    # shorter than that interval loses nothing.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Lightning's hint to prepend `srun` wherever SLURM is installed: trainlab's way onto SLURM is
    # `launcher=slurm`, and a run on a login node is meant to run there.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system.*")


def train(cfg: DictConfig) -> float | list[float | None] | None:
    """Train and test one model; return `cfg.optimized_metric` (best value; one per metric for a list)."""
    validate(cfg)
    quiet_lightning()

    import lightning as L
    import torch
    from lightning.pytorch.utilities import rank_zero_only

    from trainlab.callbacks import build_callbacks
    from trainlab.cluster import check_cluster, requeued_checkpoint
    from trainlab.data import build_datamodule
    from trainlab.interrupts import graceful_interrupts
    from trainlab.module import Classifier
    from trainlab.resume import find_resume_point, write_record
    from trainlab.tracking import RunInfo, Tracker, make_tracker, redact_environment

    # Under DDP every process runs this function; only global rank 0 records the run.
    is_rank_zero = rank_zero_only.rank == 0
    tracker = make_tracker(cfg.logger) if is_rank_zero else Tracker(cfg.logger)
    tracker.check()

    check_cluster(cfg, _in_sweep())
    output_dir, overrides, tags = job_context()
    root = Path(cfg.paths.root_dir)
    ckpt_path = cfg.ckpt_path or requeued_checkpoint(output_dir)
    resume = find_resume_point(ckpt_path, output_dir, [root / "outputs", root / "multirun"], overrides)

    seed = cfg.seed if cfg.seed is not None else random.randrange(2**31)
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data, seed)
    tags["data.source"] = datamodule.source

    config = OmegaConf.to_container(cfg, resolve=True)
    config["seed"] = seed
    module = Classifier(config, datamodule.image_shape, datamodule.num_classes)

    if is_rank_zero:
        public = redact_environment(config, OmegaConf.to_container(cfg, resolve=False))
        config_yaml = OmegaConf.to_yaml(OmegaConf.create(public))
        name = " ".join(o for o in overrides if not o.startswith("ckpt_path=")) or "defaults"
        tracker.start(public, config_yaml, RunInfo(name, tags, resume.mlflow_run_id, resume.run_dir))
        write_record(resume, overrides, tracker.run_id, cfg.logger.get("tracking_uri"))
        (resume.run_dir / "config.yaml").write_text(config_yaml)

    with graceful_interrupts() as interrupts, tracker.running(lambda: interrupts.received is not None):
        callbacks = build_callbacks(cfg, resume.checkpoint_dir)
        trainer = L.Trainer(
            **OmegaConf.to_container(cfg.trainer, resolve=True),
            logger=tracker.lightning_logger,
            callbacks=callbacks,
            default_root_dir=resume.run_dir,
            enable_progress_bar=bool(cfg.callbacks.progress_bar.refresh_rate),
        )
        # Lightning sets this on import so that finding the GPUs cannot initialise CUDA before a fork. Once
        # the Trainer has chosen its devices it only turns torch's accelerator check, which Adam makes at
        # every step, into an NVML library load (~30 µs a step, 4 % of an MNIST MLP step on 2 cores).
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume.checkpoint, weights_only=True)
        best = callbacks[0].best_model_path
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        if best and cfg.logger.get("log_checkpoint", False):
            tracker.log_artifact(Path(best), "checkpoints")
    checkpoint = callbacks[0]

    def score(metric: str) -> float | None:
        """The best checkpoint's value of the monitored metric; of any other, its latest (after the test)."""
        value = trainer.callback_metrics.get(metric)
        if metric == checkpoint.monitor and checkpoint.best_model_score is not None:
            value = checkpoint.best_model_score
        return None if value is None else float(torch.as_tensor(value))

    # One metric, or a list of them for a multi-objective sweep: one value each.
    metric = cfg.optimized_metric
    return score(metric) if isinstance(metric, str) else [score(m) for m in metric]


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"


# A file that cannot be written: no space, no quota, read-only, no permission.
_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOTDIR)


def main(cfg: DictConfig) -> float | list[dict] | None:
    """`train` (or `train_population` for a job given `population`: K trials at once), with a user
    mistake, an unwritable file or a diverged run reported as one line on stderr and a non-zero exit
    status (2: fix the config, data or disk; 1: training diverged). In a sweep the error is raised
    instead, so the sweeper records the job as failed and decides whether to go on."""
    try:
        if cfg.get("population"):
            from trainlab.population.run import train_population

            return train_population(cfg)
        return train(cfg)
    except (UserError, Diverged, OSError) as err:
        if _in_sweep() or (isinstance(err, OSError) and err.errno not in _STORAGE_ERRORS):
            raise
        if isinstance(err, OSError):
            err = UserError(
                f"cannot write {err.filename or 'a file'}: {err.strerror}; free space or set paths.root_dir "
                "to a writable folder (the previous checkpoints are intact)"
            )
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1 if isinstance(err, Diverged) else 2) from None
