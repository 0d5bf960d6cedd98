"""The container images the container tests run (built with podman: no Docker daemon here), for
tests/test_docker.py and tests/test_compose.py.

The builds are the ones a user runs, plus options for this machine only: a local Debian base image (no
registry is reachable), the host's CA bundle, and its pip indexes and wheels on the local disk. Layers
are cached, so a rebuild after a code change takes seconds; a machine-wide lock makes test processes
that need the same image take turns (the second finds every layer cached).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO

TRAINLAB_IMAGE = "localhost/trainlab:test"
POSTGRES_IMAGE = "localhost/trainlab-postgres:test"
CLUSTER_IMAGE = "localhost/trainlab-cluster:test"
PYPY_IMAGE = "localhost/trainlab-pypy:test"
CHARLIECLOUD_DIR = Path("/var/tmp/trainlab-charliecloud")
CA = Path("/etc/ssl/certs/ca-certificates.crt")
# Local pip sources on this kind of machine (mounted at the same paths, so file:// URLs keep working).
WHEELS, INDEXES = Path("/opt/wheels"), [Path("/opt/pypi/simple"), Path("/opt/pypi-more/simple")]


@contextmanager
def building() -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / "trainlab-image-builds.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_image() -> str:
    """podman, its settings for this machine, and a local Debian + Python base (docker/ci-setup.sh)."""
    if shutil.which("podman") is None and os.geteuid() != 0:
        pytest.skip("podman is absent and docker/ci-setup.sh must run as root to install it")
    with building():
        result = subprocess.run(
            ["bash", str(REPO / "docker" / "ci-setup.sh")], capture_output=True, text=True, timeout=900
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def torch_requirements() -> str:
    """The torch and torchvision this test runs on: their wheels are on this machine's disk (or pip cache).

    Not the smaller CPU-only torch: PyPI's torchvision is built against the CUDA torch, and a CPU
    torchvision is only on PyTorch's own index, which the build may not reach.
    """
    from importlib.metadata import version

    torch, vision = version("torch").split("+")[0], version("torchvision").split("+")[0]
    return f"torch=={torch} torchvision=={vision}"


def build(tag: str, context: Path, *options: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        pip_conf = Path(folder) / "pip.conf"
        lines = ["[global]", "cert = /etc/host-ca.crt"]
        mounts = [f"{CA}:/etc/host-ca.crt:ro", f"{pip_conf}:/etc/pip.conf:ro"]
        if WHEELS.is_dir():
            lines.append(f"find-links = {WHEELS}")
            mounts.append(f"{WHEELS}:{WHEELS}:ro")
        indexes = [index for index in INDEXES if index.is_dir()]
        if indexes:
            lines.append("extra-index-url = " + " ".join(index.as_uri() for index in indexes))
            mounts += [f"{index.parent}:{index.parent}:ro" for index in indexes]
        pip_conf.write_text("\n".join(lines) + "\n")
        cmd = ["podman", "build", "--network", "host", "-t", tag, *options]
        cmd += [arg for mount in mounts for arg in ("-v", mount)]
        with building():
            result = subprocess.run([*cmd, str(context)], capture_output=True, text=True, timeout=1200)
            # The build before this one lost its tag: its ~7 GB of layers go (the cache keeps what is shared).
            subprocess.run(["podman", "image", "prune", "-f"], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tag


def trainlab_image(base: str) -> str:
    """docker/Dockerfile, the CUDA-capable default a user builds, on the local base."""
    options = ["-f", str(REPO / "docker" / "Dockerfile"), "--build-arg", f"BASE_IMAGE={base}"]
    return build(TRAINLAB_IMAGE, REPO, *options, "--build-arg", f"TORCH_REQUIREMENTS={torch_requirements()}")


def postgres_image(base: str) -> str:
    """docker/postgres: Debian's PostgreSQL behind the official image's variables (no registry here)."""
    return build(POSTGRES_IMAGE, REPO / "docker" / "postgres", "--build-arg", f"BASE_IMAGE={base}")


def cluster_image(trainlab: str) -> str:
    """docker/cluster: the trainlab image with Debian's Slurm client (the test cluster's own Slurm)."""
    return build(CLUSTER_IMAGE, REPO / "docker" / "cluster", "--build-arg", f"IMAGE={trainlab}")


def pypy_image(base: str) -> str:
    """Debian with PyPy 3.9 beside its Python 3.11: a Python of another minor version, to be refused."""
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(
            f"FROM {base}\nRUN apt-get update && apt-get install -y --no-install-recommends pypy3\n"
        )
        return build(PYPY_IMAGE, Path(context))


def charliecloud_directory(image: str) -> str:
    """`image` as Charliecloud's directory image, kept under /var/tmp by the image's id, so that the test
    processes of one machine convert each image once.

    `ch-convert -i podman -o dir` exports the image, adds its environment as /ch/environment, gzips the
    tarball (a step its own source calls needless: 7 GB take ~8 minutes through gzip here) and unpacks
    it. Here the same export and environment go into a plain tarball, and `ch-convert -i tar -o dir`
    unpacks it with Charliecloud's own fix-ups (mount points, permissions).
    """
    found = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    target = CHARLIECLOUD_DIR / found.stdout.strip()[:12]
    with building():
        if not (target / "ch").is_dir():
            CHARLIECLOUD_DIR.mkdir(parents=True, exist_ok=True)
            # Conversions of earlier builds (images without a tag now) go: ~7 GB each, and every code
            # change makes a new image: a machine that ran the suite after six changes had its disk full.
            tagged = podman("images", "-q", "--no-trunc", "--filter", "dangling=false")
            current = {line[:12] for line in tagged.replace("sha256:", "").split()}
            for old in CHARLIECLOUD_DIR.iterdir():
                if old.name not in current:
                    shutil.rmtree(old, ignore_errors=True)
            with tempfile.TemporaryDirectory(dir=CHARLIECLOUD_DIR) as work:
                tarball, env = Path(work) / "image.tar", Path(work) / "environment"
                container = podman("create", "--read-only", image, "/bin/true").strip()
                podman("export", "-o", str(tarball), container)
                podman("rm", container)
                env.write_text(
                    podman("image", "inspect", image, "--format", "{{range .Config.Env}}{{println .}}{{end}}")
                )
                tar = ["tar", "rf", str(tarball), "-b1", "-P", f"--xform=s|{env}|ch/environment|", str(env)]
                subprocess.run(tar, check=True)
                partial = Path(work) / "image"
                convert = ["ch-convert", "-i", "tar", "-o", "dir", str(tarball), str(partial)]
                converted = subprocess.run(convert, capture_output=True, text=True, timeout=1200)
                assert converted.returncode == 0, converted.stderr[-3000:]
                partial.rename(target)
    return str(target)


def podman(*args: str) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout
