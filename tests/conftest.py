"""Shared fixtures: tiny data sets written in the real on-disk formats, the CLI in a subprocess, and
configs composed by Hydra exactly as `src/train.py` composes them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import synthetic  # noqa: E402  (benchmarks/ is scripts, not a package)

TRAIN = REPO / "src" / "train.py"

# Under `pytest -n N`, N workers and the CLI processes they start would each run one torch thread per core;
# on a 2-core machine those threads spin against each other (the suite takes ~25 % longer). One each.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# A tiny run: few images, one epoch, no progress bar; a test adds what it checks.
TINY = ["trainer.max_epochs=1", "trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]
# Optuna searches train 4 trials a job by default (populations): a test of what one trial per job does
# (pruning against earlier trials, parallel jobs, failures counted trial by trial) says so.
ONE_TRIAL_PER_JOB = "hydra.sweeper.population=1"


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 100) -> Path:
    """Tiny MNIST-format files (the benchmarks' generator, benchmarks/synthetic.py, at test sizes)."""
    return synthetic.write_mnist(root, n_train, n_test, folder)


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 40) -> Path:
    """Tiny CIFAR-10 batches in torchvision's layout (benchmarks/synthetic.py at test sizes)."""
    return synthetic.write_cifar10(root, per_batch, n_test)


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "data")


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path / "data")


def cli_env(**extra: str) -> dict[str, str]:
    private = ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE", "TRAINLAB_ROOT", "TRAINLAB_UI_URL")
    env = {k: v for k, v in os.environ.items() if k not in private}
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """`python src/train.py ARGS` with the project folder (data, mlruns, outputs) in tmp_path."""

    def run(
        *args: str,
        root: Path = tmp_path,
        check: bool = True,
        timeout: int = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        flags = [a for a in args if a.startswith("-")]  # argparse wants -m before the overrides
        overrides = [a for a in args if not a.startswith("-")]
        cmd = [sys.executable, str(TRAIN), *flags, f"paths.root_dir={root}", *overrides]
        result = subprocess.run(
            cmd, capture_output=True, text=True, env=cli_env(**(env or {})), timeout=timeout, cwd=root
        )
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


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault-injection harness's table (tests/test_faults.py; docs/reliability.md shows it), when its
    tests ran: one row per scenario and fault, from each test's `fault_row` property."""
    reports = [r for kind in ("passed", "failed") for r in terminalreporter.stats.get(kind, [])]
    rows = sorted(value for r in reports for key, value in r.user_properties if key == "fault_row")
    if rows:
        terminalreporter.write_sep("-", "fault-injection harness")
        terminalreporter.write_line("| scenario | fault | write points | faults injected | survived |")
        terminalreporter.write_line("|---|---|---|---|---|")
        for row in rows:
            terminalreporter.write_line(row)
