"""The container image: docker/Dockerfile builds (with podman: no Docker daemon here) and trains one epoch
on tiny data mounted from the host, as a non-root user, logging to the mounted MLflow store.

The build is the one a user runs (the CUDA-capable default), with this machine's options (tests/images.py).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import mlflow_runs, write_mnist
from images import base_image, trainlab_image


@pytest.fixture(scope="module")
def image() -> str:
    return trainlab_image(base_image())


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
