"""The study's conclusions with error bars (docs/experiments.md, "Which conclusions hold"): exercises 1–5
(6, the AlexNet-style net, with `--only alexnet`: 27 minutes for its 5 seeds on 2 cores) with
`repeats=5` on the MNIST subset (or `--data fashion_mnist`), then one row per conclusion: the compared
variants' last curve points (test accuracy, or train − test accuracy) as mean ± 95 % CI, a Welch t-test
p-value, and whether the conclusion holds.

    python benchmarks/study.py --work /tmp/study                     # train, then print the table
    python benchmarks/study.py --work /tmp/study --only overfitting --table-only

A conclusion "A beats B" holds when A's mean is the better one and Welch's p < 0.05; "stays at chance"
when the upper end of the 95 % CI of test accuracy is below 0.2; "reaches X" when its lower end is at or
above X (the spec's thresholds are MNIST's: with other data they are shown, not judged).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from trainlab.repeats.stats import Summary, summarize, welch_p  # noqa: E402

QUIET = [
    "hydra.job_logging.root.level=WARNING",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.accelerator=cpu",
]
# (exercise, conclusion, metric, A, B, how): A and B select a group by its runs' tags (`choice.<group>`)
# or params; how: "more" (A's mean above B's), "less" (below), "chance" (A's CI below 0.2; B unused), or
# a number: the spec's threshold on MNIST (A's CI above it; B unused; not judged on other data).
CLAIMS = [
    (
        "vanishing_gradient",
        "sigmoid + N(0, 0.01²) never leaves chance",
        "curve/test/acc",
        {"model.activation": "sigmoid", "choice.init": "normal"},
        None,
        "chance",
    ),
    (
        "vanishing_gradient",
        "ReLU + N(0, 0.01²) learns (beats sigmoid + N(0, 0.01²))",
        "curve/test/acc",
        {"model.activation": "relu", "choice.init": "normal"},
        {"model.activation": "sigmoid", "choice.init": "normal"},
        "more",
    ),
    (
        "vanishing_gradient",
        "ReLU + He beats ReLU + Xavier",
        "curve/test/acc",
        {"model.activation": "relu", "choice.init": "he"},
        {"model.activation": "relu", "choice.init": "xavier"},
        "more",
    ),
    (
        "vanishing_gradient",
        "ReLU + He beats sigmoid + Xavier",
        "curve/test/acc",
        {"model.activation": "relu", "choice.init": "he"},
        {"model.activation": "sigmoid", "choice.init": "xavier"},
        "more",
    ),
    (
        "batch_norm",
        "batch norm beats no batch norm",
        "curve/test/acc",
        {"choice.norm": "batch"},
        {"choice.norm": "none"},
        "more",
    ),
    (
        "optimizers",
        "Adam beats SGD (lr 0.01)",
        "curve/test/acc",
        {"choice.optimizer": "adam"},
        {"choice.optimizer": "sgd"},
        "more",
    ),
    (
        "optimizers",
        "RMSProp beats AdaGrad",
        "curve/test/acc",
        {"choice.optimizer": "rmsprop"},
        {"choice.optimizer": "adagrad"},
        "more",
    ),
    ("optimizers", "SGD stays near chance", "curve/test/acc", {"choice.optimizer": "sgd"}, None, "chance"),
    (
        "optimizers",
        "momentum stays near chance",
        "curve/test/acc",
        {"choice.optimizer": "momentum"},
        None,
        "chance",
    ),
    (
        "optimizers",
        "AdaGrad stays near chance",
        "curve/test/acc",
        {"choice.optimizer": "adagrad"},
        None,
        "chance",
    ),
    *(
        (
            "overfitting",
            f"{name} narrows the train–test gap",
            "gap",
            {"variant": key},
            {"variant": "baseline"},
            "less",
        )
        for key, name in (
            ("l2", "L2 λ=0.1"),
            ("l1", "L1 λ=0.005"),
            ("dropout", "dropout 0.15"),
            ("dropout_l1", "dropout + L1"),
        )
    ),
    *(
        (
            "overfitting",
            f"{name} raises test accuracy (the study does not claim it)",
            "curve/test/acc",
            {"variant": key},
            {"variant": "baseline"},
            "more",
        )
        for key, name in (("l2", "L2 λ=0.1"), ("dropout", "dropout 0.15"))
    ),
    ("simple_cnn", "the simple CNN reaches 0.94 (1000 iterations)", "curve/test/acc", {}, None, 0.94),
    ("alexnet", "the AlexNet-style net reaches 0.99 (10 epochs)", "curve/test/acc", {}, None, 0.99),
]


def train(exercise: str, work: Path, data: list[str]) -> None:
    command = [sys.executable, str(REPO / "src" / "train.py"), "-m", f"experiment={exercise}", "repeats=5"]
    subprocess.run([*command, f"paths.root_dir={work}", *data, *QUIET], check=True, cwd=work)


def groups(work: Path, exercise: str) -> list[tuple[dict[str, str], list]]:
    """The latest sweep's groups: (the parent's tags and params, its runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(exercise)
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"], max_results=5000)
    sweep = next(r.data.tags["sweep_dir"] for r in runs if "sweep_dir" in r.data.tags)
    runs = [r for r in runs if r.data.tags.get("sweep_dir") == sweep]
    parents = [r for r in runs if "group.repeats" in r.data.tags]
    return [
        (
            {**p.data.params, **p.data.tags},
            [r for r in runs if r.data.tags.get("group.parent") == p.info.run_id],
        )
        for p in parents
    ]


