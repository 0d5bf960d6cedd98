"""The CLI end to end, in a subprocess, on tiny files in the real formats, with a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import TINY, mlflow_runs


def checkpoint_files(root: Path) -> list[Path]:
    return sorted(root.glob("outputs/*/*/checkpoints/*.ckpt")) + sorted(
        root.glob("multirun/*/*/checkpoints/*.ckpt")
    )


def test_training_run_records_everything_in_mlflow(run_cli, mnist_root, tmp_path):
    run_cli(*TINY, "optimizer=adam", "norm=layer", "regularizer=elastic_net")
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "train/acc", "train/penalty", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert key in run.data.metrics, key
    assert run.data.metrics["train/penalty"] > 0
    params = run.data.params
    assert params["optimizer.name"] == "adam" and params["norm.name"] == "layer"
    assert params["regularizer.l1"] == "0.0001" and params["model.hidden"] == "[100, 100, 100, 100]"
    assert not any(key.startswith("paths.") or key == "data.root" for key in params)
    assert not any(str(tmp_path) in value for value in params.values())
    tags = run.data.tags
    assert tags["choice.optimizer"] == "adam" and tags["choice.norm"] == "layer"
    assert tags["data.source"] == "mnist"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
        "checkpoints/best.ckpt"
    ]


def test_checkpoints_load_with_weights_only(run_cli, mnist_root, tmp_path):
    run_cli(*TINY)
    names = {p.name for p in checkpoint_files(tmp_path)}
    assert names == {"best.ckpt", "last.ckpt"}
    for path in checkpoint_files(tmp_path):
        state = torch.load(path, weights_only=True)
        assert state["hyper_parameters"]["config"]["model"]["name"] == "mlp"


def test_same_seed_gives_the_same_metrics_on_cpu(run_cli, mnist_root, tmp_path):
    run_cli(*TINY, "seed=0", "model.dropout=0.3")
    run_cli(*TINY, "seed=0", "model.dropout=0.3")
    first, second = (r.data.metrics for r in mlflow_runs(tmp_path))
    assert first == second


def test_multirun_grid_shares_one_experiment_and_tags_each_variant(run_cli, mnist_root, tmp_path):
    run_cli("-m", *TINY, "model.activation=sigmoid,relu", "init=normal,he")
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    variants = {(r.data.tags["choice.init"], r.data.params["model.activation"]) for r in runs}
    assert variants == {("normal", "sigmoid"), ("normal", "relu"), ("he", "sigmoid"), ("he", "relu")}
    assert len({r.data.tags["sweep_dir"] for r in runs}) == 1
    assert len({r.info.run_name for r in runs}) == 4


def test_cifar10_cnn_with_elastic_net(run_cli, cifar_root, tmp_path):
    run_cli(
        *TINY,
        "data=cifar10",
        "model=cifar_cnn",
        "regularizer=elastic_net",
        "regularizer.l1=1e-4",
        "regularizer.l2=1e-3",
        "data.batch_size=32",
    )
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.params["data.name"] == "cifar10"


def test_missing_cifar10_stops_before_any_run_with_the_folder_to_fill(run_cli, tmp_path):
    result = run_cli(*TINY, "data=cifar10", "model=cifar_cnn", "data.download=false", check=False)
    assert result.returncode == 2
    assert "cifar-10-batches-py" in result.stderr.splitlines()[-1]
    assert mlflow_runs(tmp_path) == []


def test_instance_norm_on_an_mlp_is_a_config_error(run_cli, tmp_path):
    result = run_cli("norm=instance", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: norm=instance does not fit model=mlp")


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        pytest.param(
            ["trainer.accelerator=gpu"],
            "error: trainer.accelerator='gpu': must be one of auto, cpu (the accelerators this machine has) "
            "(Lightning: No supported gpu backend found!)",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU"),
            id="gpu-without-a-gpu",
        ),
        pytest.param(
            ["model=simple_cnn", "model.kernel_size=40"],
            "error: model.kernel_size=40: must be at most 27 (torch: Calculated padded input size per "
            "channel: (28 x 28). Kernel size: (40 x 40). "
            "Kernel size can't be greater than actual input size)",
            id="kernel-larger-than-the-image",
        ),
    ],
)
def test_values_only_lightning_or_torch_can_judge_stop_before_mlflow_and_data(
    run_cli, tmp_path, overrides, line
):
    result = run_cli(*overrides, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == line
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "data").exists()


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    [last] = [p for p in checkpoint_files(root) if p.name == "last.ckpt"]
    return torch.load(last, weights_only=True)["state_dict"]


@pytest.mark.parametrize("model", ["mlp", "simple_cnn"])
def test_resume_from_last_matches_an_uninterrupted_run(run_cli, tmp_path, model):
    from conftest import write_mnist

    common = [
        "trainer.accelerator=cpu",
        "callbacks.progress_bar.refresh_rate=0",
        f"model={model}",
        "model.dropout=0.2",
        "optimizer=adam",
        "data.batch_size=50",
    ]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    for root in (straight, interrupted):
        write_mnist(root / "data")
    run_cli(*common, "trainer.max_epochs=2", root=straight)
    run_cli(*common, "trainer.max_epochs=1", root=interrupted)
    run_cli(*common, "trainer.max_epochs=2", "ckpt_path=last", root=interrupted)

    expected, resumed = final_weights(straight), final_weights(interrupted)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    [run] = mlflow_runs(interrupted)  # one MLflow run, continued
    assert run.info.status == "FINISHED" and run.data.tags.get("resumed") == "true"
    client = MlflowClient(f"sqlite:///{interrupted}/mlruns/mlflow.db")
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2


def test_log_points_sends_a_whole_curve_in_one_store(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger

    from trainlab.tracking.tracker import log_points

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("curves"))
    logger = MLFlowLogger(tracking_uri=uri, run_id=run.info.run_id)
    log_points(logger, [("curve/acc", 0.1 * i, 10 * i) for i in range(1, 1201)])
    history = client.get_metric_history(run.info.run_id, "curve/acc")
    assert [m.step for m in history] == [10 * i for i in range(1, 1201)]

    csv = CSVLogger(tmp_path, name="csv")
    log_points(csv, [("a", 1.0, 0), ("b", 2.0, 0), ("a", 3.0, 5)])
    csv.save()
    assert (Path(csv.log_dir) / "metrics.csv").read_text().count("\n") == 3


def test_a_diverging_run_stops_at_once_and_is_marked_failed(run_cli, mnist_root, tmp_path):
    result = run_cli(*TINY, "optimizer.lr=1e12", "init=normal", "init.std=100", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: train/loss became")
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED"
    assert "Diverged" in run.data.tags["failure_reason"]


def test_a_default_run_prints_one_model_line_and_no_lightning_noise(run_cli, mnist_root):
    """What helps stays (the network's size and cost, the test table); Lightning's summary table (FLOPs
    0), its logging-interval warning for short epochs, the bar's `v_num` and the srun hint go."""
    result = run_cli("trainer.max_epochs=1", "trainer.accelerator=cpu")
    assert (
        "MLP: 109 K parameters, 218 K FLOPs per image forward, 1×28×28 images into 10 classes"
        in result.stdout
    )
    assert "test/acc" in result.stdout
    output = result.stdout + result.stderr
    for noise in ("FLOPs: 0", "Total FLOPs", "Modules in train mode", "logging interval", "v_num", "srun"):
        assert noise not in output, noise
