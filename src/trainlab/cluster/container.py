"""SLURM jobs inside a container image (`launcher.container`): the runtime's command line that submitit
starts Python with (`apptainer exec … python`), or pyxis's srun flags, and one container start before
anything is submitted to check that the jobs can run in that image.

Why the jobs need what they get inside the container:
- the same absolute paths as here (the project, the sweep folder with submitit's pickles, the data and
  MLflow folders), bound at the same place, since submitit and Hydra pass absolute paths;
- the same Python minor version: the job's function is pickled here by value (cloudpickle), as bytecode;
- this checkout's code first on the import path, so the job runs the code it was submitted with;
- SLURM's environment, its config and munge socket, and `scontrol`, with which a preempted job requeues
  itself (trainlab.cluster.requeue, submitit);
- Python as the process that SLURM signals: Apptainer and Charliecloud exec it in place, pyxis runs it
  as the task, podman's client forwards signals to it.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from trainlab.errors import fail
from trainlab.rules import Rule, check_rules

RUNTIMES = ("apptainer", "singularity", "charliecloud", "podman", "pyxis")
# The program each runtime needs on the submitting machine (pyxis is a plugin of srun).
EXECUTABLES = {"apptainer": "apptainer", "singularity": "singularity", "charliecloud": "ch-run"}
EXECUTABLES |= {"podman": "podman", "pyxis": "srun"}
# What a job imports, checked in the image before submission (found, not imported: a start costs seconds).
NEEDED_MODULES = ("trainlab", "torch", "lightning", "hydra", "submitit", "mlflow")
# podman passes no host environment by default: these reach the job (SLURM's for DDP ranks and requeues).
PODMAN_PASSED = ("SLURM_*", "SUBMITIT_*", "MLFLOW_*", "CUDA_VISIBLE_DEVICES", "USER")
MUNGE_SOCKET_DIRS = (Path("/run/munge"), Path("/var/run/munge"))
PROBE_TIMEOUT = 300.0  # seconds: a first start of a big image on a network file system is slow
IMAGE = "launcher.container.image"

RULES: tuple[Rule, ...] = (
    Rule(
        "launcher.container.runtime",
        RUNTIMES.__contains__,
        f"null or one of {', '.join(RUNTIMES)}",
        optional=True,
    ),
)
IMAGE_RULES: tuple[Rule, ...] = (
    Rule(
        IMAGE,
        lambda v: isinstance(v, str) and bool(v.strip()),
        "the image to run the jobs in: a .sif file (Apptainer), a directory image (Charliecloud), "
        "an image name (podman, pyxis)",
    ),
    Rule(
        "launcher.container.python",
        lambda v: isinstance(v, str) and bool(_words(v)),
        "a command, as a shell reads it (quotes closed): python",
    ),
    Rule(
        "launcher.container.binds",
        lambda v: isinstance(v, list) and all(isinstance(b, str) and b.startswith("/") for b in v),
        "a list of absolute host paths (PATH or PATH:PATH_IN_CONTAINER)",
    ),
)

# Run in the image by the check before submission: what a job would find there.
PROBE = """
import importlib.util, json, shutil, sys
print(json.dumps({
    "python": list(sys.version_info[:3]),
    "missing": [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None],
    "scontrol": shutil.which("scontrol"),
}))
"""


@dataclass(frozen=True)
class Container:
    """How the jobs of one submission start inside `image`."""

    runtime: str
    image: str
    python: str
    binds: tuple[str, ...]  # host paths, `SRC` (same place inside) or `SRC:DST`
    workdir: str
    gpus: bool
    env: dict[str, str] = field(default_factory=dict)  # set inside the container

    def command(self) -> list[str]:
        """The runtime's command line up to and including Python (what submitit's `python` is): the job's
        arguments follow it. Empty for pyxis, whose container is srun's (see `srun_args`)."""
        if self.runtime in ("apptainer", "singularity"):
            cmd = [self.runtime, "exec", *(["--nv"] if self.gpus else []), "--pwd", self.workdir]
            cmd += [arg for bind in self.binds for arg in ("--bind", bind)]
            cmd += [arg for k, v in self.env.items() for arg in ("--env", f"{k}={v}")]
            return [*cmd, self.image, *shlex.split(self.python)]
        if self.runtime == "charliecloud":
            # --set-env alone: the image's own environment (its PATH to its Python), then ours on top.
            # ch-run refuses to start without $USER, which a job has only if its submitter had it.
            user = [] if os.environ.get("USER") else ["env", f"USER={getpass.getuser()}"]
            # --no-passwd: the host's /etc/passwd and /etc/group, bound, instead of ch-run's two users.
            cmd = [*user, "ch-run", "--no-passwd", "--set-env", "-c", self.workdir]
            cmd += [f"--bind={bind}" for bind in self.binds]
            cmd += [f"--set-env={k}={v}" for k, v in self.env.items()]
            return [*cmd, self.image, "--", *shlex.split(self.python)]
        if self.runtime == "podman":
            user = ["--user", "0:0"] if os.geteuid() == 0 else ["--userns", "keep-id"]
            cmd = ["podman", "run", "--rm", "--network", "host", *user, "-w", self.workdir]
            cmd += ["--device", "nvidia.com/gpu=all"] if self.gpus else []
            cmd += [arg for bind in self.binds for arg in ("-v", _podman_volume(bind))]
            cmd += [arg for name in PODMAN_PASSED for arg in ("--env", name)]
            cmd += [arg for k, v in self.env.items() for arg in ("--env", f"{k}={v}")]
            return [*cmd, self.image, *shlex.split(self.python)]
        return shlex.split(self.python)

    def srun_args(self) -> list[str]:
        """pyxis's flags on the job's srun line; none for the other runtimes."""
        if self.runtime != "pyxis":
            return []
        mounts = ",".join(bind if ":" in bind else f"{bind}:{bind}" for bind in self.binds)
        return [
            f"--container-image={self.image}",
            f"--container-mounts={mounts}",
            f"--container-workdir={self.workdir}",
            # pyxis keeps the image's value of a variable unless it is named here.
            f"--container-env={','.join(self.env)}",
        ]

    def setup(self) -> list[str]:
        """Lines of the job's batch script: pyxis takes the variables from the job's own environment."""
        if self.runtime != "pyxis":
            return []
        return [f"export {k}={shlex.quote(v)}" for k, v in self.env.items()]

    def submitit_python(self) -> str:
        """submitit's `python`: the shell words its job script starts Python with."""
        return shlex.join(self.command())


