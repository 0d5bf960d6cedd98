"""A finished run's best checkpoint, by `ckpt_path=<file>` or `run_id=<MLflow run id>`, and the MLflow
run that records what is done with it.

A run id finds the checkpoint among the run's artifacts (`checkpoints/best.ckpt`, logged by every single
run with `logger.log_checkpoint=true`, the default), on whatever tracking server holds the run; failing
that, in the run's output folder on this machine (`outputs/`, `multirun/`: its run.json, or a
population's population.json, names the run), where population members and runs with
`logger.log_checkpoint=false` keep theirs.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.errors import fail
from trainlab.population.run import MEMBERS_RECORD
from trainlab.run.resume import RECORD, _read_record, check_loadable

CHECKPOINT_ARTIFACT = "checkpoints/best.ckpt"


@dataclass(frozen=True)
class Finished:
    """A loaded checkpoint (`torch.load(..., weights_only=True)`), its network (on the CPU, in eval mode:
    trainlab.module.network_from_checkpoint), what it is, and its MLflow run."""

    state: dict[str, Any]
    network: Any
    source: str  # what was evaluated, for tags and messages
    run_id: str | None = None
    tracking_uri: str | None = None

    @property
    def hparams(self) -> dict[str, Any]:
        return self.state["hyper_parameters"]

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved config, as stored in its checkpoint."""
        return self.hparams["config"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.hparams["image_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.hparams["num_classes"])

    @property
    def class_names(self) -> list[str]:
        """The data's class names where the run recorded them, else the class indices."""
        names = self.hparams.get("class_names")
        return [str(n) for n in names] if names else [str(c) for c in range(self.num_classes)]


def open_finished(
    ckpt_path: str | None, run_id: str | None, tracking_uri: str, search_roots: list[Path]
) -> Finished:
    """The checkpoint that `ckpt_path` or `run_id` (exactly one) names, checked to be a trainlab run's;
    raises ConfigError or CheckpointError (one line each) otherwise."""
    if (ckpt_path is None) == (run_id is None):
        raise fail("run_id", run_id, "an MLflow run id, or else ckpt_path=<a .ckpt file> (one of the two)")
    if ckpt_path is not None:
        path = Path(str(ckpt_path)).expanduser().resolve()
        if not path.is_file():
            raise fail(
                "ckpt_path", ckpt_path, "a checkpoint file (e.g. outputs/<date>/<time>/checkpoints/best.ckpt)"
            )
        found_id, found_uri = _recorded_run(path.parent.parent if path.parent.name == "checkpoints" else path)
        state = check_loadable(path)
        return _checked(state, "ckpt_path", str(ckpt_path), found_id, found_uri or tracking_uri, path.name)
    return _from_run(str(run_id), tracking_uri, search_roots)


def _checked(
    state: dict[str, Any], key: str, value: str, run_id: str | None, uri: str | None, name: str = "best.ckpt"
) -> Finished:
    """`state` (of the file `name`) if it is a trainlab classifier's checkpoint whose weights fit the
    network of its config."""
    from trainlab.module import network_from_checkpoint

    hparams = state.get("hyper_parameters")
    if not isinstance(hparams, dict) or not {"config", "image_shape", "num_classes"} <= hparams.keys():
        raise fail(
            key, value, "a checkpoint of a trainlab run (this one holds no trainlab config: another model)"
        )
    try:
        network = network_from_checkpoint(state)
    # RuntimeError (missing, unexpected or misshapen weights), or a config that no longer builds
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise fail(
            key, value, f"a checkpoint whose weights fit its config's network (another model: {reason})"
        ) from None
    epoch, step = state.get("epoch"), state.get("global_step")
    source = f"{key}={value} ({name}, epoch {epoch}, step {step})"
    return Finished(state, network, source, run_id, uri)


def _recorded_run(run_dir: Path) -> tuple[str | None, str | None]:
    """(MLflow run id, tracking URI) that a run folder records: its run.json, or for a population's member
    folder (`member_<i>`), the population's records one level up."""
    record = _read_record(run_dir)
    if record.get("mlflow_run_id"):
        return record["mlflow_run_id"], record.get("tracking_uri")
    population, _, index = run_dir.name.partition("member_")
    if population == "" and index.isdigit():
        try:
            ids = json.loads((run_dir.parent / MEMBERS_RECORD).read_text())["mlflow_run_ids"]
        except (OSError, ValueError, KeyError):
            return None, None
        if int(index) < len(ids):
            return ids[int(index)], _read_record(run_dir.parent).get("tracking_uri")
    return None, None


def _local_checkpoint(run_id: str, search_roots: list[Path]) -> Path | None:
    """The best.ckpt of the run folder on this machine that records `run_id`, if any."""
    for root in search_roots:
        if not root.is_dir():
            continue
        for record in (*root.rglob(RECORD), *root.rglob(MEMBERS_RECORD)):
            folders = [record.parent, *record.parent.glob("member_*")]
            for folder in folders:
                checkpoint = folder / "checkpoints" / "best.ckpt"
                if _recorded_run(folder)[0] == run_id and checkpoint.is_file():
                    return checkpoint
    return None


def _from_run(run_id: str, tracking_uri: str, search_roots: list[Path]) -> Finished:
    from mlflow.exceptions import MlflowException

    from trainlab.tracking.orphans import reap_orphans
    from trainlab.tracking.store import open_store

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one file: a bar says nothing
    client = open_store(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        reason = str(err.message).splitlines()[0][:160]
        raise fail("run_id", run_id, f"the id of a run in {tracking_uri} ({reason})") from None
    reap_orphans(tracking_uri)  # the store answers: its runs whose process is gone are marked
    names = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    if CHECKPOINT_ARTIFACT in names:
        import mlflow.artifacts

        with tempfile.TemporaryDirectory() as folder:  # the store may be a remote server: fetch a copy
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT, dst_path=folder, tracking_uri=tracking_uri
            )
            state = check_loadable(Path(path))
        return _checked(state, "run_id", run_id, run_id, tracking_uri)
    local = _local_checkpoint(run_id, search_roots)
    if local is None:
        why = run.data.tags.get("failure_reason", "")
        raise fail(
            "run_id",
            run_id,
            f"a run with a checkpoint (this {run.info.status} run has no {CHECKPOINT_ARTIFACT} artifact "
            f"and no run folder under {', '.join(map(str, search_roots))}{': ' + why[:120] if why else ''})",
        )
    return _checked(check_loadable(local), "run_id", run_id, run_id, tracking_uri)
