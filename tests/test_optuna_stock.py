"""The stock hydra-optuna-sweeper's own test module, ported: its example apps (tests/optuna_apps/, written
anew) run unchanged as real Hydra apps in subprocesses against this sweeper, and the same behaviours are
asserted. Where this sweeper differs on purpose (docs/sweeps.md, "Coming from hydra-optuna-sweeper"), the
test says so. Also the name rule: who answers to `hydra/sweeper=optuna` when the stock plugin is installed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from conftest import cli_env
from hydra_plugins.trainlab_optuna_sweeper.config import MOTPESamplerConf
from hydra_plugins.trainlab_optuna_sweeper.optuna_sweeper import OptunaSweeper
from hydra_plugins.trainlab_optuna_sweeper.search_space import (
    from_config,
    from_search_space,
    parse_search_space,
    to_distribution,
    to_grammar,
)

APPS = Path(__file__).parent / "optuna_apps"


def run_app(script: str, sweep_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python <app> --multirun hydra.sweep.dir=<sweep_dir> OVERRIDES`, from the apps' folder."""
    flags = [o for o in overrides if o.startswith("--")]  # argparse wants them before the overrides
    rest = [o for o in overrides if not o.startswith("--")]
    cmd = [sys.executable, script, "--multirun", *flags, f"hydra.sweep.dir={sweep_dir}", *rest]
    result = subprocess.run(cmd, cwd=APPS, env=cli_env(), capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def results(sweep_dir: Path) -> OmegaConf:
    return OmegaConf.load(sweep_dir / "optimization_results.yaml")


def test_discovery():
    assert OptunaSweeper.__name__ in [plugin.__name__ for plugin in Plugins.instance().discover(Sweeper)]


def test_hydras_plugin_scan_imports_no_optuna_torch_or_mlflow():
    """Hydra imports every plugin module at each start: this one's must stay light."""
    code = (
        "import sys; from hydra.core.plugins import Plugins; Plugins.instance(); "
        "print(sorted(m for m in ('optuna', 'torch', 'mlflow', 'trainlab') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # The stock plugin's cases; its deprecated classes are these distributions in Optuna ≥ 3.
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=shuffle(range(1,3))", CategoricalDistribution([1, 2])),
        ("key=range(1,3)", IntDistribution(1, 3)),
        ("key=interval(1, 5)", FloatDistribution(1, 5)),
        ("key=int(interval(1, 5))", IntDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
        ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
        ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
        ("optimizer=choice(sgd, momentum, adam)", CategoricalDistribution(["sgd", "momentum", "adam"])),
    ],
)
def test_create_optuna_distribution_from_override(override, expected):
    actual = to_distribution(OverridesParser.create().parse_overrides([override])[0])
    if isinstance(expected, CategoricalDistribution):  # shuffle() permutes the choices
        assert isinstance(actual, CategoricalDistribution)
        assert sorted(map(str, actual.choices)) == sorted(map(str, expected.choices))
    else:
        assert actual == expected


@pytest.mark.parametrize(
    "distribution",
    [
        CategoricalDistribution([1, 2]),
        CategoricalDistribution([True, False, 1.5, "hello world"]),
        IntDistribution(1, 3),
        IntDistribution(0, 10, step=2),
        IntDistribution(1, 5, log=True),
        FloatDistribution(1e-5, 1.0, log=True),
        FloatDistribution(-5.5, 5.5, step=0.5),
    ],
)
def test_a_distribution_is_shown_in_the_sweep_grammar_that_gives_it_back(distribution):
    """What a message shows of a search space (`to_grammar`) is what a user writes for it."""
    override = OverridesParser.create().parse_overrides([f"key={to_grammar(distribution)}"])[0]
    assert to_distribution(override) == distribution


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # The stock plugin's cases for its deprecated `search_space` entries, in Optuna >= 3's classes.
        ({"type": "categorical", "choices": [1, 2, 3]}, CategoricalDistribution([1, 2, 3])),
        ({"type": "int", "low": 0, "high": 10}, IntDistribution(0, 10)),
        ({"type": "int", "low": 0, "high": 10, "step": 2}, IntDistribution(0, 10, step=2)),
        ({"type": "int", "low": 0, "high": 5}, IntDistribution(0, 5)),
        ({"type": "int", "low": 1, "high": 100, "log": True}, IntDistribution(1, 100, log=True)),
        ({"type": "float", "low": 0, "high": 1}, FloatDistribution(0, 1)),
        ({"type": "float", "low": 0, "high": 10, "step": 2}, FloatDistribution(0, 10, step=2)),
        ({"type": "float", "low": 1, "high": 100, "log": True}, FloatDistribution(1, 100, log=True)),
    ],
)
def test_create_optuna_distribution_from_config(config, expected):
    assert from_config("key", OmegaConf.create(config)) == expected


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"type": "normal", "low": 0, "high": 1}, "hydra.sweeper.search_space.key={'type': 'normal'"),
        ({"type": "float", "low": 0}, "hydra.sweeper.search_space.key={'type': 'float', 'low': 0}: must be"),
        ({"type": "int", "low": 0, "high": 1, "q": 1}, "hydra.sweeper.search_space.key.q: not a key"),
    ],
)
def test_a_search_space_entry_that_is_no_distribution_is_named_in_the_error(config, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        from_config("key", OmegaConf.create(config))


@pytest.mark.parametrize(
    ("search_space", "params", "message"),
    [
        (None, None, None),
        ({}, {}, r"Both hydra.sweeper.params and hydra.sweeper.search_space are configured.*"),
        (
            {},
            None,
            r"`hydra.sweeper.search_space` is deprecated and will be removed in the next major release.*",
        ),
        (None, {}, None),
    ],
)
def test_warnings(search_space, params, message):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from_search_space(search_space, params)
    texts = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if message is None:
        assert texts == []
    else:
        assert len(texts) == 1 and re.match(message, texts[0])


def test_params_win_over_the_deprecated_search_space_and_it_is_used_alone():
    with pytest.warns(UserWarning, match="Both"):
        assert from_search_space({"x": {"type": "int", "low": 0, "high": 3}}, {"y": "choice(1, 2)"}) == {}
    with pytest.warns(UserWarning, match="deprecated"):
        space = from_search_space({"x": {"type": "int", "low": 0, "high": 3}}, None)
    assert space == {"x": IntDistribution(0, 3)}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["key=choice(1,2)"], ({"key": CategoricalDistribution([1, 2])}, {})),
        (["key=5"], ({}, {"key": "key=5"})),
        (["key1=choice(1,2)", "key2=5"], ({"key1": CategoricalDistribution([1, 2])}, {"key2": "key2=5"})),
        (
            ["key1=choice(1,2)", "key2=5", "key3=range(1,3)"],
            ({"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 3)}, {"key2": "key2=5"}),
        ),
        (["~z"], ({}, {"~z": "~z"})),
        (["~z=10"], ({}, {"~z": "~z=10"})),
        # trainlab's addition: the command line wins over hydra.sweeper.params for the same key.
        (["key=choice(1,2)", "key=6"], ({}, {"key": "key=6"})),
    ],
)
def test_create_params_from_overrides(overrides, expected):
    assert parse_search_space(overrides) == expected


