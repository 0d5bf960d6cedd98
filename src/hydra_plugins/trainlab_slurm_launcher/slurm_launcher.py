"""The Hydra launcher of conf/launcher/slurm.yaml: Hydra's submitit SLURM launcher, except that a job that
ends without a result fails its own trial instead of the sweep, 0 GPUs is no GPU request, and the jobs may
run in a container image (`launcher.container`, trainlab.cluster.container)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

log = logging.getLogger(__name__)


class JobLost(RuntimeError):
    """A SLURM job ended without a result: cancelled, out of time or memory, its node lost."""


class SlurmLauncher(SubmititSlurmLauncher):
    """Submits the jobs of a sweep as one SLURM array job and waits for all of them.

    Hydra's own launcher reads the results in order and raises at the first job that has none (SLURM's
    `scancel`, time limit, OOM killer): the results of the others are never read, so an Optuna sweep
    stops with its trials left RUNNING. Here that job's result is a failure naming SLURM's state, which
    the sweeper records (Optuna: that trial FAIL) before it goes on.
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # For 0 GPUs submitit writes `--gpus-per-node=0`, which SLURM files as a GPU request
        # (`TresPerNode=gres:gpu:0`) for any site policy that routes or refuses GPU jobs.
        if not self.params.get("gpus_per_node"):
            self.params["gpus_per_node"] = None

    def _executor(self) -> Any:
        """submitit's executor with this launcher's SLURM settings (and container, if any)."""
        import submitit

        from trainlab.cluster.container import from_config  # here: Hydra imports this module at every start

        assert self.config is not None
        settings = dict(self.params)
        container = from_config(self.config)
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=settings.pop("submitit_folder"),
            slurm_max_num_timeout=settings.pop("max_num_timeout"),
            slurm_python=container.submitit_python() if container else None,
        )
        if container is not None:
            log.info(f"Jobs run in {container.runtime} image {container.image}")
            settings["setup"] = [*(settings.get("setup") or []), *container.setup()]
            settings["srun_args"] = [*(settings.get("srun_args") or []), *container.srun_args()]
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in settings.items()})
        return executor

    def _submit(self, executor: Any, function: Any, *arguments: list[Any]) -> list[Any]:
        """`function` over `arguments` as one array job; sbatch's refusal as one line."""
        import submitit

        from trainlab.errors import Stop, UserError

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            return executor.map_array(function, *arguments)
        except submitit.core.utils.FailedJobError as err:
            # submitit moves a submission's files into the job's folder once sbatch takes it: left at the
            # top, they are this refused submission's.
            for leftover in (sweep_dir / ".submitit").glob("*.*"):
                leftover.unlink(missing_ok=True)
            raise Stop(UserError(f"launcher=slurm: sbatch refused the jobs: {_last_line(err)}")) from None

    def submit_workers(self, worker: Any, count: int) -> str:
        """`worker(i)` for i < count as one array job (all at once: `array_parallelism` is for trials);
        the array's job id."""
        executor = self._executor()
        executor.update_parameters(slurm_array_parallelism=count)
        jobs = self._submit(executor, worker, list(range(count)))
        return str(jobs[0].job_id).split("_")[0]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        executor = self._executor()
        log.info(f"Submitit 'slurm' sweep output dir : {self.config.hydra.sweep.dir}")
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        for number, overrides in zip(numbers, job_overrides, strict=True):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        jobs = self._submit(
            executor,
            self,
            [list(overrides) for overrides in job_overrides],
            ["hydra.sweep.dir"] * len(job_overrides),
            list(numbers),
            [f"job_id_for_{number}" for number in numbers],
            [Singleton.get_state()] * len(job_overrides),
        )
        return [_result(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=True)]


def _last_line(err: BaseException) -> str:
    """sbatch's own reason (its last line: `sbatch: fatal: ...`, `sbatch: error: Batch job submission
    failed: ...`), not submitit's wrapping."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _result(job: Any, overrides: Sequence[str]) -> JobReturn:
    """The job's own JobReturn, or a failed one naming SLURM's state if the job left none."""
    from submitit.core.utils import UncompletedJobError

    try:
        return job.results()[0]
    except UncompletedJobError:
        error = JobLost(f"SLURM job {job.job_id} ended without a result (state: {job.state})")
        log.warning("%s", error)
        return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)
