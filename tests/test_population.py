"""Populations: K trials trained as one vectorised model. The batched optimisers against torch.optim,
members against standalone runs of the same configs (real Lightning training on tiny MNIST files),
and population jobs and sweeps through the CLI with real MLflow stores and Optuna storages."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from conftest import mlflow_runs
from trainlab.data import build_datamodule, build_member_datamodule
from trainlab.module import Classifier
from trainlab.optim import OPTIMIZERS
from trainlab.population.members import unsupported
from trainlab.population.module import PopulationClassifier
from trainlab.population.optim import PopulationOptimizer, member_hypers, shared_flags

# Per optimizer, members with different numbers (and the shared switches in `flags`).
OPTIMIZER_MEMBERS = {
    "sgd": ([{"lr": 0.1}, {"lr": 0.01, "weight_decay": 0.1}], [{}]),
    "momentum": (
        [
            {"lr": 0.1, "momentum": 0.9},
            {"lr": 0.05, "momentum": 0.5, "dampening": 0.1},
            {"lr": 0.1, "momentum": 0},
        ],
        [{}],
    ),
    "adagrad": (
        [{"lr": 0.01}, {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-6}],
        [{}],
    ),
    "rmsprop": (
        [{"lr": 0.01}, {"lr": 0.001, "alpha": 0.9, "momentum": 0.5, "weight_decay": 0.1}],
        [{}, {"centered": True}],
    ),
    "adam": (
        [{"lr": 0.001}, {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1}],
        [{}, {"amsgrad": True}],
    ),
    "adamw": ([{"lr": 0.001}, {"lr": 0.01, "betas": [0.8, 0.99], "weight_decay": 0.1}], [{}]),
}


@pytest.mark.parametrize("option", sorted(OPTIMIZER_MEMBERS))
def test_each_member_of_a_batched_optimizer_follows_torch_optim_with_its_own_numbers(option: str) -> None:
    members, flag_sets = OPTIMIZER_MEMBERS[option]
    for flags in flag_sets:
        configs = [{**member, **flags} for member in members]
        torch.manual_seed(0)
        start = torch.randn(len(configs), 5, 4)
        stacked = torch.nn.Parameter(start.clone())
        population = PopulationOptimizer(
            [stacked], option, member_hypers(option, configs), shared_flags(configs)
        )
        singles = [torch.nn.Parameter(start[k].clone()) for k in range(len(configs))]
        references = [
            OPTIMIZERS[option]([p], **{k: tuple(v) if k == "betas" else v for k, v in c.items()})
            for p, c in zip(singles, configs, strict=True)
        ]
        for _ in range(30):
            grad = torch.randn_like(start)
            stacked.grad = grad.clone()
            population.step()
            for k, (param, reference) in enumerate(zip(singles, references, strict=True)):
                param.grad = grad[k].clone()
                reference.step()
        for k, param in enumerate(singles):
            torch.testing.assert_close(stacked[k].detach(), param.detach(), rtol=1e-5, atol=1e-6)


def test_dropping_members_keeps_the_others_optimiser_state() -> None:
    configs = [{"lr": 0.001}, {"lr": 0.01}, {"lr": 0.1}]
    stacked = torch.nn.Parameter(torch.ones(3, 2))
    optimizer = PopulationOptimizer([stacked], "adam", member_hypers("adam", configs), shared_flags(configs))
    stacked.grad = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    optimizer.step()
    index = torch.tensor([0, 2])
    optimizer.keep(index)
    stacked.data = stacked.data[index]
    assert optimizer.state[stacked]["exp_avg"][:, 0].tolist() == pytest.approx([0.1, 0.3])
    assert optimizer.param_groups[0]["hypers"]["lr"].tolist() == pytest.approx([0.001, 0.1])


def test_dropout_draws_a_mask_per_member_at_each_members_own_rate() -> None:
    from trainlab.population.stacked import StackedNetwork

    networks = [torch.nn.Sequential(torch.nn.Dropout(p)) for p in (0.0, 0.5, 0.5, 0.9)]
    stacked = StackedNetwork(networks).train()
    out = stacked(torch.ones(20_000))
    zeros = (out == 0).float().mean(1)
    assert zeros[0] == 0 and torch.equal(out[0], torch.ones(20_000))
    assert zeros[1:].tolist() == pytest.approx([0.5, 0.5, 0.9], abs=0.02)
    assert not torch.equal(out[1], out[2])  # same rate, different masks
    assert out[3].max() == pytest.approx(10.0)  # kept units scaled by 1 / (1 − p)
    assert torch.equal(stacked.eval()(torch.ones(5)), torch.ones(4, 5))


def _resolved(cfg) -> dict:
    """A composed run config as plain values (its output folder exists only inside a Hydra job)."""
    cfg.paths.output_dir = "unused"
    return OmegaConf.to_container(cfg, resolve=True)


def _fit(module: L.LightningModule, datamodule, epochs: int = 1) -> None:
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)


@pytest.mark.parametrize("option", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("penalty", [False, True])
def test_a_member_ends_an_epoch_with_the_weights_of_a_standalone_run(
    compose, mnist_root: Path, option: str, norm: str, penalty: bool
) -> None:
    """Same initial weights (same seed and init), same batches, same numbers, no dropout: member k after
    an epoch equals a standalone run of its config (allclose, rtol 1e-4)."""
    lrs = {"sgd": [0.1, 0.03], "momentum": [0.05, 0.02], "adam": [0.003, 0.001]}[option]
    common = [
        f"data.root={mnist_root}",
        "data.batch_size=50",
        "model.hidden=[32,16]",
        f"optimizer={option}",
        f"norm={norm}",
        "regularizer=elastic_net" if penalty else "regularizer=none",
    ]
    members = [
        [f"optimizer.lr={lrs[0]}", "seed=1", "init=he"]
        + (["regularizer.l1=1e-4", "regularizer.l2=1e-3"] if penalty else []),
        [f"optimizer.lr={lrs[1]}", "seed=2", "init=xavier"]
        + (["regularizer.l1=0", "regularizer.l2=1e-2"] if penalty else []),
    ]
    configs = [_resolved(compose(*common, *m)) for m in members]
    datamodule = build_datamodule(compose(*common).data, seed=7)  # one data order for all
    population = PopulationClassifier(configs, datamodule.image_shape, datamodule.num_classes)
    _fit(population, datamodule)
    for k, config in enumerate(configs):
        L.seed_everything(config["seed"], verbose=False)
        standalone = Classifier(config, datamodule.image_shape, datamodule.num_classes)
        _fit(standalone, build_datamodule(compose(*common).data, seed=7))
        expected = standalone.model.state_dict()
        actual = population.net.member_state(k)
        assert set(actual) == set(expected)
        for name in set(expected) - _noise_driven(standalone.model, option):
            torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_members_with_their_own_seed_and_fold_end_with_the_weights_of_their_standalone_runs(
    compose, mnist_root: Path, norm: str
) -> None:
    """Per-member batches: each member its own data order (seed) and fold, still exactly its standalone
    run after two epochs (allclose, rtol 1e-4; no dropout)."""
    common = [f"data.root={mnist_root}", "data.batch_size=32", "model.hidden=[32,16]", f"norm={norm}"]
    common += ["optimizer=momentum", "data.folds=3", "data.val_size=null"]
    members = [[f"seed={seed}", f"data.fold={fold}"] for seed in (3, 4) for fold in (0, 2)]
    cfgs = [compose(*common, *m) for m in members]
    configs = [_resolved(cfg) for cfg in cfgs]
    datamodule = build_member_datamodule([cfg.data for cfg in cfgs], [c["seed"] for c in configs])
    population = PopulationClassifier(configs, datamodule.image_shape, datamodule.num_classes)
    _fit(population, datamodule, epochs=2)
    for k, (cfg, config) in enumerate(zip(cfgs, configs, strict=True)):
        L.seed_everything(config["seed"], verbose=False)
        standalone = Classifier(config, datamodule.image_shape, datamodule.num_classes)
        _fit(standalone, build_datamodule(cfg.data, seed=config["seed"]), epochs=2)
        expected, actual = standalone.model.state_dict(), population.net.member_state(k)
        assert set(actual) == set(expected)
        for name in expected:
            torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6)
    # The members did differ: different seeds and folds, different weights.
    first, other = population.net.member_state(0), population.net.member_state(3)
    assert not all(torch.allclose(first[name], other[name]) for name in first)


def _noise_driven(network: torch.nn.Module, option: str) -> set[str]:
    """With Adam, the bias of a layer that feeds a BatchNorm (and so that BatchNorm's running mean): BN
    subtracts the batch mean, so that bias's gradient is 0 but for float32 rounding (~1e-9), and Adam's
    g / (√v + eps) turns rounding noise into steps of ~0.1·lr whose sign depends on summation order. Two
    standalone runs with different thread counts differ there too; every other tensor must match."""
    if option != "adam":
        return set()
    names, layers = [], list(network.named_modules())
    for (name, layer), (next_name, following) in itertools.pairwise(layers):
        if isinstance(layer, torch.nn.Linear) and isinstance(following, torch.nn.BatchNorm1d):
            names += [f"{name}.bias", f"{next_name}.running_mean"]
    return set(names)


# ---- population jobs and sweeps through the CLI ---------------------------------------------------

QUIET = ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]


def _study(root: Path):
    import optuna

    return optuna.load_study(study_name=None, storage=f"sqlite:///{root}/multirun/optuna.db")


def test_an_optuna_sweep_in_populations_gives_each_trial_its_own_run_checkpoints_and_result(
    run_cli, mnist_root, tmp_path
):
    run_cli(
        "-m",
        "hparams_search=lr",
        "optimizer=adam",
        "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.population=2",
        "trainer.max_epochs=2",
        *QUIET,
    )
    study = _study(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert all(len(t.intermediate_values) == 2 for t in study.trials)  # reported each epoch
    jobs = sorted(p.parent for p in tmp_path.glob("multirun/*/*/population.json"))
    assert len(jobs) == 2  # 4 trials, 2 jobs

    runs = mlflow_runs(tmp_path)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r is not parent]
    assert len(trials) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["optuna.state"] for r in trials} == {"COMPLETE"}
    for trial in study.trials:
        [run] = [r for r in trials if r.info.run_id == trial.user_attrs["mlflow_run_id"]]
        assert float(run.data.params["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
        assert run.data.metrics["val/acc"] <= trial.value  # the best epoch's, which the trial returned
        assert {"train/loss", "train/acc", "val/loss", "test/acc", "test/loss"} <= set(run.data.metrics)

    # The same params and tags as a standalone run of the same trial.
    run_cli(
        "optimizer=adam",
        f"optimizer.lr={study.trials[0].params['optimizer.lr']}",
        "trainer.max_epochs=2",
        *QUIET,
    )
    [standalone] = [
        r
        for r in mlflow_runs(tmp_path)
        if "optuna.trial" not in r.data.tags
        and r is not parent
        and not r.data.tags.get("mlflow.runName", "").startswith("sweep")
    ]
    assert set(standalone.data.params) == set(trials[0].data.params)
    assert {k for k in standalone.data.tags if k.startswith("choice.")} <= set(trials[0].data.tags)

    # Each member's checkpoints open as an ordinary single model.
    for job in jobs:
        for path in sorted(job.glob("member_*/checkpoints/*.ckpt")):
            model = Classifier.load_from_checkpoint(path, weights_only=True)
            assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_a_diverging_member_fails_with_its_reason_while_the_others_finish(run_cli, mnist_root, tmp_path):
    run_cli(
        "-m",
        "hparams_search=lr",
        "hydra/sweeper/sampler=brute_force",
        "optimizer.lr=choice(0.05, 1e30)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.population=2",
        "hydra.sweeper.max_failure_rate=1.0",
        "trainer.max_epochs=2",
        *QUIET,
    )
    trials = {t.params["optimizer.lr"]: t for t in _study(tmp_path).trials}
    assert trials[0.05].state.name == "COMPLETE"
    assert trials[1e30].state.name == "FAIL"
    assert trials[1e30].user_attrs["fail_reason"].startswith("Diverged: train/loss became")
    runs = {
        float(r.data.params["optimizer.lr"]): r
        for r in mlflow_runs(tmp_path)
        if "optimizer.lr" in r.data.params
    }
    assert runs[0.05].info.status == "FINISHED" and runs[0.05].data.metrics["epoch"] == 1
    assert runs[1e30].info.status == "FAILED"
    assert "lower optimizer.lr=1e+30" in runs[1e30].data.tags["failure_reason"]


def test_a_pruned_member_stops_and_leaves_the_population(run_cli, mnist_root, tmp_path):
    """ThresholdPruner cuts any trial whose val/acc is below 0.5: lr 1e-7 cannot learn, lr 1e-2 does."""
    run_cli(
        "-m",
        "hparams_search=lr",
        "optimizer=adam",
        "hydra/sweeper/sampler=brute_force",
        "optimizer.lr=choice(0.01, 1e-7)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.population=2",
        "++hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.5}",
        "trainer.max_epochs=3",
        *QUIET,
    )
    trials = {t.params["optimizer.lr"]: t for t in _study(tmp_path).trials}
    assert trials[0.01].state.name == "COMPLETE" and len(trials[0.01].intermediate_values) == 3
    assert trials[1e-7].state.name == "PRUNED" and list(trials[1e-7].intermediate_values) == [0]
    runs = {
        float(r.data.params["optimizer.lr"]): r
        for r in mlflow_runs(tmp_path)
        if "optimizer.lr" in r.data.params
    }
    assert runs[1e-7].info.status == "KILLED" and runs[1e-7].data.tags["optuna.state"] == "PRUNED"
    # It stopped costing compute: the population's last checkpoint holds only the surviving member.
    [last] = tmp_path.glob("multirun/*/*/checkpoints/last.ckpt")
    state = torch.load(last, weights_only=True)
    assert len(state["population_members"]) == 1
    assert next(iter(state["state_dict"].values())).shape[0] == 1


def test_a_grid_sweep_trains_compatible_variants_together_and_splits_the_others(
    run_cli, mnist_root, tmp_path
):
    run_cli(
        "-m",
        "model.hidden=[8],[16]",
        "optimizer.lr=0.05,0.1",
        "hydra.sweeper.population=4",
        "trainer.max_epochs=1",
        *QUIET,
    )
    jobs = sorted(tmp_path.glob("multirun/*/*/population.json"))
    assert len(jobs) == 2  # one population per network shape
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    pairs = {(r.data.params["model.hidden"], r.data.params["optimizer.lr"]) for r in runs}
    assert pairs == {(h, lr) for h in ("[8]", "[16]") for lr in ("0.05", "0.1")}
    assert sorted(int(r.data.tags["job_num"]) for r in runs) == [0, 1, 2, 3]


def test_members_that_cannot_share_a_network_are_a_one_line_error(run_cli, mnist_root):
    result = run_cli(
        "population=[{overrides:['model.hidden=[8]']},{overrides:['model.hidden=[16]']}]", *QUIET, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: population: members 0 and 1 differ in model.hidden ([8] vs [16]); a population may vary "
        "only the optimiser's numbers, the schedule, regularizer.l1/l2, the init, the seed, data.fold and "
        "model.dropout"
    )


def test_an_experiment_runs_as_one_population_and_its_report_reads_each_variant(
    run_cli, mnist_root, tmp_path
):
    import subprocess
    import sys

    from conftest import REPO, cli_env

    run_cli(
        "-m",
        "experiment=overfitting",
        "hydra.sweeper.population=5",
        "data.train_size=50",
        "trainer.max_steps=4",
        "callbacks.curves.every_n_steps=2",
        *QUIET,
    )
    assert len(list(tmp_path.glob("multirun/*/*/population.json"))) == 1  # five variants, one job
    runs = mlflow_runs(tmp_path, "overfitting")
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    by_variant = {r.data.params["variant"]: r for r in runs}
    assert by_variant["dropout"].data.params["model.dropout"] == "0.15"
    assert by_variant["l1"].data.params["optimizer.lr"] == "0.1"
    assert all("curve/test/acc" in r.data.metrics for r in runs)
    report = subprocess.run(
        [
            sys.executable,
            str(REPO / "src" / "report.py"),
            "experiment=overfitting",
            f"paths.root_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stderr
    assert report.stdout.count("FINISHED") == 5
    assert "dropout 0.08 + L1 λ=0.004" in report.stdout


@pytest.mark.parametrize(
    "schedule",
    [[], ["scheduler=warmup_cosine", "scheduler.warmup=30"]],
    ids=["constant_lr", "warmup_cosine"],
)
def test_kill_9_mid_epoch_then_the_same_command_resumes_the_population_like_an_uninterrupted_one(
    run_cli, tmp_path, schedule
):
    import signal

    from conftest import write_mnist
    from faults import Fault, subprocess_env

    job = [
        "population=[{overrides:['optimizer.lr=0.05']},{overrides:['optimizer.lr=0.02','seed=4'"
        + (",'scheduler.warmup=45'" if schedule else "")
        + "]}]",
        *schedule,
        "model=simple_cnn",
        "model.dropout=0.2",
        "data.batch_size=10",
        "trainer.max_epochs=2",
        "callbacks.checkpoint.every_n_train_steps=7",
        *QUIET,
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for root in (straight, killed):
        write_mnist(root / "data", n_train=556, n_test=50)
    run_cli(*job, root=straight)

    # kill -9 as the population's third last.ckpt (step 21: one every 7 steps) is about to be written
    fault = subprocess_env(Fault("SIGKILL", "checkpoint.last.ckpt", 3))
    dead = run_cli(*job, root=killed, env=fault, check=False)
    assert dead.returncode == -signal.SIGKILL
    [last] = killed.glob("outputs/*/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 14
    assert {r.info.status for r in mlflow_runs(killed)} == {"RUNNING"}

    run_cli(*job, "ckpt_path=last", root=killed)
    for member in ("member_0", "member_1"):
        [expected] = straight.glob(f"outputs/*/*/{member}/checkpoints/last.ckpt")
        [resumed] = killed.glob(f"outputs/*/*/{member}/checkpoints/last.ckpt")
        expected, resumed = (torch.load(p, weights_only=True)["state_dict"] for p in (expected, resumed))
        for key in expected:
            assert torch.equal(expected[key], resumed[key]), (member, key)
    runs = mlflow_runs(killed)  # the same two MLflow runs, now finished
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    expected_acc = sorted(r.data.metrics["test/acc"] for r in mlflow_runs(straight))
    assert sorted(r.data.metrics["test/acc"] for r in runs) == expected_acc


def test_trials_composed_once_per_group_choice_get_the_configs_hydra_composes_for_each():
    """A sweep's trials are grouped (and a population's members built) from configs composed once per
    distinct set of group overrides, the trials' numbers set on a copy: each must equal Hydra's own."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import REPO
    from trainlab.population.compose import compose_each

    jobs = [
        ["optimizer=adam", "optimizer.lr=0.01", "regularizer.l1=1e-5", "data.batch_size=32"],
        ["optimizer=adam", "optimizer.lr=0.02", "seed=3", "data.batch_size=32", "model.hidden=[64,32]"],
        [
            "optimizer=momentum",
            "optimizer.lr=0.1",
            "optimizer.nesterov=true",
            "+data.note=x",
            "data.batch_size=32",
        ],
        ["optimizer=adam", "optimizer.lr=0.03", "regularizer=elastic_net", "data.batch_size=32"],
    ]
    compositions = []

    def hydra_composes(overrides: list[str]):
        compositions.append(overrides)
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        choices = {group: str(option) for group, option in cfg.hydra.runtime.choices.items()}
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg, choices, None

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            configs = [cfg for cfg, _ in compose_each(jobs, hydra_composes)]
            assert len(compositions) == 4  # the first job's groups, then adam, momentum, adam+elastic_net
            expected = [hydra_composes(job)[0] for job in jobs]
    finally:
        GlobalHydra.instance().clear()
    for got, want in zip(configs, expected, strict=True):
        assert OmegaConf.to_container(got) == OmegaConf.to_container(want)
    assert configs[1].model.hidden == [64, 32] and configs[2].data.note == "x"