def test_launch_jobs_in_batches_of_n_jobs_through_the_basic_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    run_app("sphere.py", sweep, "hydra/launcher=basic", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=3")
    assert sorted(int(p.name) for p in sweep.iterdir() if p.name.isdigit()) == list(range(8))
    study = optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 8


def test_storage_null_keeps_the_study_beside_the_sweep_folder_so_the_next_sweep_resumes_it(tmp_path):
    """The stock plugin keeps a null storage's study in memory; here the next sweep folder beside it
    (a new timestamp under the same parent, as Hydra's default names them) finds the study again."""
    run_app("sphere.py", tmp_path / "first", "hydra.sweeper.n_trials=3")
    run_app("sphere.py", tmp_path / "second", "hydra.sweeper.n_trials=5")
    study = optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    assert results(tmp_path / "second").trials == {"COMPLETE": 5}


@pytest.mark.parametrize("with_commandline", [True, False])
def test_optuna_example(with_commandline, tmp_path):
    storage, study_name = f"sqlite:///{tmp_path}/test.db", "test-optuna-example"
    overrides = [
        "hydra.job.chdir=True", "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1",
        f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study_name}",
        "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=123", "~z",
    ]  # fmt: skip
    if with_commandline:
        overrides += ["x=choice(0, 1, 2)", "y=0"]  # y: a fixed parameter
    run_app("sphere.py", tmp_path / "sweep", *overrides)
    returns = results(tmp_path / "sweep")
    best = optuna.load_study(storage=storage, study_name=study_name).best_trial
    assert returns.name == "optuna"
    assert returns.best_params.x == best.params["x"]
    if with_commandline:
        assert "y" not in returns.best_params and "y" not in best.params
    else:
        assert returns.best_params.y == best.params["y"]
    assert returns.best_value == best.value
    # The stock test's bound: the 95th percentile of TPE's best over 1000 seeds.
    assert returns.best_value <= 2.27


