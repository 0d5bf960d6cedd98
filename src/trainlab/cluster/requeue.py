"""Clusters: a preempted or timed-out SLURM job saves, requeues and resumes as the same run; DDP jobs and
Hydra sweeps are kept from re-running each other.

SLURM warns a job before it kills it (`#SBATCH --signal=USR1@90`); submitit asks for USR2 instead,
Lightning's SLURMEnvironment listens for USR1. Both mean the same here: at the end of the current step
(`safe_point`) every rank saves `checkpoints/last.ckpt`, the job is requeued (by submitit if it runs the
job, else by `scontrol requeue`) and exits; SLURM restarts it (SLURM_RESTART_COUNT >= 1) in the same
output folder (submitit keeps Hydra's sweep folder), where `requeued_checkpoint` finds that file, so the
run goes on in its own folder and its own MLflow run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from trainlab.errors import fail

log = logging.getLogger(__name__)

# USR1: SLURM's and Lightning's convention; USR2: what submitit asks SLURM to send.
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)

# Strategies whose extra processes re-run the command line (`python src/train.py ...`) unless SLURM
# starts one task per device itself; spawn/fork strategies start them from inside this process.
_RELAUNCHING = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false", "fsdp")


class Preempted(SystemExit):
    """The job was told to stop (SLURM preemption or time limit): its state is saved, and it is requeued."""

    reason = "preempted: saved and requeued"  # the run's failure_reason (trainlab.tracking.tracker.ending)


class RequeueOnSignal(Callback):
    """On SIGUSR1/SIGUSR2: save `checkpoint` at the next `safe_point` (on every rank at once, so
    DDP's collective save cannot deadlock), requeue the job, and exit with `Preempted`.

    The signal only sets a flag: saving inside the handler would catch the optimiser mid-step. The flag is
    reduced across ranks at each step end, since SLURM or a local user may signal only one process.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in REQUEUE_SIGNALS}

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if safe_point(trainer) and trainer.strategy.reduce_boolean_decision(self.asked(), all=False):
            self.stop(trainer)

    def asked(self) -> bool:
        return self.received is not None

    def stop(self, trainer: Any) -> None:
        self.save_and_requeue(trainer)

    def save_and_requeue(self, trainer: Any) -> None:
        """Save `checkpoint` (a collective call under DDP), requeue the job, exit with `Preempted`."""
        signum = self.received or signal.SIGUSR1
        trainer.save_checkpoint(self.checkpoint)
        log.warning(
            "%s: saved %s at step %d", signal.Signals(signum).name, self.checkpoint, trainer.global_step
        )
        code = requeue(self._previous.get(signum)) if trainer.is_global_zero else None
        raise Preempted(128 + signum if code is None else code)


def safe_point(trainer: Any) -> bool:
    """Whether a run may stop at this training batch end: not at an epoch's last batch (unless the epoch
    has one), since Lightning resumes a checkpoint taken there in the next epoch without the validation and
    epoch end it skipped (another best checkpoint; an epoch trained twice when it happens twice). The next
    epoch's first batch end is the next safe point."""
    epoch_ends = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    return not epoch_ends or trainer.num_training_batches == 1


def requeue(previous_handler: Any) -> int | str | None:
    """Requeue this SLURM job: through submitit's own handler when submitit runs the job (it resubmits
    the Hydra job with the same overrides and folder), else with `scontrol requeue`. Returns submitit's
    exit status, if it chose one."""
    if callable(previous_handler):
        try:
            previous_handler(signal.SIGUSR2, None)
        except SystemExit as done:
            return done.code
        return None
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if job is None:
        log.warning("not a SLURM job: not requeued; resume with ckpt_path=last")
        return None
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode:
        log.warning("scontrol requeue %s failed: %s", job, result.stderr.strip())
    return None


def requeued_checkpoint(output_dir: Path) -> str | None:
    """`checkpoints/last.ckpt` of this output folder when SLURM restarted the job into it (a fresh run
    never finds a folder of its own already holding one: folder names carry microseconds)."""
    checkpoint = output_dir / "checkpoints" / "last.ckpt"
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) >= 1 and checkpoint.is_file():
        log.info("SLURM restarted this job: resuming %s", checkpoint)
        return str(checkpoint)
    return None


def check_cluster(cfg: DictConfig, in_sweep: bool) -> None:
    """Refuse DDP that re-runs the command line inside a local `-m` sweep: each extra process would re-run
    the whole sweep (every trial twice). On SLURM (`launcher=slurm`) srun starts one task per device."""
    strategy = cfg.trainer.get("strategy", "auto")
    if in_sweep and strategy in _RELAUNCHING and not os.environ.get("SLURM_NTASKS"):
        raise fail(
            "trainer.strategy",
            strategy,
            "a single-process strategy in a -m sweep run here (DDP's extra processes would re-run "
            "the whole sweep); sweep DDP jobs with launcher=slurm (one srun task per device), "
            "or run them without -m",
        )
