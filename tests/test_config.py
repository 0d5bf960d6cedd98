"""The config surface: every option composes and validates; every bad value is one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TRAIN, cli_env, mlflow_runs, synthetic
from trainlab.config import validate
from trainlab.errors import ConfigError

GROUPS = ["data", "augment", "model", "init", "optimizer", "regularizer", "norm", "trainer", "logger"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("override", [f"{group}={option}" for group in GROUPS for option in options(group)])
def test_every_option_of_every_group_composes_and_validates(compose, override, tmp_path):
    extra = {
        "norm=instance": ["model=simple_cnn"],
        "model=custom": ["model._target_=user_models.nets.TinyConvNet", "+model.width=4"],
        # Its folder is checked for writing: one beside this test's outputs, not Hydra's (not set here).
        "logger=tensorboard": [f"logger.tensorboard.save_dir={tmp_path}/tensorboard"],
        "data=custom": ["data._target_=user_data.modules.Stripes", "+data.size=8"],
    }
    if override == "data=image_folder":
        extra[override] = [f"data.root={synthetic.write_image_folder(tmp_path, 5, 8, ('a', 'b'))}"]
    if override == "data=arrays":
        images, labels = synthetic.learnable_images(20, (10, 10), seed=0)
        np.savez(tmp_path / "a.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
        extra[override] = [f"data.path={tmp_path / 'a.npz'}"]
    cfg = compose(override, *extra.get(override, []))
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^trainer.accelerator='gpu': must be one of auto, cpu "):
            validate(cfg)
    else:
        validate(cfg)
    group, option = override.split("=")
    assert cfg[group].get("name", option) == option


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=0"], "optimizer.lr=0: must be a number > 0"),
        (["optimizer.lr=-1"], "optimizer.lr=-1: must be a number > 0"),
        (["optimizer.lr=fast"], "optimizer.lr='fast': must be a number > 0"),
        (["regularizer=elastic_net", "regularizer.l1=-0.1"], "regularizer.l1=-0.1: must be a number >= 0"),
        (["regularizer.l2=-1"], "regularizer.l2=-1: must be a number >= 0"),
        (["model.dropout=1.0"], "model.dropout=1.0: must be a number in [0, 1)"),
        (["model.dropout=-0.1"], "model.dropout=-0.1: must be a number in [0, 1)"),
        (["data.batch_size=0"], "data.batch_size=0: must be an integer >= 1"),
        (
            ["model=cnn", "model.conv=[]"],
            "model.conv=[]: must be a positive integer or a non-empty list of them",
        ),
        (["model=cnn", "model.padding=valid"], "model.padding='valid': must be an integer >= 0 or \"same\""),
        (["model=custom"], "model._target_=None: must be the dotted path of an nn.Module class"),
        (
            ["model=custom", "model._target_=no_such_pkg.Net"],
            "model._target_='no_such_pkg.Net': must be an importable nn.Module class "
            "(No module named 'no_such_pkg')",
        ),
        (
            ["model=custom", "model._target_=user_models.nets.NOT_A_MODULE"],
            "model._target_='user_models.nets.NOT_A_MODULE': must be a subclass of torch.nn.Module",
        ),
        (
            ["model=custom", "model._target_=user_models.nets.TinyConvNet"],
            "model.width=None: must be set: user_models.nets.TinyConvNet has no default for it",
        ),
        (
            [
                "model=custom",
                "model._target_=user_models.nets.TinyConvNet",
                "+model.width=4",
                "+model.depth=3",
            ],
            "model.depth=3: must be unset: user_models.nets.TinyConvNet takes only width",
        ),
        (
            ["model=custom", "model._target_=user_models.nets.Linear10", "norm=batch"],
            "norm=batch does not fit model=custom: it takes no norm; use one of none",
        ),
        (["model.hidden=[100,0]"], "model.hidden=[100, 0]"),
        (["model.hidden=[100,-5]"], "model.hidden=[100, -5]"),
        (["norm=instance"], "norm=instance does not fit model=mlp"),
        (
            ["model.activation=swish"],
            "model.activation='swish': must be one of elu, gelu, leaky_relu, relu, sigmoid, tanh",
        ),
        (["optimizer=adam", "+optimizer.alpha=0.9"], "optimizer.alpha=0.9: must be unset: adam takes only"),
        (
            ["optimizer=momentum", "optimizer.momentum=1.5"],
            "optimizer.momentum=1.5: must be a number in [0, 1)",
        ),
        (["optimizer=adam", "optimizer.betas=[0.9]"], "optimizer.betas=[0.9]"),
        (["+model.depth=3"], "model.depth=3: must be unset: mlp takes only activation, dropout, hidden"),
        (["init=normal", "init.std=-1"], "init.std=-1: must be a number >= 0"),
        (["init=he", "init.distribution=cauchy"], "init.distribution='cauchy': must be normal or uniform"),
        (["data.val_size=0"], "data.val_size=0"),
        (["seed=abc"], "seed='abc': must be an integer"),
        # Before: Lightning's ValueError when the run seeded itself, a traceback.
        (
            ["seed=-1"],
            "seed=-1: must be an integer from 0 to 4294967295 (0 is a valid seed; null: a random one)",
        ),
        (
            ["trainer.max_epochs=abc"],
            "trainer.max_epochs='abc': must be null, -1 (no end) or an integer >= 0",
        ),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0: must be an integer >= 1"),
        (
            ["trainer.val_check_interval=0"],
            "trainer.val_check_interval=0: must be null, a fraction in (0, 1]",
        ),
        (["trainer.detect_anomaly=maybe"], "trainer.detect_anomaly='maybe': must be true or false"),
        (["callbacks.timer=yes"], "callbacks.timer='yes': must be true or false"),
        (
            ["callbacks.progress_bar.refresh_rate=-1"],
            "callbacks.progress_bar.refresh_rate=-1: must be an integer >= 0",
        ),
        (["data.download=null"], "data.download=None: must be true or false"),
        (["diagnostics.enabled=yes"], "diagnostics.enabled='yes': must be true or false"),
        (["logger.log_checkpoint=yes"], "logger.log_checkpoint='yes': must be true or false"),
        (["optimizer=momentum", "optimizer.nesterov=abc"], "optimizer.nesterov='abc': must be true or false"),
        (["tags=abc"], "tags='abc': must be names and values, e.g. +tags.study=mine"),
        (
            ["logger=[mlflow,tensorboard]", "logger.tensorboard.save_dir=null"],
            "logger.tensorboard.save_dir=None: must be a folder",
        ),
    ],
)
def test_invalid_values_raise_one_line_naming_the_key(compose, overrides, message):
    with pytest.raises(ConfigError) as caught:
        validate(compose(*overrides))
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


LOGGED = "train/acc, train/loss, train/lr, train/penalty, val/acc, val/loss, weights/zero_fraction"
RETURNED = f"test/acc, test/loss, {LOGGED}"  # after the final test
NO_VAL = "train/acc, train/loss, train/lr, train/penalty (trainer.limit_val_batches=0: no validation)"
NO_VAL_RUN = ["trainer.limit_val_batches=0", "callbacks.checkpoint.monitor=train/loss"]
TYPO = "optimized_metric=val/accuracy"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimized_metric=val/accuracy"], f"optimized_metric='val/accuracy': must be one of {RETURNED}"),
        (
            ["optimized_metric=[val/acc,sparsity]"],
            f"optimized_metric.1='sparsity': must be one of {RETURNED}",
        ),
        (["optimized_metric=[]"], f"optimized_metric=[]: must be a non-empty list of {RETURNED}"),
        (["optimized_metric=3"], f"optimized_metric=3: must be one of {RETURNED}"),
        (
            ["trainer.limit_test_batches=0", "optimized_metric=test/acc"],
            f"optimized_metric='test/acc': must be one of {LOGGED}",
        ),
        (
            ["callbacks.checkpoint.monitor=test/acc"],
            f"callbacks.checkpoint.monitor='test/acc': must be one of {LOGGED}",
        ),
        (["trainer.limit_val_batches=0"], f"callbacks.checkpoint.monitor='val/acc': must be one of {NO_VAL}"),
        (NO_VAL_RUN, f"optimized_metric='val/acc': must be one of test/acc, test/loss, {NO_VAL}"),
        (
            [*NO_VAL_RUN, "optimized_metric=test/acc", "callbacks.early_stopping.enabled=true"],
            f"callbacks.early_stopping.monitor='val/loss': must be one of {NO_VAL}",
        ),
    ],
)
def test_every_key_that_names_a_metric_names_one_the_run_logs(compose, overrides, message):
    """One rule (trainlab.config.check_metrics): monitors name a metric logged at every epoch's end, the
    returned `optimized_metric` may also name the final test's; no validation, no validation metrics."""
    with pytest.raises(ConfigError) as caught:
        validate(compose(*overrides))
    assert str(caught.value) == message


