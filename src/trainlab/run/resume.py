"""Find where a run left off: `ckpt_path=last` resumes the newest run started with the same overrides.

Each run writes `run.json` (its overrides and MLflow run id) into its output folder. Resuming
continues in that folder and that MLflow run, so an interrupted run ends as one run, not two.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from trainlab.atomic import write_atomically
from trainlab.errors import CheckpointError, ConfigError, fail

log = logging.getLogger(__name__)

RECORD = "run.json"


@dataclass(frozen=True)
class ResumePoint:
    """The folder a run writes to, the checkpoint to resume from (None: fresh) and its MLflow run."""

    run_dir: Path
    checkpoint: Path | None = None
    mlflow_run_id: str | None = None
    epoch: int = 0  # the checkpoint's epoch

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def check_fits(self, max_epochs: int | None) -> None:
        """Refuse, before any run opens, a resume that `trainer.max_epochs` would end before it starts
        (Lightning says so only once `fit` has begun, with a traceback)."""
        if self.checkpoint is not None and max_epochs not in (None, -1) and self.epoch > max_epochs:
            allowed = (
                f"-1 or an integer >= {self.epoch} to resume {self.checkpoint} (saved in epoch {self.epoch})"
            )
            raise fail("trainer.max_epochs", max_epochs, allowed)


# Overrides that say how far or from where to train, not what: resuming may change them.
_NOT_IDENTITY = ("ckpt_path=", "trainer.max_epochs=", "trainer.max_steps=")


def job_overrides(overrides: list[str]) -> list[str]:
    """The overrides that identify a run: all but where it resumes from and how long it trains."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(_NOT_IDENTITY))


def write_record(
    point: ResumePoint, overrides: list[str], mlflow_run_id: str | None, tracking_uri: str | None
) -> None:
    point.run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "overrides": job_overrides(overrides),
        "mlflow_run_id": mlflow_run_id,
        "tracking_uri": tracking_uri,
    }
    write_atomically(point.run_dir / RECORD, json.dumps(record, indent=2))


def read_json(path: Path) -> dict:
    """A JSON record, or {} where it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_record(run_dir: Path) -> dict:
    return read_json(run_dir / RECORD)


def folders_for(record: str, roots: list[Path], overrides: list[str]) -> list[Path]:
    """The folders under `roots` whose JSON `record` was written for these overrides (a run's, a group's):
    what `ckpt_path=last` may resume."""
    wanted = job_overrides(overrides)
    return [
        found.parent
        for root in roots
        if root.is_dir()
        for found in root.rglob(record)
        if read_json(found).get("overrides") == wanted
    ]


def check_loadable(checkpoint: Path) -> dict:
    """Refuse a checkpoint that is corrupt or would need arbitrary unpickling (code execution) to load;
    return what it holds."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError (unsafe or garbage), EOFError/RuntimeError (truncated), ...
        reason = str(err).splitlines()[0][:200]
        raise CheckpointError(
            f"{checkpoint}: cannot be loaded safely ({type(err).__name__}: {reason}); "
            "delete it (or pass another ckpt_path) — trainlab checkpoints load with weights_only=True"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{checkpoint}: not a Lightning checkpoint (no state_dict); pass another one")
    return state


def find_resume_point(
    ckpt_path: str | None, output_dir: Path, search_roots: list[Path], overrides: list[str]
) -> ResumePoint:
    """Where to train: a fresh `output_dir`, or the run that `ckpt_path` ("last" or a file) points to."""
    if ckpt_path is None:
        return ResumePoint(output_dir)
    if ckpt_path != "last":
        checkpoint = Path(ckpt_path).expanduser().resolve()
        if not checkpoint.is_file():
            raise ConfigError(f"ckpt_path={ckpt_path!r}: no such file; give a .ckpt file or 'last'")
        run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else output_dir
        return _resume_from(run_dir, checkpoint)
    found = folders_for(RECORD, search_roots, overrides)
    candidates = [run_dir for run_dir in found if (run_dir / "checkpoints" / "last.ckpt").is_file()]
    if not candidates:
        log.warning(
            "ckpt_path=last: no earlier run with overrides %s has a last.ckpt; starting afresh",
            job_overrides(overrides),
        )
        return ResumePoint(output_dir)
    run_dir = max(candidates, key=lambda d: (d / "checkpoints" / "last.ckpt").stat().st_mtime)
    log.info("Resuming %s", run_dir / "checkpoints" / "last.ckpt")
    return _resume_from(run_dir, run_dir / "checkpoints" / "last.ckpt")


def _resume_from(run_dir: Path, checkpoint: Path) -> ResumePoint:
    epoch = int(check_loadable(checkpoint).get("epoch") or 0)
    return ResumePoint(run_dir, checkpoint, _read_record(run_dir).get("mlflow_run_id"), epoch)
