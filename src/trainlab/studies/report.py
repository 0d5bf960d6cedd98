"""A study's report: per experiment its figure (curves with ± std bands over the seeds) and its claims
table, as Markdown and as one self-contained HTML page in `multirun/<study>/`, also logged as MLflow
artifacts of the study's run (experiment `studies`), and shown inline by Jupyter (`StudyReport`)."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.atomic import write_atomically
from trainlab.errors import UserError
from trainlab.repeats.stats import Summary
from trainlab.studies.verdicts import ALPHA, HOLDS, NOT_JUDGED, Verdict

STUDY_TAG = "study.name"
MLFLOW_EXPERIMENT = "studies"
COLUMNS = ("claim", "metric", "A: mean ± 95 % CI (n)", "B or threshold", "p", "p (Holm)", "g", "verdict")
EXPLAINED = (
    "A claim **holds** when A's mean lies the way it expects and its p-value, corrected for all {count} "
    "judged claims of the study (Holm–Bonferroni), is below {alpha}. p: Welch's t-test of A against B, or "
    "the one-sample t-test of A's mean against the threshold (below 0.05 exactly when the 95 % CI leaves "
    "the threshold out); g: Hedges' g (A − B, or A − threshold, in standard deviations)."
)


@dataclass
class StudyReport:
    """What a study wrote: its folder, the Markdown and HTML files, one row per claim, the figures."""

    name: str
    folder: Path
    markdown: Path
    html: Path
    rows: list[dict[str, Any]]
    figures: dict[str, Any]  # experiment → matplotlib Figure
    run_id: str | None

    @property
    def table(self) -> Any:
        """The claims as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def _repr_html_(self) -> str:  # Jupyter shows the report itself, figures and tables inline
        return self.html.read_text()


def _summary(summary: Summary | None) -> str:
    if summary is None:
        return "–"
    if math.isnan(summary.half_width):
        return f"{summary.mean:.3f} ({summary.count})"
    return f"{summary.mean:.3f} ± {summary.half_width:.3f} ({summary.count})"


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.2g}" if abs(value) < 0.01 and value else f"{value:.3f}".rstrip("0").rstrip(".")


def row(verdict: Verdict) -> dict[str, Any]:
    """One claim as the tables show it (and as `StudyReport.table` holds it)."""
    claim = verdict.claim
    if verdict.b is not None or claim.b is not None:
        other = _summary(verdict.b)
    else:
        other = f"{claim.expect} {claim.threshold:g}" + (f" (set on {claim.data})" if claim.data else "")
    said = verdict.verdict + (f": {verdict.why}" if verdict.why else "")
    return {
        "experiment": verdict.experiment,
        "claim": claim.name,
        "metric": claim.metric,
        "A: mean ± 95 % CI (n)": _summary(verdict.a),
        "B or threshold": other,
        "p": _number(verdict.p),
        "p (Holm)": _number(verdict.p_holm),
        "g": _number(verdict.g),
        "verdict": said,
        "holds": verdict.verdict == HOLDS,
    }


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for found in rows:
        cells = [str(found[c]).replace("|", "\\|") for c in COLUMNS]
        if found["holds"]:
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _html_table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for found in rows:
        style = ' class="holds"' if found["holds"] else ""
        cells = "".join(f"<td>{html.escape(str(found[c]))}</td>" for c in COLUMNS)
        body.append(f"<tr{style}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _command(study: Any) -> str:
    """The command that makes (and remakes) this study."""
    own = [f"--config-dir={study.config_dir}"] if study.config_dir else []
    experiments = f"experiment={','.join(p.experiment for p in study.plans)}"
    return " ".join(["python src/study.py", experiments, *study.common, *own])


def _counts(study: Any, rows: list[dict[str, Any]]) -> str:
    holds = sum(r["holds"] for r in rows)
    judged = sum(not r["verdict"].startswith(NOT_JUDGED) for r in rows)
    return f"data {study.data}; {holds} of {judged} judged claims hold ({len(rows)} stated)."


def _figures(study: Any) -> dict[str, Any]:
    """Each experiment's figure (trainlab.figures.exercise), copied into the study's `figures/`."""
    from trainlab.cli.session import fixed_overrides
    from trainlab.figures.exercise import report

    fixed = fixed_overrides(study.common)
    if study.config_dir is not None:  # the figure's config is composed anew, with the user's configs
        fixed.append(f"hydra.searchpath=[file://{study.config_dir}]")
    drawn = {}
    for plan in study.plans:
        try:
            found = report(plan.experiment, plan.sweep_dir.name, "accuracy", fixed, show=False)
        except UserError:  # nothing trained yet (train=false): the table says "not judged"
            continue
        target = study.folder / "figures" / found.png.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found.png, target)
        drawn[plan.experiment] = found.figure
    return drawn