def test_trials_a_population_cannot_run_are_launched_alone(run_cli, mnist_root, tmp_path):
    run_cli(
        "-m",
        "optimizer.lr=0.05,0.1",
        "diagnostics=on",
        "hydra.sweeper.population=2",
        "trainer.max_epochs=1",
        *QUIET,
    )
    assert not list(tmp_path.glob("multirun/*/*/population.json"))
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert all(any(k.startswith("grad_norm/") for k in r.data.metrics) for r in runs)


def test_a_population_whose_members_all_diverge_ends_with_each_trial_failed(run_cli, mnist_root, tmp_path):
    run_cli(
        "-m",
        "hparams_search=lr",
        "hydra/sweeper/sampler=brute_force",
        "optimizer.lr=choice(1e30, 1e31)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.population=2",
        "hydra.sweeper.max_failure_rate=1.0",
        "trainer.max_epochs=2",
        *QUIET,
    )
    assert [t.state.name for t in _study(tmp_path).trials] == ["FAIL", "FAIL"]
    runs = [r for r in mlflow_runs(tmp_path) if "optimizer.lr" in r.data.params]
    assert {r.info.status for r in runs} == {"FAILED"}


def test_a_multi_objective_trial_runs_alone_not_in_a_population():
    """A population scores each member on one metric: a list of objectives is trained as single trials."""
    why = unsupported(OmegaConf.create({"optimized_metric": ["val/acc", "weights/zero_fraction"]}))
    assert why is not None and why.startswith("optimized_metric is a list")
    assert unsupported(OmegaConf.create({"optimized_metric": "val/acc"})) is None