def _words(command: str) -> list[str]:
    """`command` split as a shell would (the job script's line); [] if it cannot be (an unclosed quote)."""
    try:
        return shlex.split(command)
    except ValueError:
        return []


def _podman_volume(bind: str) -> str:
    return bind if ":" in bind else f"{bind}:{bind}"


def _destination(bind: str) -> str:
    return bind.split(":", 1)[1] if ":" in bind else bind


def settings(config: DictConfig) -> DictConfig | None:
    """`launcher.container`, checked; None when the jobs run in this machine's Python."""
    check_rules(config, RULES)
    found = OmegaConf.select(config, "launcher.container")
    if found is None or found.get("runtime") is None:
        return None
    check_rules(config, IMAGE_RULES)
    return found


def from_config(config: DictConfig) -> Container | None:
    """The container the jobs of this sweep config run in, or None."""
    found = settings(config)
    if found is None:
        return None
    runtime, image = found.runtime, str(found.image)
    root = Path(str(config.paths.root_dir)).resolve()
    env = {"TRAINLAB_ROOT": str(root), "TRAINLAB_IMAGE": image, "TRAINLAB_CONTAINER_RUNTIME": runtime}
    code = checkout_source()
    if code is not None:
        env["PYTHONPATH"] = str(code)
    digest = image_digest(runtime, image)
    if digest:
        env["TRAINLAB_IMAGE_DIGEST"] = digest
    needed = [
        root,
        Path.cwd(),
        Path(str(config.hydra.sweep.dir)),
        *data_folders(config),
        *config_folders(config),
    ]
    needed += [code] if code is not None else []
    return Container(
        runtime=runtime,
        image=image,
        python=str(found.python),
        binds=shared_binds(needed, [str(b) for b in found.binds]),
        workdir=str(Path.cwd()),
        gpus=bool(OmegaConf.select(config, "launcher.gpus", default=0)),
        env=env,
    )


def checkout_source() -> Path | None:
    """The folder this trainlab is imported from when it is a source checkout (`src/`), not an installed
    package: the jobs import it from there, so that they run the code they were submitted with."""
    import trainlab

    folder = Path(trainlab.__file__).resolve().parents[1]
    return None if folder.name in ("site-packages", "dist-packages") else folder


def config_folders(config: DictConfig) -> list[Path]:
    """The folders Hydra composes the job's config from (conf/, a --config-dir): the job composes it again."""
    sources = OmegaConf.select(config, "hydra.runtime.config_sources", default=None) or []
    return [Path(source.path) for source in sources if source.schema == "file" and Path(source.path).is_dir()]


