"""Per-layer diagnostics (`diagnostics=on`): the vanishing gradient shows in the recorded metrics, the
saturation formulas hold on known inputs, nothing is hooked when off, and the figures come out of a real
MLflow store."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import TINY, TRAIN, cli_env, mlflow_runs, write_mnist
from trainlab.diagnostics import Diagnostics, check_diagnostics, saturation, sigmoid_derivative
from trainlab.errors import ConfigError, UserError
from trainlab.figures.diagnostics import load_run, plot_gradients
from trainlab.figures.diagnostics import main as draw_figures
from trainlab.module import Classifier
from trainlab.run.callbacks import build_callbacks

# 180 training images in batches of 20: steps 0..8 in one epoch, sampled at 0, 4 and 8 (the last).
DIAGNOSED = [*TINY, "diagnostics=on", "diagnostics.every_n_steps=4", "data.batch_size=20"]
DEEP = "model.hidden=[40,40,40]"  # four affine layers


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Two real CLI runs into one store: sigmoid + N(0, 0.01²) and ReLU + He, diagnosed; by activation."""
    root = tmp_path_factory.mktemp("diagnostics")
    write_mnist(root / "data")
    variants = ["model.activation=sigmoid init=normal", "model.activation=relu init=he"]
    for variant in variants:
        cmd = [sys.executable, str(TRAIN), f"paths.root_dir={root}", *DIAGNOSED, DEEP, *variant.split()]
        result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=root, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
    runs = {run.data.params["model.activation"]: run for run in mlflow_runs(root)}
    return root, runs


def first_over_last(client: MlflowClient, run: object, step: int) -> float:
    """Gradient norm of the first affine layer over that of the last (the output layer) at `step`."""
    norms = {
        key: {p.step: p.value for p in client.get_metric_history(run.info.run_id, key)}[step]
        for key in ("grad_norm/layer1", "grad_norm/layer4")
    }
    return norms["grad_norm/layer1"] / norms["grad_norm/layer4"]