@pytest.mark.parametrize("num_trials", [10, 1])
def test_example_with_grid_sampler(num_trials, tmp_path):
    storage = f"sqlite:///{tmp_path}/test.db"
    run_app(
        "sphere.py", tmp_path / "sweep", f"--config-dir={APPS / 'test-conf'}", "--config-name=test_grid",
        "hydra.job.chdir=False", f"hydra.sweeper.n_trials={num_trials}", "hydra.sweeper.n_jobs=1",
        f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=test-grid-sampler",
    )  # fmt: skip
    returns = results(tmp_path / "sweep")
    best = returns.best_params
    assert best.x in [-1, 1] and best.z in ["foo", "bar"]
    # The grid holds range(-1.0, 1.0, step=1)'s every value, 1.0 included as the distribution has it (the
    # stock plugin leaves the end out); 10 of its 12 points always include one with y=0, the best.
    assert best.y in ([0] if num_trials == 10 else [-1, 0, 1])
    study = optuna.load_study(study_name="test-grid-sampler", storage=storage)
    assert len(study.trials) == num_trials
    assert len({tuple(t.params.values()) for t in study.trials}) == num_trials  # no point twice


def test_example_with_deprecated_search_space(tmp_path):
    """The stock 1.3 config with `hydra.sweeper.search_space` (no params) runs, with its warning."""
    result = run_app(
        "sphere.py", tmp_path / "sweep", f"--config-dir={APPS / 'test-conf'}",
        "--config-name=test_deprecated_search_space", "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=1",
    )  # fmt: skip
    returns = results(tmp_path / "sweep")
    assert returns.name == "optuna"
    assert abs(returns["best_params"]["x"]) <= 5.5
    assert "`hydra.sweeper.search_space` is deprecated" in result.stderr
    study = optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert {t.distributions["x"] for t in study.trials} == {FloatDistribution(-5.5, 5.5, step=0.5)}


def test_a_search_space_entry_that_is_no_distribution_stops_the_sweep_before_a_trial(tmp_path):
    result = run_app(
        "sphere.py", tmp_path / "sweep", f"--config-dir={APPS / 'test-conf'}",
        "--config-name=test_deprecated_search_space", "hydra.sweeper.search_space.x.type=normal", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        "hydra.sweeper.search_space.x={'type': 'normal', 'low': -5.5, 'high': 5.5, 'step': 0.5}: must be"
        in (result.stderr)
    )
    assert not (tmp_path / "optuna.db").exists()


def test_params_beside_the_deprecated_search_space_win_with_the_stock_warning(tmp_path):
    result = run_app(
        "sphere.py", tmp_path / "sweep", f"--config-dir={APPS / 'test-conf'}",
        "--config-name=test_search_space_and_params", "hydra.sweeper.n_trials=2",
    )  # fmt: skip
    assert "Both hydra.sweeper.params and hydra.sweeper.search_space are configured" in result.stderr
    study = optuna.load_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert {tuple(t.params) for t in study.trials} == {("y",)}