SCHEDULE_MEMBERS = {
    # A step schedule: the warm-up length, the cosine's end and its floor differ per member.
    "step": (
        ["scheduler=warmup_cosine"],
        [
            ["scheduler.warmup=2", "scheduler.start_factor=0.1"],
            ["scheduler.warmup=5", "scheduler.T_max=9", "scheduler.eta_min=0.001"],
        ],
    ),
    # An epoch schedule: γ differs; the second epoch runs at each member's own decayed rate.
    "epoch": (
        ["scheduler=step", "scheduler.step_size=1"],
        [["scheduler.gamma=0.5"], ["scheduler.gamma=0.1"]],
    ),
}


@pytest.mark.parametrize("option", ["sgd", "adam"])
@pytest.mark.parametrize("interval", sorted(SCHEDULE_MEMBERS))
def test_a_member_with_its_own_schedule_ends_with_the_weights_of_a_standalone_run(
    compose, mnist_root: Path, option: str, interval: str
) -> None:
    """Members whose schedules differ in their numbers, over 2 epochs of 4 steps: member k's weights equal a
    standalone run of its config (Lightning stepping torch's scheduler), as for the optimisers."""
    schedule, numbers = SCHEDULE_MEMBERS[interval]
    lr = {"sgd": 0.1, "adam": 0.003}[option]
    common = [
        f"data.root={mnist_root}",
        "data.batch_size=50",
        "model.hidden=[16]",
        f"optimizer={option}",
        *schedule,
    ]
    members = [
        [f"optimizer.lr={lr}", "seed=1", *numbers[0]],
        [f"optimizer.lr={lr / 2}", "seed=2", *numbers[1]],
    ]
    configs = [_resolved(compose(*common, *m)) for m in members]
    datamodule = build_datamodule(compose(*common).data, seed=7)
    population = PopulationClassifier(configs, datamodule.image_shape, datamodule.num_classes)
    _fit(population, datamodule, epochs=2)
    for k, config in enumerate(configs):
        L.seed_everything(config["seed"], verbose=False)
        standalone = Classifier(config, datamodule.image_shape, datamodule.num_classes)
        _fit(standalone, build_datamodule(compose(*common).data, seed=7), epochs=2)
        assert population.schedules[k].lr == standalone.trainer.optimizers[0].param_groups[0]["lr"]
        expected, actual = standalone.model.state_dict(), population.net.member_state(k)
        for name in expected:
            torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6)


