"""Studies (`python src/study.py`, trainlab.study): claims stated in an experiment's config, checked before
any training, judged over seeds with Welch's test, Hedges' g and Holm's correction, reported as Markdown,
HTML and MLflow artifacts; the same command again reuses what is done. Real CLI in a subprocess, real
training on tiny data, a real MLflow SQLite store."""

from __future__ import annotations

import math
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env, mlflow_runs, write_mnist

STUDY = REPO / "src" / "study.py"
QUIET = ("trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0")

# A user's own experiment in a config folder of their own: plain SGD at two rates, four claims.
USER_STUDY = REPO / "tests" / "user_study"
MINE = (USER_STUDY / "experiment" / "two_rates.yaml").read_text()


def study(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(STUDY), *args, f"paths.root_dir={root}", *QUIET]
    result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=600, cwd=root)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture
def own_conf(tmp_path: Path) -> Path:
    folder = tmp_path / "my_conf"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(MINE.replace("two_rates", "mine"))
    write_mnist(tmp_path / "data")
    return folder


def test_holm_hedges_and_the_one_sample_test_follow_their_definitions():
    from trainlab.repeats.stats import hedges_g, holm, one_sample_p, summarize

    # Holm: the i-th smallest of m times m − i + 1, kept non-decreasing, at most 1.
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    # Hedges' g: (mean difference / pooled std) · (1 − 3 / (4 df − 1)).
    assert hedges_g([1, 2, 3, 4], [2, 3, 4, 5]) == pytest.approx(-1 / math.sqrt(5 / 3) * (1 - 3 / 23))
    assert hedges_g([0.1] * 3, 0.2) == -math.inf  # no spread: A is exactly below the threshold
    # The one-sample test rejects (p < 0.05) exactly when the 95 % CI leaves the threshold out.
    rng = random.Random(7)
    for _ in range(50):
        values = [rng.gauss(0.5, 0.1) for _ in range(rng.randint(2, 8))]
        threshold = rng.uniform(0.3, 0.7)
        summary = summarize(values)
        assert (one_sample_p(values, threshold) < 0.05) == (not summary.low <= threshold <= summary.high)


def test_a_users_own_claims_are_judged_over_seeds_and_reported_and_the_same_command_reuses_them(
    own_conf, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the API call below reads this test's store
    args = ("experiment=mine", "repeats=4", f"--config-dir={own_conf}", "name=mine")
    first = study(tmp_path, *args)
    assert "study mine: 1 experiments, 8 runs, 0 done" in first.stdout
    table = first.stdout[first.stdout.index("| claim") :]
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:] if line.startswith("|")
    }
    assert "**holds**" in rows["a rate of 0.5 learns faster than 1e-4"]
    assert "does not hold: A's mean is not above B's" in rows["a rate of 1e-4 learns faster than 0.5"]
    assert "**holds**" in rows["a rate of 1e-4 stays near chance"]
    assert (
        "not judged: its threshold was set on cifar10; this study ran mnist"
        in rows["a rate of 0.5 reaches 0.5 (a CIFAR-10 threshold)"]
    )
    assert "data mnist; 2 of 3 judged claims hold (4 stated)" in first.stdout

    folder = tmp_path / "multirun" / "mine"
    markdown = (folder / "report.md").read_text()
    assert "![mine](figures/mine_accuracy.png)" in markdown and "| a rate of 0.5 learns" in markdown
    assert (folder / "figures" / "mine_accuracy.png").stat().st_size > 10_000
    page = (folder / "report.html").read_text()
    assert (
        '<img alt="mine" src="data:image/png;base64,' in page and "a rate of 1e-4 stays near chance" in page
    )

    runs = mlflow_runs(tmp_path, "mine")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    [record] = mlflow_runs(tmp_path, "studies")
    assert record.data.tags["study.name"] == "mine"
    assert record.info.status == "FINISHED" and record.data.metrics["claims.holds"] == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    logged = {a.path for a in client.list_artifacts(record.info.run_id)}
    assert {"report.md", "report.html", "claims.csv", "figures"} <= logged
    members = [r for r in runs if "group.member" in r.data.tags]
    assert len(members) == 8
    # Both rates' 4 seeds trained as ONE population job, each rate still its own group and parent run.
    [population] = list((tmp_path / "multirun" / "mine.mine").rglob("groups.json"))
    assert len(list(population.parent.glob("*/group.json"))) == 2
    parents = {
        r.info.run_id for r in runs if "group.runs" in r.data.tags and "group.member" not in r.data.tags
    }
    assert len(parents) == 2 and {r.data.tags["mlflow.parentRunId"] for r in members} == parents

    again = study(tmp_path, *args)  # nothing left to train: the report is drawn again from MLflow
    assert "[1/1] mine: 8 runs done, reused" in again.stdout
    assert len([r for r in mlflow_runs(tmp_path, "mine") if "group.member" in r.data.tags]) == 8
    status = study(tmp_path, *args, "--status")
    assert "[1/1] mine: 8 runs done, reused" in status.stdout and "| claim" not in status.stdout

    # In a notebook: the same report as an object Jupyter shows, its table a DataFrame.
    from trainlab.api import study as api_study

    shown = api_study(*args[:2], "name=mine", f"paths.root_dir={tmp_path}", *QUIET, config_dir=own_conf)
    assert list(shown.table["holds"]) == [True, False, True, False]
    assert "data:image/png;base64," in shown._repr_html_()


