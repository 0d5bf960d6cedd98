"""The training loop: learning-rate schedules against torch's formulas, early stopping, a user's own
callbacks and the debug presets, through the CLI on tiny MNIST files with real MLflow stores; and every
mistake in them as one line before any run exists."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, TINY, mlflow_runs
from trainlab.config import validate
from trainlab.errors import ConfigError

USER_CODE = {"PYTHONPATH": str(REPO / "tests")}
LR_MONITOR = "lightning.pytorch.callbacks.LearningRateMonitor"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def history(root: Path, metric: str) -> list[float]:
    [run] = mlflow_runs(root)
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)]


@pytest.mark.parametrize("override", [f"scheduler={o}" for o in options("scheduler")])
def test_every_scheduler_composes_and_validates(compose, override):
    cfg = compose(override)
    validate(cfg)
    assert cfg.scheduler.name == override.split("=")[1]


@pytest.mark.parametrize("override", [f"debug={o}" for o in options("debug")])
def test_every_debug_preset_composes_and_validates(compose, override):
    validate(compose(override))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler=cosine", "scheduler.T_max=0"], "scheduler.T_max=0: must be an integer >= 1 or null"),
        (["scheduler=step", "scheduler.interval=batch"], "scheduler.interval='batch': must be step or epoch"),
        (["scheduler=step", "scheduler.frequency=0"], "scheduler.frequency=0: must be an integer >= 1"),
        (["scheduler=warmup_cosine", "scheduler.warmup=-1"], "scheduler.warmup=-1: must be an integer >= 0"),
        (
            ["scheduler=warmup_cosine", "scheduler.warmup=10", "scheduler.T_max=10"],
            "scheduler.warmup=10: must be less than scheduler.T_max=10",
        ),
        (
            ["scheduler=plateau", "scheduler.interval=step"],
            "scheduler.interval='step': must be epoch for plateau (its metric is logged per epoch)",
        ),
        (
            ["scheduler=plateau", "scheduler.monitor=val/banana"],
            "scheduler.monitor='val/banana': must be one of train/acc, train/loss, train/lr, train/penalty, "
            "val/acc, val/loss, weights/zero_fraction",
        ),
        (
            ["scheduler=step", "+scheduler.T_max=3"],
            "scheduler.T_max=3: must be unset: step takes only gamma,",
        ),
        (["scheduler=exponential", "scheduler.gamma=fast"], "scheduler.gamma='fast': must be a number >= 0"),
        (
            ["scheduler=plateau", "scheduler.factor=2"],
            "scheduler.factor=2: must be a value torch's plateau schedule accepts "
            "(ValueError: Factor should be < 1.0.)",
        ),
        (
            ["scheduler=onecycle", "scheduler.anneal_strategy=cosine"],
            "scheduler.anneal_strategy='cosine': must be a value torch's onecycle schedule accepts "
            "(ValueError: anneal_strategy must be one of 'cos' or 'linear', instead got cosine)",
        ),
        (
            ["scheduler=onecycle", "scheduler.cycle_momentum=true"],
            "scheduler.cycle_momentum=True: must be false with optimizer=sgd, which has no momentum or beta1 "
            "to cycle (or an optimizer with one: optimizer=momentum, adam or adamw)",
        ),
        (
            ["scheduler=onecycle", "scheduler.cycle_momentum=true", "optimizer=adagrad"],
            "scheduler.cycle_momentum=True: must be false with optimizer=adagrad,",
        ),
        (
            ["scheduler=onecycle", "scheduler.three_phase=no"],
            "scheduler.three_phase='no': must be true or false",
        ),
        (["scheduler=plateau", "scheduler.cooldown=-1"], "scheduler.cooldown=-1: must be an integer >= 0"),
        (
            ["scheduler=plateau", "scheduler.patience=ten"],
            "scheduler.patience='ten': must be an integer >= 0",
        ),
        (
            ["scheduler=multistep", "scheduler.milestones=[0,5]"],
            "scheduler.milestones=[0, 5]: must be a list of integers >= 1 (the intervals the rate drops at)",
        ),
        (
            ["scheduler=warmup_cosine", "scheduler.start_factor=2"],
            "scheduler.start_factor=2: must be a number in (0, 1]",
        ),
        (
            ["scheduler=plateau", "scheduler.monitor=null"],
            "scheduler.monitor=None: must be one of train/acc, train/loss, train/lr, train/penalty, val/acc, "
            "val/loss, weights/zero_fraction",
        ),
        (
            ["callbacks.checkpoint.monitor=val/banana"],
            "callbacks.checkpoint.monitor='val/banana': must be one of train/acc, train/loss,",
        ),
        (
            ["callbacks.early_stopping.enabled=true", "callbacks.early_stopping.monitor=val/accuracy"],
            "callbacks.early_stopping.monitor='val/accuracy': must be one of",
        ),
        (
            ["callbacks.early_stopping.patience=-1"],
            "callbacks.early_stopping.patience=-1: must be an integer >= 0",
        ),
        (
            ["callbacks.early_stopping.enabled=true", "callbacks.early_stopping.mode=null"],
            "callbacks.early_stopping.mode=None: must be min or max",
        ),
        (
            ["callbacks.checkpoint.every_n_train_steps=0"],
            "callbacks.checkpoint.every_n_train_steps=0: must be null (at each epoch's end) or an integer",
        ),
        (
            ["callbacks.curves.every_n_steps=-1"],
            "callbacks.curves.every_n_steps=-1: must be null or 0 (off), or an integer >= 1",
        ),
        (
            ["callbacks.curves.every_n_epochs=1", "callbacks.curves.max_images=0"],
            "callbacks.curves.max_images=0: must be null (all of them) or an integer >= 1",
        ),
        (
            [f"callbacks.extra=[{{_target_:{LR_MONITOR},every:step}}]"],
            f"callbacks.extra.0.every='step': must be unset: {LR_MONITOR} takes only log_momentum, "
            "log_weight_decay, logging_interval",
        ),
        (
            [f"callbacks.extra=[{{_target_:{LR_MONITOR},logging_interval:hour}}]"],
            f"callbacks.extra.0.logging_interval='hour': must be a value {LR_MONITOR} accepts "
            "(MisconfigurationException: logging_interval should be `step` or `epoch` or `None`.)",
        ),
        (
            ["callbacks.extra=[{_target_:user_callbacks.epochs.EpochLog,metric:val/acc}]"],
            "callbacks.extra.0.path=None: must be set: user_callbacks.epochs.EpochLog has no default for it",
        ),
        (
            ["callbacks.extra=[{_target_:no_such_pkg.Log}]"],
            "callbacks.extra.0._target_='no_such_pkg.Log': must be an importable class",
        ),
        (
            ["callbacks.extra=[{_target_:torch.nn.Linear}]"],
            "callbacks.extra.0._target_='torch.nn.Linear': must be a lightning.pytorch.callbacks.Callback",
        ),
        (
            ["callbacks.extra=[lightning]"],
            "callbacks.extra.0='lightning': must be a {_target_: package.Class",
        ),
    ],
)
def test_schedule_and_callback_mistakes_raise_one_line_naming_the_key(compose, overrides, message):
    with pytest.raises(ConfigError) as raised:
        validate(compose(*overrides))
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["callbacks.checkpoint.monitor=val/banana"],
            "error: callbacks.checkpoint.monitor='val/banana': must be one of train/acc",
        ),
        (
            ["scheduler=warmup_cosine", "scheduler.warmup=100"],
            "error: scheduler.warmup=100: must be less than the run's 4 steps (1 epochs of 4 steps)",
        ),
        (
            ["scheduler=warmup_cosine", "scheduler.interval=epoch", "scheduler.warmup=1"],
            "error: scheduler.warmup=1: must be less than the run's 1 epochs",
        ),
        (
            ["scheduler=onecycle", "scheduler.total_steps=3"],
            "error: scheduler.total_steps=3: must be null or at least the run's 4 steps",
        ),
        (["scheduler=fancy"], "error: scheduler='fancy': must be one of cosine, exponential, multistep, "),
        # Before: torch refused it once fit started, the MLflow run FAILED (Adagrad), or a plain SGD became
        # one with momentum (sgd), without a word.
        (
            ["scheduler=onecycle", "scheduler.cycle_momentum=true", "optimizer=adagrad"],
            "error: scheduler.cycle_momentum=True: must be false with optimizer=adagrad, which has no",
        ),
        # Before: a traceback from Hydra's instantiate, the MLflow run FAILED.
        (
            [f"callbacks.extra=[{{_target_:{LR_MONITOR},logging_interval:hour}}]"],
            "error: callbacks.extra.0.logging_interval='hour': must be a value",
        ),
        # Before: Lightning's traceback after the first epoch (no val/acc to checkpoint on), the run FAILED.
        (
            ["trainer.limit_val_batches=0"],
            "error: callbacks.checkpoint.monitor='val/acc': must be one of train/acc, train/loss, train/lr, "
            "train/penalty (trainer.limit_val_batches=0: no validation)",
        ),
    ],
)
def test_mistakes_exit_2_with_one_line_before_any_mlflow_run(
    run_cli, mnist_root, tmp_path, overrides, message
):
    result = run_cli(*TINY, "data.batch_size=50", *overrides, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    if message.startswith("error:"):
        assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert mlflow_runs(tmp_path) == []


def test_a_step_schedule_sets_the_learning_rate_logged_each_epoch_as_torch_computes_it(
    run_cli, mnist_root, tmp_path
):
    """StepLR(step_size=2, γ=0.5) every epoch: the epochs start at lr 0.1, 0.1, 0.05, 0.05."""
    run_cli(*TINY, "trainer.max_epochs=4", "scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5")
    assert history(tmp_path, "train/lr") == pytest.approx([0.1, 0.1, 0.05, 0.05])


def test_warmup_cosine_rises_linearly_then_follows_the_cosine_step_by_step(run_cli, mnist_root, tmp_path):
    """100 images in batches of 25: 4 steps an epoch, 3 epochs, 12 steps; 4 of warm-up from 0.1·lr, then
    lr·(1 + cos(π(t − 4)/8))/2, sampled every step by `callbacks.curves` (curve/lr at step t: the rate the
    next step uses; train/lr: the rate of each epoch's last step)."""
    run_cli(
        *TINY,
        "trainer.max_epochs=3",
        "data.train_size=100",
        "data.batch_size=25",
        "optimizer.lr=0.2",
        "scheduler=warmup_cosine",
        "scheduler.warmup=4",
        "scheduler.start_factor=0.1",
        "callbacks.curves.every_n_steps=1",
    )

    def expected(t: int) -> float:
        if t < 4:
            return 0.2 * (0.1 + 0.9 * t / 4)
        return 0.2 * (1 + math.cos(math.pi * (t - 4) / 8)) / 2

    assert history(tmp_path, "curve/lr") == pytest.approx([expected(t) for t in range(13)], abs=1e-9)
    assert history(tmp_path, "train/lr") == pytest.approx([expected(3), expected(7), expected(11)], rel=1e-6)


def test_a_plateau_schedule_cuts_the_rate_when_its_metric_stalls(run_cli, mnist_root, tmp_path):
    """patience 0 and a threshold no epoch can beat: the first epoch sets the best, each later one cuts the
    rate by `factor` for the epoch after it."""
    run_cli(
        *TINY,
        "trainer.max_epochs=4",
        "scheduler=plateau",
        "scheduler.monitor=train/acc",
        "scheduler.mode=max",
        "scheduler.patience=0",
        "scheduler.threshold=10",
        "scheduler.factor=0.5",
    )
    assert history(tmp_path, "train/lr") == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_early_stopping_ends_the_run_says_so_and_tags_the_epoch_and_tests_the_best(
    run_cli, mnist_root, tmp_path
):
    """min_delta 2: no accuracy improves that much; with patience 1 the run stops after its second epoch."""
    run_cli(
        *TINY,
        "trainer.max_epochs=10",
        "callbacks.early_stopping.enabled=true",
        "callbacks.early_stopping.monitor=val/acc",
        "callbacks.early_stopping.mode=max",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=2",
    )
    said = "Stopped early after epoch 1: val/acc did not improve by more than 2 for 1 validations"
    [log] = tmp_path.glob("outputs/*/*/train.log")
    assert said in log.read_text()
    [run] = mlflow_runs(tmp_path)
    assert run.data.tags["early_stopping.epoch"] == "1"
    assert len(history(tmp_path, "val/acc")) == 2
    assert "test/acc" in run.data.metrics and run.info.status == "FINISHED"


def test_a_users_callback_runs_beside_trainlabs_own(run_cli, mnist_root, tmp_path):
    out = tmp_path / "epochs.txt"
    run_cli(
        *TINY,
        "trainer.max_epochs=2",
        f"callbacks.extra=[{{_target_:user_callbacks.epochs.EpochLog,path:'{out}',metric:val/acc}}]",
        env=USER_CODE,
    )
    lines = out.read_text().splitlines()
    assert [line.split("=")[0] for line in lines] == ["epoch 0 val/acc", "epoch 1 val/acc"]
    assert [float(line.split("=")[1]) for line in lines] == pytest.approx(history(tmp_path, "val/acc"))
    assert len(list(tmp_path.glob("outputs/*/*/checkpoints/best.ckpt"))) == 1  # trainlab's own still ran


def test_debug_fdr_runs_one_batch_of_each_split_and_writes_nothing_outside_a_temporary_folder(
    run_cli, mnist_root, tmp_path
):
    before = {p for p in tmp_path.rglob("*")}
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = run_cli("debug=fdr", "trainer.accelerator=cpu", env={"TMPDIR": str(temporary)})
    assert "test/acc" in result.stdout  # the test split ran too
    written = {p for p in tmp_path.rglob("*")} - before - {temporary}
    assert written and all(temporary in p.parents for p in written)
    assert not (tmp_path / "mlruns").exists()


def test_debug_overfit_drives_the_loss_of_one_batch_to_about_zero(run_cli, mnist_root, tmp_path):
    run_cli(
        "debug=overfit",
        "trainer.max_epochs=30",
        "trainer.accelerator=cpu",
        "data.batch_size=20",
        "callbacks.progress_bar.refresh_rate=0",
    )
    losses = history(tmp_path, "train/loss")
    assert len(losses) == 30 and losses[0] > 1.0 and losses[-1] < 0.05


def test_debug_limit_trains_a_few_batches_of_one_epoch(run_cli, mnist_root, tmp_path):
    run_cli(
        "debug=limit",
        "trainer.accelerator=cpu",
        "data.batch_size=10",
        "callbacks.progress_bar.refresh_rate=0",
    )
    [checkpoint] = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 5


def test_debug_profiler_saves_its_report_in_the_run_folder_and_logs_it(run_cli, mnist_root, tmp_path):
    run_cli(*TINY, "debug=profiler")
    [report] = tmp_path.glob("outputs/*/*/fit-profile.txt")
    assert "run_training_epoch" in report.read_text()
    [run] = mlflow_runs(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    names = {a.path for a in client.list_artifacts(run.info.run_id, "profiler")}
    assert {"profiler/fit-profile.txt", "profiler/test-profile.txt"} <= names


def test_debug_anomaly_names_the_first_operation_that_made_nan_in_one_line(run_cli, mnist_root, tmp_path):
    """A learning rate of 1e30 sends the weights to inf at the first step; the second step's forward makes
    the first NaN, in the first Linear layer (inf − inf)."""
    result = run_cli(*TINY, "debug=anomaly", "optimizer.lr=1e30", check=False)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1
    assert last.startswith("error: train/loss became nan at step 1")
    assert "first non-finite output: model." in last