def store(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")


def test_sigmoid_with_tiny_normal_init_starves_the_first_layer_of_gradient(sweep):
    root, runs = sweep
    for step in (0, 4, 8):
        assert first_over_last(store(root), runs["sigmoid"], step) < 1e-3


def test_relu_with_he_init_keeps_gradient_norms_of_the_same_order_across_layers(sweep):
    root, runs = sweep
    assert 0.1 < first_over_last(store(root), runs["relu"], 0) < 10


def test_every_layer_is_recorded_at_step_zero_and_every_n_steps(sweep):
    root, runs = sweep
    client = store(root)
    run = runs["relu"]
    for layer in range(1, 5):
        for metric in ("grad_norm", "update_ratio"):
            history = client.get_metric_history(run.info.run_id, f"{metric}/layer{layer}")
            assert [p.step for p in history] == [0, 4, 8], (metric, layer)
            assert all(p.value > 0 for p in history)
    for layer in range(1, 4):  # the hidden layers have an activation; the output layer has none
        for metric in ("act_mean", "act_std", "saturation"):
            assert f"{metric}/layer{layer}" in run.data.metrics
        assert 0 <= run.data.metrics[f"saturation/layer{layer}"] <= 1
    assert "act_std/layer4" not in run.data.metrics


def test_sigmoid_activations_pile_up_at_one_half_with_tiny_init(sweep):
    """The book's activation-distribution experiment: with N(0, 0.01²) every sigmoid outputs ≈ 0.5."""
    root, runs = sweep
    path = store(root).download_artifacts(
        runs["sigmoid"].info.run_id, "diagnostics/activations.json", str(root)
    )
    record = json.loads(Path(path).read_text())
    assert {(h["step"], h["layer"]) for h in record["histograms"]} == {
        (step, f"layer{k}") for step in (0, 8) for k in (1, 2, 3)
    }
    for entry in record["histograms"]:
        counts = torch.tensor(entry["counts"])
        middle = counts[len(counts) // 2 - 2 : len(counts) // 2 + 2].sum()  # the bins within 0.5 ± 0.07
        assert entry["range"] == [0.0, 1.0] and middle / counts.sum() > 0.95
    assert [layer["activation"] for layer in record["layers"]] == ["sigmoid"] * 3 + [None]


def test_report_draws_gradient_and_histogram_pngs_from_the_mlflow_store(sweep, tmp_path):
    root, runs = sweep
    draw_figures(["--tracking-uri", f"sqlite:///{root}/mlruns/mlflow.db", "--out", str(tmp_path)])
    for name in ("gradient_norms.png", "activation_histograms.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size > 10_000
    for run in runs.values():
        logged = {a.path for a in store(root).list_artifacts(run.info.run_id, "figures")}
        assert logged == {"figures/gradient_norms.png", "figures/activation_histograms.png"}


def test_gradients_kind_draws_depth_curves_and_histograms_of_each_variant_in_one_figure(sweep, tmp_path):
    root, runs = sweep
    variants = [SimpleNamespace(label=name, run=run) for name, run in runs.items()]
    figure = plot_gradients(SimpleNamespace(client=store(root), variants=variants))
    gradients, histograms = figure.subfigs
    assert [ax.get_title() for ax in gradients.axes] == list(runs)
    # one line per sampled step: 0, 4 and 8
    assert all(ax.get_yscale() == "log" and len(ax.get_lines()) == 3 for ax in gradients.axes)
    assert len([ax for ax in histograms.axes if ax.get_visible()]) == 2 * 3  # 2 runs × 3 hidden layers
    figure.savefig(tmp_path / "gradients.png")
    assert (tmp_path / "gradients.png").stat().st_size > 10_000


def test_figures_of_a_run_without_diagnostics_are_a_one_line_error(run_cli, mnist_root, tmp_path):
    run_cli(*TINY, "data.batch_size=50")
    with pytest.raises(UserError, match=r"no diagnostics recorded; train with diagnostics=on"):
        load_run(store(tmp_path), mlflow_runs(tmp_path)[0])


def test_sigmoid_derivative_peaks_at_one_quarter_and_matches_autograd():
    x = (torch.arange(-800, 801) / 100).requires_grad_()
    y = torch.sigmoid(x)
    y.sum().backward()
    derivative = sigmoid_derivative(y.detach())
    assert torch.allclose(derivative, x.grad, atol=1e-7)
    assert derivative.max().item() == pytest.approx(0.25) and x[derivative.argmax()].item() == 0.0


def test_saturation_counts_outputs_where_the_derivative_is_flat():
    x = torch.tensor([-10.0, -5.0, -1.0, 0.0, 0.5, 5.0, 10.0, 2.0])
    # σ'(±10) ≈ 4.5e-5 and σ'(±5) ≈ 6.6e-3 are below 0.01; σ'(-1) ≈ 0.20, σ'(0) = 0.25, σ'(2) ≈ 0.10 are not.
    assert saturation("sigmoid", torch.sigmoid(x), 0.01).item() == pytest.approx(4 / 8)
    # tanh'(x) = 1 − tanh²(x) < 0.01 only for |x| ≳ 3: ±5, ±10.
    assert saturation("tanh", torch.tanh(x), 0.01).item() == pytest.approx(4 / 8)
    # ReLU: the outputs at zero pass no gradient.
    assert saturation("relu", torch.relu(x), 0.5).item() == pytest.approx(4 / 8)


def hooks_in(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


def fit_with_callbacks_from(cfg, tmp_path: Path, **trainer_args: object) -> tuple[list[int], int]:
    """Train 2 steps on 2 batches of 4 with the callbacks `build_callbacks` adds; (hooks at each batch,
    hooks after fit)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader, TensorDataset

    groups = ("model", "norm", "init", "optimizer", "regularizer")
    module = Classifier({g: OmegaConf.to_container(cfg[g], resolve=True) for g in groups}, (1, 28, 28), 10)
    seen: list[int] = []

    class CountHooks(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            seen.append(hooks_in(pl_module))

    diagnostics = [c for c in build_callbacks(cfg, tmp_path) if isinstance(c, Diagnostics)]
    data = DataLoader(TensorDataset(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))), batch_size=4)
    trainer = L.Trainer(
        **{"max_steps": 2, "logger": False, **trainer_args},
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[*diagnostics, CountHooks()],
    )
    trainer.fit(module, train_dataloaders=data)
    return seen, hooks_in(module)


def test_with_diagnostics_off_no_hook_is_registered(compose, tmp_path):
    during, after = fit_with_callbacks_from(compose(), tmp_path)
    assert during == [0, 0] and after == 0


def test_with_diagnostics_on_hooks_exist_only_during_fit(compose, tmp_path):
    during, after = fit_with_callbacks_from(compose("diagnostics=on"), tmp_path)
    assert during == [4, 4] and after == 0  # one per hidden activation of the default 4×100 MLP
    assert (tmp_path / "diagnostics" / "activations.json").exists()


def test_gradient_accumulation_records_one_gradient_norm_per_optimiser_step(compose, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    cfg = compose("diagnostics=on", "diagnostics.every_n_steps=1")
    logger = CSVLogger(tmp_path, name="csv")
    fit_with_callbacks_from(cfg, tmp_path, max_steps=1, accumulate_grad_batches=2, logger=logger)
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    assert [row["step"] for row in rows if row["grad_norm/layer1"]] == ["0"]
    assert [row["step"] for row in rows if row["update_ratio/layer5"]] == ["0"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("diagnostics.every_n_steps=0", "diagnostics.every_n_steps=0: must be an integer >= 1"),
        ("diagnostics.histogram_steps=[-2]", r"diagnostics.histogram_steps=\[-2\]: must be a list of steps"),
        ("+diagnostics.saturated_below.gelu=0.1", "diagnostics.saturated_below.gelu=0.1: must be keyed by"),
    ],
)
def test_bad_diagnostics_settings_are_one_line_errors(compose, override, message):
    with pytest.raises(ConfigError, match=message):
        check_diagnostics(compose("diagnostics=on", override).diagnostics)
