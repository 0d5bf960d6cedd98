"""An exercise's figure and results table, redrawn from MLflow: `python src/report.py experiment=NAME`.

The runs of an exercise live in the MLflow experiment `logger.experiment_name`; the runs of one
multirun share the `sweep_dir` tag. The latest sweep is reported (or the latest run, if it was a single
run) unless `sweep=<sweep folder name>` names one. Each run's variant is read from its `overrides` tag:
the keys whose values differ between the sweep's runs, labelled through the experiment's
`report.labels` (`normal` → `N(0, 0.01²)`). A variant run with `repeats` or `data.folds` is a group
(trainlab.repeats): its curves are its runs' mean with a ± std band, its table row mean ± 95 % CI.

Figure kinds are a registry, `KINDS: dict[str, Callable[[Sweep], Figure]]`: a kind receives the
`Sweep` (its `report` config, its variants in job order, each with its label and MLflow run, and
`sweep.history(variant, metric)` → (x, values) with x in steps or epochs as `report.x` says) and
returns a matplotlib `Figure`. `report()` saves it as `<sweep folder>/<experiment>_<kind>.png` and
logs it on the sweep's summary run. `kind=accuracy` is the default.
"""

from __future__ import annotations

import os
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainlab.atomic import write_atomically, write_figure
from trainlab.errors import UserError
from trainlab.figures.diagnostics import plot_gradients

# Tags of the summary run that holds a sweep's figures (it is not one of the sweep's runs).
SUMMARY_TAG = "report.sweep"


@dataclass(frozen=True)
class Variant:
    """One compared run: `label` names what it varies (`sigmoid + N(0, 0.01²)`), `values` each varied
    key's labelled value ({"model.activation": "sigmoid", "init": "N(0, 0.01²)"})."""

    label: str
    run: Any  # mlflow.entities.Run
    values: dict[str, str] = field(default_factory=dict)
    runs: tuple[Any, ...] = ()  # a group's runs (repeats, folds), whose mean and spread are drawn


@dataclass
class Sweep:
    """The runs of one sweep of an exercise, and how its report config says to draw them."""

    experiment: str
    name: str  # the sweep folder's name, or the run id of a single run
    report: DictConfig
    variants: list[Variant]
    client: Any  # mlflow.tracking.MlflowClient

    def history(self, variant: Variant, metric: str) -> tuple[list[float], list[float]]:
        """(x, values) of `metric`, x in steps, or in epochs (from `curve/epoch`) if `report.x=epoch`; of a
        group, its runs' mean."""
        x, mean, _ = self.band(variant, metric)
        return x, mean

    def band(self, variant: Variant, metric: str) -> tuple[list[float], list[float], list[float]]:
        """(x, mean, std) of `metric` over a group's runs, at the x every run reached (one run: std 0)."""
        curves = [
            dict(zip(*self._history(run, metric), strict=True)) for run in variant.runs or (variant.run,)
        ]
        xs = [x for x in curves[0] if all(x in curve for curve in curves[1:])]
        values = [[curve[x] for curve in curves] for x in xs]
        mean = [statistics.fmean(v) for v in values]
        return xs, mean, [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]

    def _history(self, run: Any, metric: str) -> tuple[list[float], list[float]]:
        points = sorted(
            self.client.get_metric_history(run.info.run_id, metric),
            key=lambda m: m.step,
        )
        steps = [m.step for m in points]
        if self.report.x == "epoch" and metric.startswith("curve/"):
            epoch_of = {
                m.step: m.value for m in self.client.get_metric_history(run.info.run_id, "curve/epoch")
            }
            steps = [epoch_of.get(step, step) for step in steps]
        return steps, [m.value for m in points]


def parse_overrides(text: str) -> dict[str, str]:
    """`"experiment=x init=he model.hidden=[40,20]"` → {"experiment": "x", "init": "he", ...}."""
    pairs = (item.split("=", 1) for item in text.split() if "=" in item)
    return {key.lstrip("+~"): value for key, value in pairs}


def label_variants(runs: list, labels: DictConfig | dict) -> list[Variant]:
    """Label each run by the override values that differ between `runs` (joined by " + "); a run
    compared with nothing is labelled by its experiment's name."""
    overrides = [parse_overrides(run.data.tags.get("overrides", "")) for run in runs]
    keys = list(dict.fromkeys(key for each in overrides for key in each))
    varied = [key for key in keys if len({each.get(key) for each in overrides}) > 1]
    variants = []
    for run, each in zip(runs, overrides, strict=True):
        values = {key: str(labels.get(each[key], f"{key}={each[key]}")) for key in varied if key in each}
        label = " + ".join(values.values()) or run.data.tags.get("choice.experiment", run.info.run_name)
        variants.append(Variant(label, run, values))
    return variants