def test_a_searched_schedule_and_early_stopping_in_a_population_each_member_stops_on_its_own(
    run_cli, mnist_root, tmp_path
):
    """Optuna searches lr and the warm-up (hparams_search=warmup_cosine) in one population of 4; train/loss
    must fall by 1e-3 an epoch: the lr 1e-7 members stop after epoch 1 and leave, the others train on. A
    stopped trial is COMPLETE with its best val/acc, tested on its own best checkpoint."""
    run_cli(
        "-m",
        "hparams_search=warmup_cosine",
        "hydra/sweeper/sampler=brute_force",
        "optimizer.lr=choice(0.1, 1e-7)",
        "scheduler.warmup=choice(1, 2)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.population=4",
        "trainer.max_epochs=4",
        "callbacks.early_stopping.enabled=true",
        "callbacks.early_stopping.monitor=train/loss",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1e-3",
        *QUIET,
    )
    study = _study(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert len(list(tmp_path.glob("multirun/*/*/population.json"))) == 1  # one population
    runs = {r.info.run_id: r for r in mlflow_runs(tmp_path)}
    for trial in study.trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
        assert int(run.data.params["scheduler.warmup"]) == trial.params["scheduler.warmup"]
        if trial.params["optimizer.lr"] == 1e-7:
            assert run.data.tags["early_stopping.epoch"] == "1"
            assert len(trial.intermediate_values) == 2
        else:
            assert "early_stopping.epoch" not in run.data.tags
            assert len(trial.intermediate_values) == 4
        assert trial.value == max(trial.intermediate_values.values())  # its best epoch's val/acc
    [last] = tmp_path.glob("multirun/*/*/checkpoints/last.ckpt")
    assert len(torch.load(last, weights_only=True)["population_members"]) == 2
    assert len(list(tmp_path.glob("multirun/*/*/member_*/checkpoints/best.ckpt"))) == 4


def test_a_grid_sweep_trains_in_populations_by_default_and_one_job_a_trial_with_population_1(
    run_cli, mnist_root, tmp_path
):
    run_cli("-m", "seed=0,1,2", "trainer.max_epochs=1", *QUIET)
    [job] = [p.parent for p in tmp_path.glob("multirun/*/*/population.json")]  # 3 seeds, one job
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 3 and {r.data.tags["population.job"] for r in runs} == {job.name}
    assert len({r.data.metrics["train/loss"] for r in runs}) == 3  # each its own init and data order

    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "data").symlink_to(tmp_path / "data")
    run_cli("-m", "seed=0,1,2", "trainer.max_epochs=1", "hydra.sweeper.population=1", *QUIET, root=alone)
    assert not list(alone.glob("multirun/*/*/population.json"))
    sequential = {r.data.params["seed"]: r.data.metrics["train/loss"] for r in mlflow_runs(alone)}
    together = {r.data.params["seed"]: r.data.metrics["train/loss"] for r in runs}
    assert together == pytest.approx(sequential, rel=1e-4)  # the same runs either way