def _dominates(a: list[float], b: list[float]) -> bool:
    """a is no worse than b in every objective (minimised) and better in one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def _pareto_check(returns, tmp_path: Path, integer: bool) -> None:
    """The solutions are exactly the study's non-dominated trials (the stock test compared the solution
    dicts' keys, which never dominate: here, their values)."""
    solutions = list(returns.solutions)
    front = [list(s["values"]) for s in solutions]
    assert solutions
    for solution in solutions:
        assert solution.params.x % 1 in ({0} if integer else {0, 0.5})
        assert solution.params.y % 1 in ({0} if integer else {0, 0.5})
    assert not any(_dominates(a, b) for a in front for b in front)
    study = optuna.load_study(study_name="multi-objective", storage=f"sqlite:///{tmp_path}/optuna.db")
    complete = [t.values for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 20
    non_dominated = [v for v in complete if not any(_dominates(w, v) for w in complete)]
    assert sorted(map(tuple, front)) == sorted(map(tuple, non_dominated))


@pytest.mark.parametrize("with_commandline", [True, False])
def test_optuna_multi_objective_example(with_commandline, tmp_path):
    overrides = [
        "hydra.job.chdir=True", "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1",
        "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123",
    ]  # fmt: skip
    if with_commandline:
        overrides += ["x=range(0, 5)", "y=range(0, 3)"]
    run_app("multi-objective.py", tmp_path / "sweep", *overrides)
    returns = results(tmp_path / "sweep")
    assert returns.name == "optuna"
    _pareto_check(returns, tmp_path, integer=with_commandline)


def test_optuna_custom_search_space_example(tmp_path):
    max_difference = 0.3
    run_app(
        "custom-search-space-objective.py", tmp_path / "sweep", "hydra.job.chdir=True",
        "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1", "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=123", f"max_z_difference_from_x={max_difference}",
    )  # fmt: skip
    returns = results(tmp_path / "sweep")
    assert returns.name == "optuna"
    assert abs(returns.best_params.x - returns.best_params.z) <= max_difference
    assert 0 <= returns.best_params["+w"] <= 1


@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_failure_rate(max_failure_rate, tmp_path):
    result = run_app(
        "sphere.py", tmp_path / "sweep", "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=2", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123",
        f"hydra.sweeper.max_failure_rate={max_failure_rate}", "error=true", check=False,
    )  # fmt: skip
    error = "RuntimeError: cfg.error is True"
    if max_failure_rate < 1.0:
        # Stopped, exit 1, after the batch (n_jobs=2) in which more than max_failure_rate × n_trials had
        # failed (the stock plugin: more than max_failure_rate of one batch).
        assert result.returncode == 1 and error in result.stderr
        assert "12 of 12 trials failed, more than max_failure_rate=0.5 of n_trials=20" in result.stderr
    else:
        assert result.returncode == 0 and error not in result.stderr
        assert results(tmp_path / "sweep").trials == {"FAIL": 20}


def test_motpe_sampler_is_tpe_in_current_optuna():
    """The stock plugin now raises for motpe; here it is what Optuna 4 made of it, a TPESampler."""
    assert isinstance(instantiate(OmegaConf.structured(MOTPESamplerConf)), optuna.samplers.TPESampler)


def test_example_with_motpe_runs_multi_objective_tpe(tmp_path):
    result = run_app(
        "multi-objective.py", tmp_path / "sweep", f"--config-dir={APPS / 'test-conf'}",
        "--config-name=test_motpe", "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=1",
    )  # fmt: skip
    assert "sampler=motpe: Optuna 4 folded MOTPESampler into TPESampler" in result.stdout + result.stderr
    _pareto_check(results(tmp_path / "sweep"), tmp_path, integer=False)


OURS = "hydra_plugins.trainlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
STOCK = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


@pytest.fixture(scope="module")
def stock_plugin(tmp_path_factory) -> Path:
    """A folder holding the real hydra-optuna-sweeper (no dependencies), to put on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("stock")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder)]
    installed = subprocess.run([*pip, "hydra-optuna-sweeper"], capture_output=True, text=True, timeout=300)
    if installed.returncode != 0:
        pytest.skip(f"hydra-optuna-sweeper could not be installed: {installed.stderr.strip()[-300:]}")
    return folder


def sweeper_target(*overrides: str, pythonpath: Path | None = None) -> str:
    """The `_target_` that `hydra/sweeper=…` selects for the sphere app, as Hydra composes it."""
    env = cli_env(**({"PYTHONPATH": str(pythonpath)} if pythonpath else {}))
    cmd = [sys.executable, "sphere.py", "--cfg", "hydra", "--package", "hydra.sweeper", *overrides]
    result = subprocess.run(cmd, cwd=APPS, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return OmegaConf.create(result.stdout)["_target_"]


def test_optuna_names_this_sweeper_where_the_stock_plugin_is_not_installed():
    assert sweeper_target() == OURS  # the app's config says hydra/sweeper: optuna
    assert sweeper_target("hydra/sweeper=trainlab_optuna") == OURS


def test_with_the_stock_plugin_installed_optuna_is_the_stock_one_and_trainlab_optuna_this_one(
    stock_plugin, tmp_path
):
    assert sweeper_target(pythonpath=stock_plugin) == STOCK
    assert sweeper_target("hydra/sweeper=trainlab_optuna", pythonpath=stock_plugin) == OURS
    # This sweeper runs on the stock plugin's sampler entries, which then answer to hydra/sweeper/sampler.
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "sphere.py", "--multirun", f"hydra.sweep.dir={sweep}",
        "hydra/sweeper=trainlab_optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=3",
    ]  # fmt: skip
    env = cli_env(PYTHONPATH=str(stock_plugin))
    result = subprocess.run(cmd, cwd=APPS, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert results(sweep).trials == {"COMPLETE": 3}


# Another app through trainlab's sweepers: its configs share keys with trainlab's train.yaml, not its task.
HYDRA_APPS = Path(__file__).parent / "hydra_apps"
APP_CONFIGS = ["no_paths", "no_trainer", "structured"]
# Jobs that trainlab would train as populations (they differ in their seeds only, two by two).
GRID = ["seed=0,1", "model.width=8,16"]


def run_hydra_app(*args: str) -> subprocess.CompletedProcess:
    """`python app.py -m ARGS` from tests/hydra_apps/, which must exit 0 without a traceback."""
    cmd = [sys.executable, "app.py", "-m", *args]
    result = subprocess.run(cmd, cwd=HYDRA_APPS, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def sweep_folder(sweep_dir: Path) -> dict[str, object]:
    """Each file of a sweep folder by its path in it (YAML as data), less what names the sweeper and the
    folder itself: the one thing that `hydra/sweeper=grid` instead of `basic` may change."""
    files: dict[str, object] = {}
    for path in sorted(p for p in sweep_dir.rglob("*") if p.is_file()):
        text = path.read_text().replace(str(sweep_dir), "SWEEP")
        data = yaml.safe_load(text) if path.suffix == ".yaml" else text
        if isinstance(data, dict) and "hydra" in data:
            data["hydra"].pop("sweeper")
            data["hydra"]["runtime"]["choices"].pop("hydra/sweeper")
            hydra_overrides = data["hydra"]["overrides"]["hydra"]
            data["hydra"]["overrides"]["hydra"] = [o for o in hydra_overrides if "sweeper" not in o]
        files[str(path.relative_to(sweep_dir))] = data
    return files


def sweep_in_process(config: str, sweeper: str, sweep_dir: Path) -> list[list[tuple]]:
    """What the sweeper returns to Hydra for the app's grid: each job's overrides, status, value, config."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    spec = importlib.util.spec_from_file_location("hydra_app", HYDRA_APPS / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    GlobalHydra.instance().clear()
    overrides = [f"hydra/sweeper={sweeper}", f"hydra.sweep.dir={sweep_dir}", *GRID]
    try:
        with initialize_config_dir(str(HYDRA_APPS / "conf"), version_base="1.3", job_name="app"):
            batches = GlobalHydra.instance().hydra.multirun(config, app.main.__wrapped__, overrides)
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    return [[(r.overrides, r.status, r.return_value, r.cfg) for r in batch] for batch in batches]


@pytest.mark.parametrize("config", APP_CONFIGS)
def test_the_grid_sweeper_runs_another_apps_sweep_exactly_as_hydras_basic_sweeper(config, tmp_path):
    """Same jobs, order, overrides, folders, outputs and multirun.yaml from `-m`, and the same returns."""
    for sweeper in ("grid", "basic"):
        folder = f"hydra.sweep.dir={tmp_path / sweeper}"
        run_hydra_app(f"--config-name={config}", f"hydra/sweeper={sweeper}", folder, *GRID)
    grid, basic = sweep_folder(tmp_path / "grid"), sweep_folder(tmp_path / "basic")
    assert grid == basic
    assert [grid[f"{job}/value.txt"] for job in range(4)] == ["0.8\n", "1.6\n", "1.8\n", "2.6\n"]
    returns = sweep_in_process(config, "grid", tmp_path / "in_grid")
    assert returns == sweep_in_process(config, "basic", tmp_path / "in_basic")
    assert [value for _, _, value, _ in returns[0]] == [0.8, 1.6, 1.8, 2.6]


def test_another_apps_optuna_search_runs_one_trial_a_job_even_with_model_and_trainer(tmp_path):
    """Populations are trainlab's task's: an app whose config has `model` and `trainer` too (as a
    lightning-hydra-template app's has) gets plain jobs, and a `population=K` set by hand is ignored."""
    for population in ("null", "3"):
        sweep = tmp_path / population / "sweep"  # a study of its own beside it
        result = run_hydra_app(
            f"hydra.sweep.dir={sweep}", "hydra/sweeper=trainlab_optuna", "hydra.sweeper.n_trials=3",
            f"hydra.sweeper.population={population}", "lr=interval(0.1, 0.2)",
        )  # fmt: skip
        assert results(sweep).trials == {"COMPLETE": 3}
        assert sorted(p.parent.name for p in sweep.glob("*/value.txt")) == ["0", "1", "2"]
    assert "hydra.sweeper.population=3 ignored: populations train trainlab's task" in result.stdout


# A study resumes only the search it was created for: the stock example's config names its study `sphere`.
X_RANGE = {"low": -5.5, "high": 5.5, "step": 0.5, "log": False}  # range(-5.5, 5.5, step=0.5)
STUDY_RECORD = {
    "space": {
        "x": {"name": "FloatDistribution", "attributes": X_RANGE},
        "y": {"name": "CategoricalDistribution", "attributes": {"choices": [-5, 0, 5]}},
    },
    "direction": ["minimize"],
    "objective": "the task's return value",
    "app": "sphere/config",
}
WAY_OUT = "to start a new study, set another hydra.sweeper.study_name or a new hydra.sweeper.storage"


def sphere_study(tmp_path: Path, name: str = "sphere") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")


def test_a_study_is_resumed_only_for_its_search_else_one_line_and_nothing_written(tmp_path):
    run_app("sphere.py", tmp_path / "first", "hydra.sweeper.n_trials=2")
    before = sphere_study(tmp_path)
    assert before.user_attrs["search"] == STUDY_RECORD
    storage = f"sqlite:///{tmp_path}/optuna.db"
    changes = {
        "x=range(-5.5, 0.5, step=0.5)": (
            "search space x=range(-5.5, 5.5, step=0.5), now x=range(-5.5, 0.5, step=0.5)"
        ),
        "hydra.sweeper.direction=maximize": "direction minimize, now maximize",
    }
    for change, differs in changes.items():
        result = run_app("sphere.py", tmp_path / "again", "hydra.sweeper.n_trials=4", change, check=False)
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"error: study sphere in {storage} was created for another search: {differs}; {WAY_OUT}"
        )
    after = sphere_study(tmp_path)
    assert len(after.trials) == 2 and after.user_attrs == before.user_attrs
    assert not (tmp_path / "again").exists()


