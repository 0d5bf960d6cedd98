"""One training run from a composed config: validate, load data, train, test the best checkpoint, record.

Everything a user can get wrong is checked before the first MLflow call, so a bad config leaves no run.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.config import validate
from trainlab.run.job import Job, in_sweep, job_context, quiet_lightning

if TYPE_CHECKING:
    import torch

    from trainlab.tracking.tracker import Tracker

log = logging.getLogger(__name__)

# What a run ends with, as a group of repeats summarises it (trainlab.repeats): the monitored metric at
# the best checkpoint, the others at the last epoch, test/* on the best checkpoint.
FINAL_METRICS = ("train/acc", "train/loss", "val/acc", "val/loss", "test/acc", "test/loss")
GAP = "train_test_gap"  # train/acc − test/acc


@dataclass(frozen=True)
class Outcome:
    """A finished run: `cfg.optimized_metric`'s value (one per metric for a list: what a sweeper gets) and
    its final metrics (FINAL_METRICS and GAP, those it logged)."""

    value: float | list[float | None] | None
    metrics: dict[str, float]


def train(cfg: DictConfig, job: Job | None = None) -> Outcome:
    """Train and test one model, in the Hydra job's folder and name or those `job` gives. Ctrl-C or
    SIGTERM stops it at the next batch, saved (trainlab.interrupts), and raises `Interrupted`."""
    with interrupts.cooperative():
        return _train(cfg, job)


def _train(cfg: DictConfig, job: Job | None) -> Outcome:
    from trainlab.tracking.provenance import Provenance

    provenance = Provenance()  # git, packages, devices: read while torch and Lightning import
    validate(cfg)
    quiet_lightning()

    import lightning as L
    import torch
    from hydra.core.hydra_config import HydraConfig
    from lightning.pytorch.utilities import rank_zero_only

    from trainlab.cluster.requeue import check_cluster, requeued_checkpoint
    from trainlab.data import build_datamodule, data_tags, describe_data, example_inputs, log_class_names
    from trainlab.module import Classifier
    from trainlab.run.callbacks import build_callbacks, early_stop, profiler_in
    from trainlab.run.config_tree import config_tree
    from trainlab.run.interrupts import RESUME
    from trainlab.run.resume import find_resume_point, write_record
    from trainlab.scheduler import check_schedule_fits
    from trainlab.tracking.model import network_label
    from trainlab.tracking.tracker import (
        RunInfo,
        Tracker,
        lightning_loggers,
        logs_model,
        make_tracker,
        redact_environment,
        run_tags,
    )

    # Under DDP every process runs this function; only global rank 0 records the run.
    is_rank_zero = rank_zero_only.rank == 0
    tracker = make_tracker(cfg.logger) if is_rank_zero else Tracker(cfg.logger)
    tracker.check()
    if cfg.logger.get("register_model"):  # the name must be free or this network's, before any run
        data = describe_data(cfg.data)
        tracker.check_model_name(network_label(cfg.model, data.image_shape, data.num_classes))

    check_cluster(cfg, in_sweep())
    output_dir, overrides, tags, report = job or job_context()
    tags.update(run_tags(cfg.get("tags")))
    root = Path(cfg.paths.root_dir)
    ckpt_path = cfg.ckpt_path or requeued_checkpoint(output_dir)
    resume = find_resume_point(ckpt_path, output_dir, [root / "outputs", root / "multirun"], overrides)
    resume.check_fits(cfg.trainer.get("max_epochs"))

    seed = cfg.seed if cfg.seed is not None else random.randrange(2**31)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["seed"] = seed
    public = redact_environment(config, OmegaConf.to_container(cfg, resolve=False))
    if is_rank_zero:  # what the run really is, before its data loads (secrets from the environment hidden)
        log.info("%s", config_tree(public, HydraConfig.get().runtime.choices))

    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data, seed)
    tags |= data_tags(datamodule)
    check_schedule_fits(cfg, datamodule)  # a warm-up longer than the run, now it is known
    module = Classifier(config, datamodule.image_shape, datamodule.num_classes, datamodule.class_names)

    config_yaml = OmegaConf.to_yaml(OmegaConf.create(public))
    name = " ".join(o for o in overrides if not o.startswith("ckpt_path=")) or "defaults"
    record = provenance.collect() if is_rank_zero else None
    info = RunInfo(name, tags, resume.mlflow_run_id, resume.run_dir, record)
    interrupts.check()  # stopped while the data loaded: no run was opened

    with tracker.run(public, config_yaml, info):
        if is_rank_zero:
            record.write(resume.run_dir / "provenance")
            write_record(resume, overrides, tracker.run_id, cfg.logger.get("tracking_uri"))
            write_atomically(resume.run_dir / "config.yaml", config_yaml)
            log_class_names(tracker, datamodule, resume.run_dir)
        callbacks = build_callbacks(cfg, resume.checkpoint_dir, report)
        trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
        if trainer_args.get("profiler"):  # its report in the run folder, not only on the console
            trainer_args["profiler"] = profiler_in(trainer_args["profiler"], resume.run_dir)
        trainer = L.Trainer(
            **trainer_args,
            logger=lightning_loggers(tracker, cfg.logger),
            callbacks=callbacks,
            default_root_dir=resume.run_dir,
            enable_progress_bar=bool(cfg.callbacks.progress_bar.refresh_rate),
        )
        # Lightning sets this on import so that finding the GPUs cannot initialise CUDA before a fork. Once
        # the Trainer has chosen its devices it only turns torch's accelerator check, which Adam makes at
        # every step, into an NVML library load (~30 µs a step, 4 % of an MNIST MLP step on 2 cores).
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        interrupts.check(RESUME)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume.checkpoint, weights_only=True)
        # The last epoch's metrics, which the test's replace.
        fitted = {m: float(v) for m, v in trainer.callback_metrics.items() if m in FINAL_METRICS}
        if (stopped := early_stop(callbacks)) is not None:
            log.info("Stopped early after epoch %d: %s", *stopped)
            tracker.set_tags({"early_stopping.epoch": str(stopped[0])})
        best = callbacks[0].best_model_path
        interrupts.check(RESUME)
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        if best and cfg.logger.get("log_checkpoint", False):
            tracker.log_artifact(Path(best), "checkpoints")
        # A group's runs are a sweep's trials: their networks are logged when asked for.
        if best and is_rank_zero and logs_model(cfg.logger, in_sweep() or job is not None):
            log_best_network(tracker, Path(best), example_inputs(datamodule))
        for report in sorted(resume.run_dir.glob("*profile*.txt")):
            tracker.log_artifact(report, "profiler")
    checkpoint = callbacks[0]

    def score(metric: str) -> float | None:
        """The best checkpoint's value of the monitored metric; of any other, its latest (after the test)."""
        value = trainer.callback_metrics.get(metric)
        if metric == checkpoint.monitor and checkpoint.best_model_score is not None:
            value = checkpoint.best_model_score
        return None if value is None else float(torch.as_tensor(value))

    # One metric, or a list of them for a multi-objective sweep: one value each.
    metric = cfg.optimized_metric
    value = score(metric) if isinstance(metric, str) else [score(m) for m in metric]
    tested = {m: v for m in (checkpoint.monitor, "test/acc", "test/loss") if (v := score(m)) is not None}
    return Outcome(value, final_metrics(fitted | tested))