def write_report(study: Any, verdicts: list[Verdict]) -> StudyReport:
    """report.md, report.html and claims.csv in the study's folder, logged to MLflow; printed in short."""
    study.folder.mkdir(parents=True, exist_ok=True)
    rows = [row(v) for v in verdicts]
    figures = _figures(study)
    judged = sum(v.p is not None for v in verdicts)
    explained = EXPLAINED.format(count=judged, alpha=ALPHA)
    command, counts = _command(study), _counts(study, rows)
    markdown = [f"# {study.name}", "", f"`{command}`: {counts}", "", explained]
    page = [f"<h1>{html.escape(study.name)}</h1>"]
    page.append(f"<p><code>{html.escape(command)}</code>: {html.escape(counts)}</p>")
    page.append(f"<p>{html.escape(explained.replace('**', ''))}</p>")
    for plan in study.plans:
        mine = [r for r in rows if r["experiment"] == plan.experiment]
        title = f"{plan.experiment}: {plan.cfg.report.title}" if "report" in plan.cfg else plan.experiment
        markdown += ["", f"## {title}", ""]
        page.append(f"<h2>{html.escape(title)}</h2>")
        png = study.folder / "figures" / f"{plan.experiment}_accuracy.png"
        if plan.experiment in figures:
            markdown += [f"![{plan.experiment}](figures/{png.name})", ""]
            encoded = base64.b64encode(png.read_bytes()).decode()
            page.append(f'<img alt="{html.escape(plan.experiment)}" src="data:image/png;base64,{encoded}">')
        if mine:
            markdown.append(_markdown_table(mine))
            page.append(_html_table(mine))
        else:
            markdown.append("No claims stated.")
    report_md = study.folder / "report.md"
    write_atomically(report_md, "\n".join(markdown) + "\n")
    style = (
        "body{font-family:sans-serif;max-width:1400px;margin:2em auto}img{max-width:100%}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "font-size:14px;text-align:left}tr.holds td:last-child{color:#05640f;font-weight:bold}"
    )
    report_html = study.folder / "report.html"
    document = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(study.name)}</title>"
    body = "".join(page)
    write_atomically(report_html, f"{document}<style>{style}</style></head><body>{body}</body></html>\n")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else ["claim"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(study.folder / "claims.csv", table.getvalue())
    run_id = _log(study, rows)
    print(f"\n{command}: {counts}\n\n{_markdown_table(rows)}\n")
    print(f"report: {report_md}\n        {report_html}")
    return StudyReport(study.name, study.folder, report_md, report_html, rows, figures, run_id)


def _log(study: Any, rows: list[dict[str, Any]]) -> str | None:
    """The study's MLflow run (experiment `studies`): its report as artifacts, its verdicts' counts."""
    from trainlab.tracking.orphans import reap_orphans
    from trainlab.tracking.spool import ResilientClient
    from trainlab.tracking.tracker import summary_run

    logger = study.plans[0].cfg.logger
    if not logger.get("tracking_uri"):
        return None
    reap_orphans(logger.tracking_uri)
    client = ResilientClient(logger.tracking_uri)  # its writes wait out a locked store
    found = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    experiment_id = found.experiment_id if found else client.create_experiment(MLFLOW_EXPERIMENT)
    run_id = summary_run(logger.tracking_uri, experiment_id, study.name, STUDY_TAG, study.name)
    client.set_tag(run_id, "study.command", _command(study))
    for name, count in (
        ("claims.holds", sum(r["holds"] for r in rows)),
        ("claims.judged", sum(not r["verdict"].startswith(NOT_JUDGED) for r in rows)),
        ("claims.stated", len(rows)),
    ):
        client.log_metric(run_id, name, count)
    for name in ("report.md", "report.html", "claims.csv"):
        client.log_artifact(run_id, str(study.folder / name))
    for figure in sorted((study.folder / "figures").glob("*.png")):
        client.log_artifact(run_id, str(figure), "figures")
    return run_id
