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
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tag


def trainlab_image(base: str) -> str:
    """docker/Dockerfile, the CUDA-capable default a user builds, on the local base."""
    options = ["-f", str(REPO / "docker" / "Dockerfile"), "--build-arg", f"BASE_IMAGE={base}"]
    return build(TRAINLAB_IMAGE, REPO, *options, "--build-arg", f"TORCH_REQUIREMENTS={torch_requirements()}")


def postgres_image(base: str) -> str:
    """docker/postgres: Debian's PostgreSQL behind the official image's variables (no registry here)."""
    return build(POSTGRES_IMAGE, REPO / "docker" / "postgres", "--build-arg", f"BASE_IMAGE={base}")