LINE_STYLES = ("-", "--", ":", "-.")
PANEL_WIDTH = 3.4  # inches


def line_styles(variants: list[Variant]) -> list[dict[str, Any]]:
    """A colour and a line style per variant that tell every curve apart: one colour per value of the
    key with the most values, one line style per value of the other keys (10 curves of 5 init stds ×
    with/without BN: 5 colours, solid and dashed)."""
    from matplotlib import colormaps

    keys = list(dict.fromkeys(key for variant in variants for key in variant.values))
    distinct = {key: list(dict.fromkeys(v.values.get(key) for v in variants)) for key in keys}
    colour_key = max(keys, key=lambda key: len(distinct[key]), default=None)
    others = [tuple(v.values.get(key) for key in keys if key != colour_key) for v in variants]
    kinds = list(dict.fromkeys(others))
    colours = [
        distinct[colour_key].index(v.values.get(colour_key)) if colour_key else i
        for i, v in enumerate(variants)
    ]
    count = max(colours, default=0) + 1
    palette = colormaps["tab10"] if count <= 10 else colormaps["viridis"].resampled(count)
    return [
        {
            "color": palette(colour),
            "linestyle": LINE_STYLES[kinds.index(other) % len(LINE_STYLES)],
        }
        for colour, other in zip(colours, others, strict=True)
    ]


def fit(text: str, inches: float, fontsize: float) -> str:
    """`text` broken into lines `inches` wide at `fontsize` points (a character is ≈ 0.6 em wide)."""
    return textwrap.fill(text, max(int(inches * 72 / (0.6 * fontsize)), 20))


def _no_runs(experiment: str) -> UserError:
    return UserError(
        f"experiment={experiment}: no runs in MLflow yet; "
        f"run `python src/train.py -m experiment={experiment}` first"
    )


def find_runs(client: Any, experiment: str, sweep: str | None) -> tuple[str, list]:
    """(sweep name, its runs in job order, a group's runs after its parent run): the named sweep, or the
    latest sweep or single run (or group)."""
    found = client.get_experiment_by_name(experiment)
    runs = [] if found is None else client.search_runs([found.experiment_id], order_by=["start_time DESC"])
    runs = [run for run in runs if SUMMARY_TAG not in run.data.tags]
    if not runs:
        raise _no_runs(experiment)
    if sweep is None:
        latest = next((run for run in runs if "group.member" not in run.data.tags), runs[0])
        sweep = latest.data.tags.get("sweep_dir")
        if sweep is None:
            members = [run for run in runs if run.data.tags.get("group.parent") == latest.info.run_id]
            return latest.info.run_id, [latest, *members[::-1]]
    chosen = [run for run in runs if run.data.tags.get("sweep_dir") == sweep]
    if not chosen:
        known = sorted({run.data.tags["sweep_dir"] for run in runs if "sweep_dir" in run.data.tags})
        raise UserError(
            f"sweep={sweep}: no such sweep of {experiment}; its sweeps: {', '.join(known) or 'none'}"
        )
    return sweep, sorted(chosen, key=lambda run: int(run.data.tags.get("job_num", 0)))


def group_variants(variants: list[Variant], runs: list) -> list[Variant]:
    """`variants` (a sweep's runs but a group's own), each group's parent with its runs attached."""
    members: dict[str, list] = {}
    for run in runs:
        if "group.member" in run.data.tags:
            members.setdefault(run.data.tags.get("group.parent", ""), []).append(run)
    return [replace(v, runs=tuple(members.get(v.run.info.run_id, ()))) for v in variants]


def _curve_metrics(variant: Variant) -> tuple[str, str]:
    """Sampled curves if the run has them, else the per-epoch train and validation metrics."""
    if "curve/test/acc" in (variant.runs[0] if variant.runs else variant.run).data.metrics:
        return "curve/train/{}", "curve/test/{}"
    return "train/{}", "val/{}"