def data_folders(config: DictConfig) -> list[Path]:
    """The folders a run reads and writes outside the project: data, the MLflow store (its SQLite file's
    folder when MLFLOW_TRACKING_URI names one). Created here if absent, so that they can be bound; one
    that cannot be, or that this user cannot write, is its key's error (the jobs would fail inside the
    container, one by one)."""
    folders = {"paths.data_dir": config.paths.data_dir, "paths.mlflow_dir": config.paths.mlflow_dir}
    uri = urlparse(os.environ.get("MLFLOW_TRACKING_URI", ""))
    if uri.scheme == "sqlite" and uri.path:  # sqlite:///relative.db, sqlite:////absolute.db
        folders["MLFLOW_TRACKING_URI"] = Path(uri.path[1:]).parent
    allowed = "a folder this user can create and write, to bind into the jobs' containers"
    for key, folder in folders.items():
        try:
            Path(str(folder)).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise fail(key, str(folder), f"{allowed} ({err.strerror})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise fail(key, str(folder), f"{allowed} (this user may not write it)")
    return [Path(str(folder)).resolve() for folder in folders.values()]


def slurm_client_paths() -> list[Path]:
    """What `scontrol requeue` inside a job needs from the host: SLURM's config folder, munge's socket
    folder, and the host's users and groups (it resolves the config's SlurmUser by name)."""
    conf = os.environ.get("SLURM_CONF")
    paths = [Path(conf).resolve().parent if conf else Path("/etc/slurm")]
    paths += [folder for folder in MUNGE_SOCKET_DIRS if folder.is_dir() and not folder.is_symlink()][:1]
    paths += [Path("/etc/passwd"), Path("/etc/group")]
    return [path for path in paths if path.exists()]


def shared_binds(needed: list[Path], extra: list[str]) -> tuple[str, ...]:
    """Each folder bound at its own path once: a folder inside another bound one is left out."""
    paths = sorted({p.resolve() for p in [*needed, *slurm_client_paths()]}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in paths:
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(path)
    return (*(str(path) for path in kept), *(b for b in extra if b not in map(str, kept)))


def image_digest(runtime: str, image: str) -> str | None:
    """The image's id where the runtime gives one (podman); the others name the image only."""
    if runtime != "podman" or shutil.which("podman") is None:
        return None
    found = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True
    )
    return f"sha256:{found.stdout.strip()}" if found.returncode == 0 and found.stdout.strip() else None


def prepare_mount_points(container: Container) -> None:
    """Charliecloud binds only onto folders that exist in the image: make those missing in a directory
    image (empty folders), or say which to make."""
    if container.runtime != "charliecloud" or not Path(container.image).is_dir():
        return
    image = Path(container.image)
    missing = [image / _destination(b).lstrip("/") for b in container.binds]
    missing = [path for path in missing if not path.exists()]
    try:
        for path in missing:
            path.mkdir(parents=True)
    except OSError as err:
        raise fail(
            IMAGE,
            container.image,
            f"a directory image with the folders the jobs bind ({err.strerror}: {err.filename}); make them "
            f"in the image: {' '.join(str(p) for p in missing)}",
        ) from None


def check_image(config: DictConfig, container: Container) -> None:
    """Start the container once, as a job will, before anything is submitted: the runtime is installed,
    the image starts, has what a job imports, the same Python minor version as this process (the job is
    pickled here), and `scontrol` unless the jobs may not requeue. Raises `ConfigError`."""
    executable = EXECUTABLES[container.runtime]
    if shutil.which(executable) is None:
        allowed = f"a runtime installed on this machine (`{executable}` is not on PATH)"
        raise fail("launcher.container.runtime", container.runtime, allowed)
    if container.runtime == "pyxis":
        return  # pyxis starts containers only inside a job's srun: its first job is the check
    prepare_mount_points(container)
    command = [*container.command(), "-c", PROBE, *NEEDED_MODULES]
    image = container.image
    try:
        probe = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise fail(IMAGE, image, f"an image that starts in {PROBE_TIMEOUT:.0f} s") from None
    lines = probe.stdout.strip().splitlines()
    if probe.returncode != 0 or not lines:
        said = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise fail(IMAGE, image, f"an image {container.runtime} can start ({said})")
    try:
        found = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise fail(IMAGE, image, f"an image whose Python runs ({lines[-1]})") from None
    theirs, ours = tuple(found["python"][:2]), tuple(sys.version_info[:2])
    if theirs != ours:
        version = ".".join(map(str, ours))
        raise fail(
            IMAGE,
            image,
            f"an image whose `{container.python}` is Python {version} like this one (it is "
            f"{'.'.join(map(str, found['python']))}; the jobs are pickled by this Python)",
        )
    if found["missing"]:
        missing = ", ".join(found["missing"])
        raise fail(IMAGE, image, f"an image with trainlab's dependencies ({missing} missing)")
    if found["scontrol"] is None and OmegaConf.select(config, "launcher.max_requeues", default=0):
        raise fail(
            IMAGE,
            image,
            "an image with SLURM's scontrol, which a preempted job requeues itself with: install the "
            "cluster's Slurm client in it (docker/cluster), or set launcher.max_requeues=0",
        )


def check(config: DictConfig) -> None:
    """Everything about `launcher.container` that can be known before submission; raises `ConfigError`."""
    container = from_config(config)
    if container is not None:
        check_image(config, container)
