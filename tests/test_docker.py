"""The container image: docker/Dockerfile builds (with podman: no Docker daemon here) and trains one epoch
on tiny data mounted from the host, as a non-root user, logging to the mounted MLflow store.

The build is the one a user runs (the CUDA-capable default), plus options for this machine only: a local
Debian base image (no registry is reachable), the host's CA bundle, and its pip indexes and wheels on the
local disk. Layers are cached, so a rebuild after a code change takes seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, mlflow_runs, write_mnist

IMAGE = "localhost/trainlab:test"
CA = Path("/etc/ssl/certs/ca-certificates.crt")
# Local pip sources on this kind of machine (mounted at the same paths, so file:// URLs keep working).
WHEELS, INDEXES = Path("/opt/wheels"), [Path("/opt/pypi/simple"), Path("/opt/pypi-more/simple")]


def torch_requirements() -> str:
    """The torch and torchvision this test runs on: their wheels are on this machine's disk (or pip cache).

    Not the smaller CPU-only torch: PyPI's torchvision is built against the CUDA torch, and a CPU
    torchvision is only on PyTorch's own index, which the build may not reach.
    """
    from importlib.metadata import version

    torch, vision = version("torch").split("+")[0], version("torchvision").split("+")[0]
    return f"torch=={torch} torchvision=={vision}"


@pytest.fixture(scope="module")
def base_image() -> str:
    """podman, its settings for this machine, and a local Debian + Python base (docker/ci-setup.sh)."""
    if shutil.which("podman") is None and os.geteuid() != 0:
        pytest.skip("podman is absent and docker/ci-setup.sh must run as root to install it")
    result = subprocess.run(
        ["bash", str(REPO / "docker" / "ci-setup.sh")], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image(base_image: str, tmp_path_factory) -> str:
    pip_conf = tmp_path_factory.mktemp("pip") / "pip.conf"
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
    cmd = ["podman", "build", "--network", "host", "-f", "docker/Dockerfile", "-t", IMAGE]
    cmd += ["--build-arg", f"BASE_IMAGE={base_image}"]
    cmd += ["--build-arg", f"TORCH_REQUIREMENTS={torch_requirements()}"]
    cmd += [arg for mount in mounts for arg in ("-v", mount)]
    result = subprocess.run([*cmd, "."], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return IMAGE


def test_image_trains_one_epoch_as_a_non_root_user_on_mounted_data_and_logs_to_mlflow(image, tmp_path):
    write_mnist(tmp_path / "data")
    for folder in ("data", "outputs", "mlruns"):
        (tmp_path / folder).mkdir(exist_ok=True)
        os.chmod(tmp_path / folder, 0o777)  # the image's user (uid 1000) writes there
    mounts = [arg for f in ("data", "outputs", "mlruns") for arg in ("-v", f"{tmp_path / f}:/app/{f}")]
    script = (
        "id -u && ls -A /app && echo --- && python src/train.py trainer.max_epochs=1 trainer.accelerator=cpu "
        "callbacks.progress_bar.refresh_rate=0 data.download=false"
    )
    result = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", *mounts, image, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    uid, *listing = result.stdout.split("---")[0].split()
    assert uid == "1000"
    # The project only: no venv, git history, tests or caches copied in (.dockerignore).
    assert set(listing) == {
        "README.md",
        "conf",
        "src",
        "pyproject.toml",
        "data",
        "outputs",
        "mlruns",
        "multirun",
    }
    (run,) = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert "test/acc" in run.data.metrics
    assert list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt"))