def plot_accuracy(sweep: Sweep) -> Any:
    """One panel per variant with train (solid) and test (dashed) curves, and a last panel comparing the
    variants' test curves, at most four panels a row; the loss follows in panels of its own when
    `report.loss` is true."""
    from matplotlib.figure import Figure

    quantities = ["acc", "loss"] if sweep.report.loss else ["acc"]
    compare = len(sweep.variants) > 1
    panels = len(sweep.variants) + compare
    columns = min(panels, 4)
    rows = -(-panels // columns)
    figure = Figure(
        figsize=(PANEL_WIDTH * columns, 2.7 * rows * len(quantities) + 0.5),
        layout="constrained",
    )
    grid = figure.subplots(rows * len(quantities), columns, squeeze=False).ravel()
    x_label = "iterations" if sweep.report.x == "step" else "epochs"
    styles = line_styles(sweep.variants)
    for block, quantity in enumerate(quantities):
        axes = grid[block * rows * columns : (block + 1) * rows * columns]
        for ax, variant, style in zip(axes, sweep.variants, styles, strict=False):
            train, test = (name.format(quantity) for name in _curve_metrics(variant))
            _draw(ax, sweep, variant, train, label="train")
            _draw(ax, sweep, variant, test, label=test.split("/")[-2], linestyle="--")
            runs = f" (mean ± std of {len(variant.runs)} runs)" if variant.runs else ""
            ax.set_title(fit(variant.label + runs, PANEL_WIDTH, 9), fontsize=9)
            if compare:
                _draw(axes[panels - 1], sweep, variant, test, label=variant.label, **style)
        spare = axes[panels:]
        if compare:
            axes[panels - 1].set_title(f"test {quantity}, all variants", fontsize=9)
            if len(spare):  # the grid's first empty slot holds the legend, clear of the curves
                spare[0].legend(
                    *axes[panels - 1].get_legend_handles_labels(),
                    fontsize=7,
                    loc="center left",
                )
                spare[0].axis("off")
                spare = spare[1:]
            else:
                axes[panels - 1].legend(fontsize=7)
        axes[0].legend(fontsize=8)
        for ax in axes[:panels]:
            ax.set_xlabel(x_label)
            ax.set_ylabel(quantity)
            ax.grid(alpha=0.3)
            if quantity == "acc":
                ax.set_ylim(0, 1.02)
        for ax in spare:
            ax.set_visible(False)
    figure.suptitle(fit(sweep.report.title, figure.get_figwidth(), 12))
    return figure


def _draw(ax: Any, sweep: Sweep, variant: Variant, metric: str, **style: Any) -> None:
    """`metric`'s curve; of a group, its runs' mean with a band of ± one standard deviation."""
    x, mean, std = sweep.band(variant, metric)
    [line] = ax.plot(x, mean, **style)
    if variant.runs:
        low, high = (
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
        )
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


KINDS: dict[str, Callable[[Sweep], Any]] = {
    "accuracy": plot_accuracy,
    "gradients": plot_gradients,
}


def _last(sweep: Sweep, variant: Variant, metric: str) -> float | None:
    history = sweep.history(variant, metric)[1]
    return history[-1] if history else variant.run.data.metrics.get(metric)


NUMBERS = ("train acc", "test acc", "gap", "best-ckpt test")


def _numbers(sweep: Sweep, variant: Variant, run: Any) -> dict[str, float | None]:
    """One run's final train and test accuracy (last curve point), their gap, and `test/acc` of its best
    checkpoint by validation accuracy."""
    alone = Variant(variant.label, run)
    train, test = (name.format("acc") for name in _curve_metrics(alone))
    train_acc, test_acc = _last(sweep, alone, train), _last(sweep, alone, test)
    gap = None if train_acc is None or test_acc is None else train_acc - test_acc
    return dict(
        zip(
            NUMBERS,
            (train_acc, test_acc, gap, run.data.metrics.get("test/acc")),
            strict=True,
        )
    )


def results_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """Per variant: `_numbers` of its run, the run's status and the number of runs; of a group, each
    number's mean over its runs, with the half-width of its 95 % confidence interval as `<number> ci`."""
    from trainlab.repeats.stats import summarize

    rows = []
    for variant in sweep.variants:
        each = [_numbers(sweep, variant, run) for run in variant.runs or (variant.run,)]
        row: dict[str, Any] = {
            "variant": variant.label,
            "runs": len(each),
            "status": variant.run.info.status,
        }
        for key in NUMBERS:
            found = [numbers[key] for numbers in each if numbers[key] is not None]
            summary = summarize(found) if found else None
            row[key] = summary.mean if summary else None
            if variant.runs and summary and summary.count > 1:
                row[f"{key} ci"] = summary.half_width
        rows.append(row)
    return rows


def _cell(row: dict[str, Any], key: str) -> str:
    value, half = row[key], row.get(f"{key} ci")
    if isinstance(value, float):
        return f"{value:.3f} ± {half:.3f}" if half is not None else f"{value:.3f}"
    return str(value if value is not None else "-")


def results_table(rows: list[dict[str, Any]]) -> str:
    """`results_rows` as aligned text, numbers to three decimals (a group's: mean ± 95 % CI)."""
    header = ("variant", *NUMBERS, "runs", "status")
    cells = [[_cell(row, key) for key in header] for row in rows]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *cells)
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def compose(experiment: str, overrides: list[str]) -> DictConfig:
    """The exercise's config as `src/train.py` would compose it (for its tracking URI and report)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    conf = Path(__file__).resolve().parents[3] / "conf"  # src/trainlab/figures/ → the repository
    known = sorted(path.stem for path in (conf / "experiment").glob("*.yaml"))
    own = any(o.startswith("hydra.searchpath") for o in overrides)  # a user's folder: Hydra says what is not
    if experiment not in known and not own:
        raise UserError(f"experiment={experiment}: must be one of {', '.join(known)}")
    try:
        with initialize_config_dir(str(conf), version_base="1.3"):
            return hydra_compose("train", overrides=[f"experiment={experiment}", *overrides])
    except HydraException as err:
        raise UserError(f"{' '.join(overrides)}: {str(err).splitlines()[0]}") from None


@dataclass(frozen=True)
class Report:
    """What `report` drew: the figure, its PNG, and the results table's rows."""

    figure: Any  # matplotlib Figure
    png: Path
    rows: list[dict[str, Any]]


