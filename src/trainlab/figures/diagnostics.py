"""Figures of the per-layer diagnostics (trainlab/diagnostics.py) of one run or of a sweep, from MLflow:
gradient norm versus layer depth (log scale, one line per sampled step, one panel per run) and activation
histograms per layer (one row per run, initialisation against the end of training).

`plot_gradients(sweep)` is `kind=gradients` of `src/report.py` (both in one Figure); standalone, two PNGs:
`python -m trainlab.figures.diagnostics --tracking-uri sqlite:///mlruns/mlflow.db --out DIR
[--experiment trainlab] [--sweep-dir NAME]`.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.atomic import write_figure
from trainlab.errors import UserError

# Where trainlab.diagnostics puts the histograms (not imported: it pulls in torch and Lightning).
HISTOGRAM_ARTIFACT = "diagnostics/activations.json"
GRADIENTS_PNG = "gradient_norms.png"
HISTOGRAMS_PNG = "activation_histograms.png"
FIGURES_DIR = "figures"


@dataclass
class RunDiagnostics:
    """One run's diagnostics: `grad_norm[step][k]` is layer k+1's gradient norm at that step."""

    title: str
    layers: list[dict[str, Any]]
    grad_norm: dict[int, list[float]]
    histograms: list[dict[str, Any]]


def _depth(metric: str) -> int:
    return int(re.fullmatch(r"grad_norm/layer(\d+)", metric).group(1))


def load_run(client: Any, run: Any) -> RunDiagnostics:
    """Read a run's `grad_norm/layer*` histories and its `diagnostics/activations.json` artifact; a run
    without them (trained with diagnostics=off, or still running) is a UserError naming it."""
    run_id = run.info.run_id
    keys = sorted((key for key in run.data.metrics if key.startswith("grad_norm/layer")), key=_depth)
    folder = HISTOGRAM_ARTIFACT.rsplit("/", 1)[0]
    if not keys or HISTOGRAM_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, folder)}:
        raise UserError(
            f"run {run.info.run_name!r} ({run.info.status}): no diagnostics recorded; "
            "train with diagnostics=on and let the run finish"
        )
    grad_norm: dict[int, list[float]] = {}
    for depth, key in enumerate(keys):
        for point in client.get_metric_history(run_id, key):
            grad_norm.setdefault(point.step, [float("nan")] * len(keys))[depth] = point.value
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(run_id, HISTOGRAM_ARTIFACT, folder)
        record = json.loads(Path(path).read_text())
    return RunDiagnostics(run.info.run_name, record["layers"], grad_norm, record["histograms"])


def short_titles(names: list[str], width: int = 40) -> list[str]:
    """Run names (their overrides) without the overrides all runs share, wrapped: what tells them apart."""
    tokens = [name.split() for name in names]
    shared = set.intersection(*map(set, tokens)) if len(names) > 1 else set()
    return [
        textwrap.fill(" ".join(t for t in ts if t not in shared) or name, width)
        for ts, name in zip(tokens, names, strict=True)
    ]


def sampled_lines(steps: list[int], max_lines: int) -> list[int]:
    """At most `max_lines` of the sorted `steps`, evenly spaced, always the first and the last."""
    if len(steps) <= max_lines:
        return steps
    picks = {round(i * (len(steps) - 1) / (max_lines - 1)) for i in range(max_lines)}
    return [steps[i] for i in sorted(picks)]


def draw_gradient_panels(figure: Any, runs: list[RunDiagnostics], max_lines: int = 8) -> None:
    """‖∂L/∂W‖ against layer depth on a log scale, one line per sampled step (dark: early, light: late),
    one panel per run, sharing the y axis so the runs compare. `figure`: a Figure or SubFigure."""
    from matplotlib import colormaps

    axes = figure.subplots(1, len(runs), sharey=True, squeeze=False)[0]
    for ax, run in zip(axes, runs, strict=True):
        steps = sampled_lines(sorted(run.grad_norm), max_lines)
        colors = colormaps["viridis"]([i / max(len(steps) - 1, 1) for i in range(len(steps))])
        for step, color in zip(steps, colors, strict=True):
            norms = run.grad_norm[step]
            ax.plot(range(1, len(norms) + 1), norms, marker="o", color=color, label=f"step {step}")
        ax.set_yscale("log")
        ax.set_xticks(range(1, len(run.layers) + 1))
        ax.set_xlabel("layer (input → output)")
        ax.set_title(run.title, fontsize=8)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("gradient norm ‖∂L/∂W‖")


def draw_histogram_grid(figure: Any, runs: list[RunDiagnostics]) -> None:
    """Each hidden layer's activation distribution, one row per run: filled at the first recorded step
    (the initialisation), outlined at the last. `figure`: a Figure or SubFigure."""
    import numpy as np

    columns = max(len({h["layer"] for h in run.histograms}) for run in runs)
    grid = figure.subplots(len(runs), columns, squeeze=False)
    for row, run in zip(grid, runs, strict=True):
        steps = sorted({h["step"] for h in run.histograms})
        for ax in row:
            ax.set_visible(False)
        for entry in run.histograms:
            if entry["step"] not in (steps[0], steps[-1]):
                continue
            ax = row[int(entry["layer"].removeprefix("layer")) - 1]
            ax.set_visible(True)
            counts = np.asarray(entry["counts"])
            edges = np.linspace(*entry["range"], len(counts) + 1)
            first = entry["step"] == steps[0]
            fraction = counts / max(counts.sum(), 1)
            ax.stairs(fraction, edges, fill=first, alpha=0.5 if first else 1.0, label=f"step {entry['step']}")
            ax.set_title(f"{entry['layer']} ({entry['activation']})", fontsize=8)
            ax.tick_params(labelsize=6)
        row[0].set_ylabel(run.title, fontsize=7)
        row[0].legend(fontsize=6)


def gradient_figure(runs: list[RunDiagnostics]) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(runs), 3.6), layout="constrained")
    draw_gradient_panels(figure, runs)
    return figure


def histogram_figure(runs: list[RunDiagnostics]) -> Any:
    from matplotlib.figure import Figure

    columns = max(len({h["layer"] for h in run.histograms}) for run in runs)
    figure = Figure(figsize=(2.6 * columns, 2.2 * len(runs)), layout="constrained")
    draw_histogram_grid(figure, runs)
    return figure


def plot_gradients(sweep: Any) -> Any:
    """`kind=gradients` of `trainlab.figures.exercise`: gradient norm versus depth for each variant of the
    sweep (top), their activation histograms one row per variant (below), in one Figure.

    `sweep` needs `.client` (an MlflowClient) and `.variants`, each with `.label` and `.run`.
    """
    from matplotlib.figure import Figure

    runs = [load_run(sweep.client, variant.run) for variant in sweep.variants]
    for run, variant in zip(runs, sweep.variants, strict=True):
        run.title = variant.label
    columns = max(len(runs), max(len({h["layer"] for h in run.histograms}) for run in runs))
    figure = Figure(figsize=(3.2 * columns, 3.4 + 2.0 * len(runs)), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[3.4, 2.0 * len(runs)])
    draw_gradient_panels(top, runs)
    draw_histogram_grid(bottom, runs)
    return figure


def draw_gradients(client: Any, runs: list[Any], out_dir: Path) -> list[Path]:
    """`gradient_norms.png` and `activation_histograms.png` for `runs` (MLflow runs recorded with
    `diagnostics=on`) in `out_dir`, each also logged under `figures/` into every one of the runs."""
    loaded = [load_run(client, run) for run in runs]
    for run, title in zip(loaded, short_titles([run.title for run in loaded]), strict=True):
        run.title = title
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in ((GRADIENTS_PNG, gradient_figure), (HISTOGRAMS_PNG, histogram_figure)):
        path = Path(out_dir) / name
        write_figure(draw(loaded), path, dpi=120)
        paths.append(path)
    for run in runs:
        for path in paths:
            client.log_artifact(run.info.run_id, str(path), FIGURES_DIR)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Draw the figures for an experiment's finished diagnostics runs (optionally one sweep's)."""
    from trainlab.tracking.orphans import store_without_orphans

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--experiment", default="trainlab")
    parser.add_argument("--sweep-dir", help="only the runs of this multirun folder (its name)")
    args = parser.parse_args(argv)
    client = store_without_orphans(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        parser.error(f"--experiment={args.experiment}: no such MLflow experiment")
    query = "attributes.status = 'FINISHED' and tags.`choice.diagnostics` = 'on'"
    if args.sweep_dir:
        query += f" and tags.sweep_dir = '{args.sweep_dir}'"
    runs = client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time ASC"])
    if not runs:
        parser.error("no finished run with diagnostics=on matches")
    try:
        paths = draw_gradients(client, runs, args.out)
    except UserError as err:
        parser.exit(2, f"error: {err}\n")
    print("\n".join(map(str, paths)))


if __name__ == "__main__":
    main()
