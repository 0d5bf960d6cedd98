"""Shared fixtures: tiny data sets written in the real on-disk formats, the CLI in a subprocess, and
configs composed by Hydra exactly as `src/train.py` composes them."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "src" / "train.py"

# A tiny run: few images, one epoch, no progress bar; a test adds what it checks.
TINY = ["trainer.max_epochs=1", "trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]


def learnable_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose class is drawn as a bright band at a class-specific height, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    labels[:10] = np.arange(10)  # every class present, whatever n
    images = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
    band = shape[-2] // 10
    for i, label in enumerate(labels):
        images[i, ..., label * band : (label + 1) * band, :] = 255
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of MNIST's *-ubyte files: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 100) -> Path:
    raw = root / folder / "raw"
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = learnable_images(n, (28, 28), seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 40) -> Path:
    """cifar-10-batches-py/ as torchvision unpacks it: pickled dicts of uint8 rows (3·32·32) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        images, labels = learnable_images(n_test if name == "test_batch" else per_batch, (3, 32, 32), seed)
        entry = {"data": images.reshape(len(images), -1), "labels": labels.tolist(), "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "data")


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path / "data")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TRAINLAB_ROOT")}
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """`python src/train.py ARGS` with the project folder (data, mlruns, outputs) in tmp_path."""

    def run(
        *args: str, root: Path = tmp_path, check: bool = True, timeout: int = 300
    ) -> subprocess.CompletedProcess:
        flags = [a for a in args if a.startswith("-")]  # argparse wants -m before the overrides
        overrides = [a for a in args if not a.startswith("-")]
        cmd = [sys.executable, str(TRAIN), *flags, f"paths.root_dir={root}", *overrides]
        result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=timeout, cwd=root)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    return run


@pytest.fixture
def compose() -> Callable[..., object]:
    """Compose conf/train.yaml with overrides, as the CLI would (Hydra's runtime values included)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            return hydra_compose("train", overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


def mlflow_runs(root: Path, experiment: str = "trainlab") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])