def test_another_app_meeting_a_study_of_the_same_name_in_the_same_folder_is_stopped(tmp_path):
    run_app("sphere.py", tmp_path / "first", "hydra.sweeper.n_trials=1")
    other = "custom-search-space-objective.py"
    result = run_app(other, tmp_path / "second", "hydra.sweeper.study_name=sphere", check=False)
    assert result.returncode == 2
    assert "app sphere/config, now custom-search-space-objective/config; " in result.stderr
    assert len(sphere_study(tmp_path).trials) == 1


def test_a_study_of_an_earlier_trainlab_without_a_record_is_resumed_and_recorded(tmp_path):
    optuna.create_study(study_name="sphere", storage=f"sqlite:///{tmp_path}/optuna.db")
    run_app("sphere.py", tmp_path / "sweep", "hydra.sweeper.n_trials=2")
    study = sphere_study(tmp_path)
    assert len(study.trials) == 2 and study.user_attrs["search"] == STUDY_RECORD


def test_with_the_default_study_name_another_search_space_is_another_study(tmp_path):
    run_app("sphere.py", tmp_path / "first", "hydra.sweeper.study_name=null", "hydra.sweeper.n_trials=1")
    run_app(
        "sphere.py", tmp_path / "second", "hydra.sweeper.study_name=null", "hydra.sweeper.n_trials=1",
        "x=range(-5.5, 0.5, step=0.5)",
    )  # fmt: skip
    studies = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/optuna.db")
    assert len(studies) == 2 and all(s.n_trials == 1 for s in studies)