def values(found: list, selector: dict[str, str], metric: str) -> list[float]:
    """`metric` of each run of the group `selector` picks: its latest value (a curve's last point), or for
    "gap" the last curve point's train − test accuracy, as the exercise's report computes it."""
    [runs] = [runs for keys, runs in found if all(keys.get(k) == v for k, v in selector.items())]
    if metric == "gap":
        return [r.data.metrics["curve/train/acc"] - r.data.metrics["curve/test/acc"] for r in runs]
    return [r.data.metrics[metric] for r in runs if metric in r.data.metrics]


def reaches(summary: Summary, threshold: float, on_mnist: bool) -> str:
    """The verdict on "reaches `threshold`": the whole 95 % CI at or above it (judged on MNIST only)."""
    if not on_mnist:
        return "– (set on MNIST)"
    if summary.low >= threshold:
        return "yes"
    return "**not shown** (the CI reaches below)" if summary.mean >= threshold else "**no**"


def table(work: Path, exercises: list[str], on_mnist: bool) -> str:
    rows = [
        "| exercise | conclusion | A: mean ± 95 % CI (n) | B: mean ± 95 % CI (n) | Welch p | holds? |",
        "|---|---|---|---|---|---|",
    ]
    found = {e: groups(work, e) for e in exercises}
    for exercise, claim, metric, a, b, how in CLAIMS:
        if exercise not in found:
            continue
        first = summarize(values(found[exercise], a, metric))
        shown = f"{first.mean:.3f} ± {first.half_width:.3f} ({first.count})"
        if isinstance(how, float):
            rows.append(f"| {exercise} | {claim} | {shown} | – | – | {reaches(first, how, on_mnist)} |")
            continue
        if how == "chance":
            rows.append(
                f"| {exercise} | {claim} | {shown} | – | – | {'yes' if first.high < 0.2 else '**no**'} |"
            )
            continue
        other = values(found[exercise], b, metric)
        second = summarize(other)
        p = welch_p(values(found[exercise], a, metric), other)
        better = first.mean > second.mean if how == "more" else first.mean < second.mean
        holds = "yes" if better and p < 0.05 else ("**no**" if not better else "**not shown** (p ≥ 0.05)")
        compared = f"{second.mean:.3f} ± {second.half_width:.3f} ({second.count})"
        rows.append(f"| {exercise} | {claim} | {shown} | {compared} | {p:.2g} | {holds} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--only", action="append")
    parser.add_argument("--data", default=None, help="fashion_mnist: the full Fashion-MNIST (Debian's)")
    parser.add_argument("--table-only", action="store_true")
    options = parser.parse_args()
    exercises = options.only or [
        "vanishing_gradient",
        "batch_norm",
        "optimizers",
        "overfitting",
        "simple_cnn",
    ]
    options.work.mkdir(parents=True, exist_ok=True)
    data = [f"data={options.data}"] if options.data else []
    if not options.table_only:
        for exercise in exercises:
            train(exercise, options.work, data)
    print(table(options.work, exercises, on_mnist=options.data in (None, "mnist")))


if __name__ == "__main__":
    main()