def test_the_metrics_a_run_logs_may_be_monitored_and_returned(compose):
    for metric in LOGGED.split(", "):
        validate(compose(f"callbacks.checkpoint.monitor={metric}", f"optimized_metric={metric}"))
    validate(compose("optimized_metric=[val/acc,test/loss,weights/zero_fraction]"))
    validate(compose("optimized_metric=null"))  # a run on its own may return nothing
    validate(compose(*NO_VAL_RUN, "callbacks.checkpoint.mode=min", "optimized_metric=test/acc"))


def test_seed_zero_is_a_valid_seed(compose):
    cfg = compose("seed=0")
    validate(cfg)
    assert cfg.seed == 0


def test_mlflow_tracking_uri_is_honoured(compose, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert compose().logger.tracking_uri == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = compose("paths.root_dir=/somewhere").logger.tracking_uri
    assert uri == "sqlite:////somewhere/mlruns/mlflow.db"


def test_bad_value_on_the_cli_exits_2_with_one_line_and_leaves_no_run(run_cli, tmp_path):
    result = run_cli("optimizer.lr=-0.5", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: optimizer.lr=-0.5: must be a number > 0"
    assert "Traceback" not in result.stderr
    assert mlflow_runs(tmp_path) == []


def test_a_metric_name_the_run_does_not_log_exits_2_with_one_line_and_leaves_no_run(run_cli, tmp_path):
    result = run_cli(TYPO, check=False)  # before: it trained, then returned None
    assert result.returncode == 2
    line = f"error: optimized_metric='val/accuracy': must be one of {RETURNED}"
    assert result.stderr.strip().splitlines() == [line]
    assert mlflow_runs(tmp_path) == [] and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ([TYPO, "optimizer.lr=0.1,0.01"], f"optimized_metric='val/accuracy': must be one of {RETURNED}"),
        (
            [TYPO, "hparams_search=lr", "hydra.sweeper.n_trials=2"],
            f"optimized_metric='val/accuracy': must be one of {RETURNED}",
        ),
        (
            ["optimized_metric=val/acc", "hparams_search=elastic_net_pareto", "hydra.sweeper.n_trials=1"],
            "optimized_metric='val/acc': must be a list of 2 metrics (one per hydra.sweeper.direction) of "
            + RETURNED,
        ),
    ],
)
def test_a_sweep_with_a_metric_its_trials_cannot_return_trains_nothing(run_cli, tmp_path, args, line):
    """Before: each trial trained to the end, then returned None (a grid) or failed (Optuna)."""
    result = run_cli("-m", *args, check=False)
    assert result.returncode != 0
    assert line in result.stderr
    assert not list(tmp_path.glob("multirun/**/*.ckpt")) and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["optimizer=lbfgs"], "error: optimizer='lbfgs': must be one of adagrad, adam, adamw, momentum, "
         "rmsprop, sgd"),
        (["logger=[mlflow,wandb]"], "error: logger='wandb': must be one of csv, mlflow, none, tensorboard"),
        (["-m", "norm=batch,group"], "error: norm='group': must be one of batch, instance, layer, none"),
        (["+experiment=overfiting"], "error: experiment='overfiting': must be one of alexnet, batch_norm, "
         "cifar_normalization, cifar_regularization, optimizers, overfitting, simple_cnn, "
         "vanishing_gradient"),
    ],
)  # fmt: skip
def test_an_unknown_group_option_is_one_line_naming_the_options_and_exit_2(run_cli, tmp_path, args, line):
    result = run_cli(*args, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]
    assert mlflow_runs(tmp_path) == [] and not (tmp_path / "multirun").exists()