def report(
    experiment: str,
    sweep: str | None = None,
    kind: str = "accuracy",
    overrides: list[str] = (),
    show: bool = True,
) -> Report:
    """Draw `kind` for a sweep of `experiment`, save it in the sweep folder, log it on the summary run,
    print the results table (unless not to `show` it)."""
    if kind not in KINDS:
        raise UserError(f"kind={kind}: must be one of {', '.join(sorted(KINDS))}")
    cfg = compose(experiment, list(overrides))
    from trainlab.tracking.orphans import store_without_orphans
    from trainlab.tracking.spool import ResilientClient
    from trainlab.tracking.tracker import summary_run

    uri = cfg.logger.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise _no_runs(experiment)  # and do not create an empty store
    client = store_without_orphans(uri)
    name, runs = find_runs(client, cfg.logger.experiment_name, sweep)
    parents = [run for run in runs if "group.member" not in run.data.tags]
    variants = group_variants(label_variants(parents, cfg.report.labels), runs)
    drawn = Sweep(experiment, name, cfg.report, variants, client)
    root = Path(cfg.paths.root_dir)
    folder = root / "multirun" / name if "sweep_dir" in runs[0].data.tags else root / "outputs" / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{experiment}_{kind}.png"
    figure = KINDS[kind](drawn)
    write_figure(figure, png, dpi=110)
    rows = results_rows(drawn)
    table = results_table(rows)
    write_atomically(folder / f"{experiment}_results.txt", table + "\n")
    experiment_id = drawn.variants[0].run.info.experiment_id
    summary = summary_run(uri, experiment_id, f"report {name}", SUMMARY_TAG, name)
    writer = ResilientClient(uri)  # its writes wait out a locked store
    writer.log_artifact(summary, str(png))
    writer.log_artifact(summary, str(folder / f"{experiment}_results.txt"))
    if show:
        print(f"{cfg.report.title}\nsweep {name}: {len(parents)} runs\n\n{table}\n\nfigure: {png}")
    return Report(figure, png, rows)


def main(argv: list[str]) -> int:
    """`experiment=NAME [sweep=FOLDER] [kind=accuracy] [key=value ...]`; other keys override the config
    (e.g. `paths.root_dir=...`). A mistake is one line on stderr and exit status 2."""
    import sys

    options = dict(
        arg.split("=", 1) for arg in argv if arg.split("=", 1)[0] in ("experiment", "sweep", "kind")
    )
    overrides = [arg for arg in argv if arg.split("=", 1)[0] not in options]
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        if "experiment" not in options:
            raise UserError(
                "experiment: missing; name one, e.g. `python src/report.py experiment=optimizers`"
            )
        report(
            options["experiment"],
            options.get("sweep"),
            options.get("kind", "accuracy"),
            overrides,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