def final_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """FINAL_METRICS of a run's `metrics`, and GAP = train/acc − test/acc."""
    finals = {m: float(v) for m, v in metrics.items() if m in FINAL_METRICS}
    if "train/acc" in finals and "test/acc" in finals:
        finals[GAP] = finals["train/acc"] - finals["test/acc"]
    return finals


def log_best_network(tracker: Tracker, checkpoint: Path, examples: torch.Tensor) -> None:
    """The best checkpoint's network as the run's MLflow model, with `examples` (a few test images as the
    network takes them, `trainlab.data.example_inputs`) as its input example. A store that fails here
    costs the model, not the run: the checkpoint is kept
    (`python src/eval.py run_id=... logger.log_model=true` logs it later)."""
    import torch

    from trainlab.module import network_from_checkpoint
    from trainlab.tracking.model import network_label

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = state["hyper_parameters"]
    label = network_label(hparams["config"]["model"], hparams["image_shape"], hparams["num_classes"])
    try:
        tracker.log_model(network_from_checkpoint(state), examples.cpu().numpy(), label)
    except Exception as err:  # MlflowException, a server gone, a full disk: the run itself is done
        log.warning(
            "MLflow model not logged (%s); the checkpoint %s is kept: log it later with "
            "`python src/eval.py run_id=%s logger.log_model=true`",
            str(err).splitlines()[0][:200],
            checkpoint,
            tracker.run_id,
        )
