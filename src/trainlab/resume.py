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
from trainlab.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

RECORD = "run.json"


@dataclass(frozen=True)
class ResumePoint:
    """The folder a run writes to, the checkpoint to resume from (None: fresh) and its MLflow run."""

    run_dir: Path
    checkpoint: Path | None = None
    mlflow_run_id: str | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"


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


def _read_record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def check_loadable(checkpoint: Path) -> None:
    """Refuse a checkpoint that is corrupt or would need arbitrary unpickling (code execution) to load."""
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
    wanted = job_overrides(overrides)
    candidates = [
        record.parent
        for root in search_roots
        if root.is_dir()
        for record in root.rglob(RECORD)
        if (record.parent / "checkpoints" / "last.ckpt").is_file()
        and _read_record(record.parent).get("overrides") == wanted
    ]
    if not candidates:
        log.warning(
            "ckpt_path=last: no earlier run with overrides %s has a last.ckpt; starting afresh", wanted
        )
        return ResumePoint(output_dir)
    run_dir = max(candidates, key=lambda d: (d / "checkpoints" / "last.ckpt").stat().st_mtime)
    log.info("Resuming %s", run_dir / "checkpoints" / "last.ckpt")
    return _resume_from(run_dir, run_dir / "checkpoints" / "last.ckpt")


def _resume_from(run_dir: Path, checkpoint: Path) -> ResumePoint:
    check_loadable(checkpoint)
    return ResumePoint(run_dir, checkpoint, _read_record(run_dir).get("mlflow_run_id"))