def test_options_from_a_config_dir_of_your_own_are_left_to_hydra(run_cli, tmp_path):
    extra = tmp_path / "my_conf" / "optimizer"
    extra.mkdir(parents=True)
    (extra / "lion.yaml").write_text("name: adam\nlr: 0.001\n")
    result = run_cli(f"--config-dir={tmp_path / 'my_conf'}", "optimizer=lion", "--cfg=job", check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lr: 0.001" in result.stdout


def test_help_and_cfg_job_do_not_import_torch(tmp_path):
    for flag in ("--help", "--cfg=job"):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", str(TRAIN), flag],
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=tmp_path,
            check=True,
        )
        imported = {
            line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line
        }
        assert {"torch", "lightning", "mlflow"}.isdisjoint(imported), flag
    assert "optimizer:" in result.stdout


def test_resolved_config_has_no_unresolved_interpolations(compose):
    cfg = compose("paths.root_dir=/p")
    resolved = OmegaConf.to_container(cfg.logger, resolve=True)
    assert "${" not in str(resolved)
    assert Path(resolved["artifact_location"]) == Path("/p/mlruns/artifacts")


def test_every_trainer_argument_can_be_set_without_a_plus(compose):
    import inspect

    import lightning as L

    owned = {"self", "logger", "callbacks", "plugins", "default_root_dir", "enable_progress_bar"}
    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - owned
    assert arguments <= set(compose().trainer)
    assert compose("trainer.max_steps=2000", "trainer.limit_val_batches=0.5").trainer.max_steps == 2000


def test_help_lists_every_group_and_option_as_hydra_does_and_the_composed_config(tmp_path):
    """`--help` lists the groups from conf/ (trainlab.cli.help) instead of composing each option; the list is
    the one Hydra's own (slow) listing gives, followed by the config the overrides compose."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    result = subprocess.run(
        [sys.executable, str(TRAIN), "--help", "model=cnn"],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        check=True,
    )
    hydra = Hydra.create_main_hydra2("train", create_config_search_path(str(REPO / "conf")))
    hydras_own = hydra.format_config_groups(lambda group: not group.startswith("hydra"))
    GlobalHydra.instance().clear()
    assert "model: alexnet, cifar_cnn, cnn, custom, mlp, simple_cnn\n" in hydras_own
    assert hydras_own in result.stdout
    assert result.stdout.startswith("trainlab: train one model")
    assert "  name: cnn\n" in result.stdout  # the composed config, with the overrides given
    assert "Hydra's own flags: --hydra-help" in result.stdout
