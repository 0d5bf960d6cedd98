"""What produced a run, so that its result can be reproduced: the code (git commit, a dirty tree and its
diff), the installed packages, the device, the host, the SLURM job and the container.

Collecting it costs ~0.1-0.3 s (git, nvidia-smi, reading every package's metadata):
`Provenance()` runs that in a background thread begun before torch and Lightning are imported, and
`Provenance.collect`
joins it once the run is about to be recorded, so the run starts no later (benchmarks/provenance.py).
Whatever is absent (no git, not a repository, no GPU) is recorded as absent, never an error.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from trainlab.atomic import write_atomically

# This package's source folder: the git repository whose commit the run records.
CODE_DIR = Path(__file__).resolve().parent
TIMEOUT = 10.0  # seconds; a git or nvidia-smi that hangs (a stale network mount) must not hold a run


@dataclass
class Record:
    """A run's provenance as MLflow wants it: params (versions), tags (where and from what code), and
    files kept as artifacts under `provenance/` (name → text)."""

    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        """Into the run's own folder too, whatever the logger (`logger=none` keeps it there only); a
        resumed run's record goes beside the first one's, into `resume_<k>/`, leaving that intact."""
        target, resumes = folder, 0
        while (target / "provenance.json").exists():
            resumes += 1
            target = folder / f"resume_{resumes}"
        target.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            write_atomically(target / name, text)
        # Last: a resumed run that finds it finds the record whole.
        write_atomically(
            target / "provenance.json", json.dumps({"params": self.params, "tags": self.tags}, indent=2)
        )
        return target


def _run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess | str:
    """The finished command, or why it could not run (a one-line reason)."""
    if shutil.which(command[0]) is None:
        return f"unknown ({command[0]} not installed)"
    try:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({command[0]}: {type(err).__name__})"


def git_state(code_dir: Path, record: Record) -> None:
    """`git.commit` (also MLflow's own `mlflow.source.git.commit`, shown on the run's page) and
    `git.dirty`; a dirty tree's `git diff HEAD` (untracked files listed on top) as `git_diff.patch`."""
    head = _run("git", "rev-parse", "HEAD", cwd=code_dir)
    if isinstance(head, str) or head.returncode != 0:
        reason = head if isinstance(head, str) else f"unknown (not a git repository: {code_dir})"
        record.tags["git.commit"] = reason
        return
    commit = head.stdout.strip()
    record.tags.update({"git.commit": commit, "mlflow.source.git.commit": commit})
    status = _run("git", "status", "--porcelain", "--untracked-files=all", cwd=code_dir)
    changes = status.stdout if not isinstance(status, str) else ""
    record.tags["git.dirty"] = str(bool(changes.strip())).lower()
    if changes.strip():
        diff = _run("git", "diff", "HEAD", cwd=code_dir)
        untracked = [line[3:] for line in changes.splitlines() if line.startswith("??")]
        header = "".join(f"# untracked: {name}\n" for name in untracked)
        record.files["git_diff.patch"] = header + (diff.stdout if not isinstance(diff, str) else diff)


def packages() -> str:
    """`pip freeze`'s lines (`name==version`), read from the installed packages' metadata: 0.2 s, where
    running `pip freeze` takes 1 s."""
    found = {(d.metadata["Name"] or "?").lower(): d.version for d in metadata.distributions()}
    return "".join(f"{name}=={version}\n" for name, version in sorted(found.items()))


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpus() -> tuple[str, str]:
    """(the GPUs' names, the NVIDIA driver) from nvidia-smi, which, unlike torch, initialises no CUDA
    context that a forked DDP worker would inherit; or why there are none."""
    found = _run("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader")
    if isinstance(found, str):
        return "none (nvidia-smi not installed)", "none"
    rows = [line.split(", ") for line in found.stdout.strip().splitlines() if ", " in line]
    if found.returncode != 0 or not rows:
        return "none (nvidia-smi found no GPU)", "none"
    return "; ".join(name for name, _ in rows), rows[0][1]


def container() -> str | None:
    """The container image the run is in, where it can be told: $TRAINLAB_IMAGE, Apptainer's image,
    Podman's; Docker tells no image name inside the container."""
    named = os.environ.get("TRAINLAB_IMAGE")
    named = named or os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    if named:
        return named
    podman = Path("/run/.containerenv")
    if podman.exists():
        for line in podman.read_text(errors="replace").splitlines():
            if line.startswith("image="):
                return line.split("=", 1)[1].strip('"')
    return "docker (image not named: set TRAINLAB_IMAGE)" if Path("/.dockerenv").exists() else None


def slurm_job() -> str | None:
    """The SLURM job id; an array task as `<array job>_<task>`, as squeue shows it."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _gather(code_dir: Path, record: Record) -> None:
    git_state(code_dir, record)
    record.files["requirements.txt"] = packages()
    gpu, driver = gpus()
    record.tags.update({"device.cpu": cpu_model(), "device.gpu": gpu, "device.gpu_driver": driver})
    record.tags["host"] = socket.gethostname()
    found = {"slurm.job_id": slurm_job(), "container.image": container()}
    # Set by launcher.container's jobs (trainlab.cluster.container): the runtime, and the image's digest.
    found |= {"container.runtime": os.environ.get("TRAINLAB_CONTAINER_RUNTIME")}
    found |= {"container.digest": os.environ.get("TRAINLAB_IMAGE_DIGEST")}
    record.tags.update({key: value for key, value in found.items() if value})


class Provenance:
    """The background collection of one run's provenance; `collect()` waits for it and adds the versions
    of what the run has imported by then (torch, Lightning, CUDA, cuDNN)."""

    def __init__(self, code_dir: Path = CODE_DIR) -> None:
        self.record = Record()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._gather, args=(code_dir,), daemon=True, name="provenance")
        self.thread.start()

    def _gather(self, code_dir: Path) -> None:
        try:
            _gather(code_dir, self.record)
        except Exception as err:  # provenance must never cost a run: its absence is recorded instead
            self.error = err

    def collect(self) -> Record:
        self.thread.join(TIMEOUT)
        record = self.record
        if self.error is not None or self.thread.is_alive():
            record.tags["provenance.error"] = repr(self.error) if self.error else "timed out"
        record.params.update(versions())
        return record


def versions() -> dict[str, str]:
    """python, torch, Lightning, CUDA and cuDNN versions as params (`none` where there is no CUDA)."""
    found = {"env.python": platform.python_version()}
    torch = sys.modules.get("torch")
    if torch is not None:
        found["env.torch"] = torch.__version__
        found["env.cuda"] = str(torch.version.cuda or "none")
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        found["env.cudnn"] = str(cudnn or "none")
    for name in ("lightning", "mlflow", "optuna"):
        try:
            found[f"env.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