@pytest.mark.parametrize(
    "claim, message",
    [
        (
            "{name: x, metric: curve/test/acc, a: {optimizer.lr: 0.3}, b: {optimizer.lr: 0.5}, expect: more}",
            "error: mine: claims[0].a.optimizer.lr='0.3': must be one of the sweep's values 0.5, 0.0001",
        ),
        (
            "{name: x, metric: curve/test/acc, a: {model.hidden: 3}, expect: chance}",
            "error: mine: claims[0].a.model.hidden=3: not a key the sweep varies (it varies optimizer.lr)",
        ),
        (
            "{name: x, metric: test/f1, a: {optimizer.lr: 0.5}, expect: chance}",
            "error: claims[0].metric='test/f1': must be one of curve/test/acc, curve/test/loss,",
        ),
        (
            "{name: x, metric: test/acc, a: {optimizer.lr: 0.5}, expect: better}",
            "error: claims[0].expect='better': must be one of more, less, chance, reaches",
        ),
        (
            "{name: x, metric: test/acc, a: {optimizer.lr: 0.5}, expect: more}",
            "error: claims[0].b=None: must be the variant that `a` is more than",
        ),
    ],
)
def test_a_claim_the_sweep_cannot_judge_is_one_line_before_any_training(own_conf, tmp_path, claim, message):
    mine = own_conf / "experiment" / "mine.yaml"
    mine.write_text(MINE[: MINE.index("claims:")].replace("two_rates", "mine") + f"claims:\n  - {claim}\n")
    result = study(tmp_path, "experiment=mine", f"--config-dir={own_conf}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "multirun").exists()  # nothing trained, nothing written
    db = tmp_path / "mlruns" / "mlflow.db"
    assert not db.exists() or not sqlite3.connect(db).execute("SELECT * FROM runs").fetchall()


def test_the_experiments_state_the_studys_claims_and_every_claim_picks_one_variant():
    """Every shipped experiment's claims pass the checks a study makes (the benchmark holds none)."""
    from hydra import compose, initialize_config_dir

    from trainlab.claims import read_claims, select
    from trainlab.studies.run import _variants

    stated = 0
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
            cfg = compose("train", [f"experiment={path.stem}"], return_hydra_config=True)
            claims = read_claims(cfg)
            variants = [dict(o.split("=", 1) for o in job) for job in _variants(cfg, [])]
            select(claims, variants, path.stem)
            stated += len(claims)
    assert stated >= 18
    assert "CLAIMS" not in (REPO / "benchmarks" / "study.py").read_text()
