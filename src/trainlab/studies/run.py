"""A study: several experiments, each a sweep of its variants with repeats, trained where runs are missing,
then every experiment's claims judged together (trainlab.studies.verdicts) and reported
(trainlab.studies.report).

    python src/study.py experiment=vanishing_gradient,batch_norm repeats=5 data=fashion_mnist

Everything is checked before any training: each variant's config, and each claim's fields and the variants
it picks. Each experiment's sweep trains in `multirun/<study>.<experiment>/`; the same command again skips
an experiment whose groups are all finished and runs the others' sweeps with `ckpt_path=last` in the same
folder, so a group resumes where it stopped and only what is missing trains. The study's name is a hash
of its arguments unless `name=` gives one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.claims import Claim, matches, read_claims, select
from trainlab.errors import ConfigError, UserError, fail

REPEATS = 5  # a study's repeats unless the command says otherwise
STUDY_KEYS = ("experiment", "name")


@dataclass(frozen=True)
class Plan:
    """One experiment of a study: its sweep's overrides and folder, its variants and its claims."""

    experiment: str
    overrides: list[str]  # the sweep's, as `python src/train.py -m` takes them
    sweep_dir: Path
    variants: list[dict[str, str]]  # the overrides that make each variant (the swept keys only)
    runs_per_variant: int
    claims: list[Claim]
    cfg: DictConfig  # the first variant's run config (its report settings, data, tracking URI)


@dataclass
class Study:
    name: str
    folder: Path
    common: list[str]  # the command's overrides that every experiment shares
    plans: list[Plan]
    config_dir: Path | None = None  # the user's own configs (`--config-dir`)

    @property
    def data(self) -> str:
        return str(self.plans[0].cfg.data.name)


def parse(arguments: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """(experiments, name, the other overrides) of `experiment=a,b [name=N] [key=value ...]`."""
    options = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in arguments if a.split("=", 1)[0] in STUDY_KEYS}
    common = [a for a in arguments if a.split("=", 1)[0] not in STUDY_KEYS]
    experiments = [e for e in options.get("experiment", "").split(",") if e]
    if not experiments:
        example = "experiment=optimizers,batch_norm"
        raise ConfigError(f"experiment: missing; name the study's experiments, e.g. {example}")
    if len(set(experiments)) != len(experiments):
        raise fail("experiment", options["experiment"], "a list of different experiments")
    if not any(o.lstrip("+").startswith("repeats=") for o in common):
        common.append(f"repeats={REPEATS}")
    return experiments, options.get("name"), common


def study_name(experiments: list[str], common: list[str]) -> str:
    """The same command, the same study (and so its resume): a hash of its arguments."""
    digest = hashlib.sha1(" ".join([*experiments, *sorted(common)]).encode()).hexdigest()[:8]
    return f"study-{digest}"


def _variants(cfg: DictConfig, common: list[str]) -> list[list[str]]:
    """The sweep's jobs as Hydra's basic sweeper makes them: the experiment's `hydra.sweeper.params`, then
    the command's overrides (a sweep there replaces the experiment's values of its key)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params else {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += common
    parsed = OverridesParser.create().parse_overrides(arguments)
    swept = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()} | set(params)
    [jobs] = BasicSweeper.split_arguments(parsed, None)
    return [[o for o in job if o.split("=", 1)[0].lstrip("+~") in swept] for job in jobs]


def plan(arguments: Sequence[str], config_dir: str | Path | None = None) -> Study:
    """The study the arguments ask for, every variant's config and every claim checked."""
    from trainlab.cli.session import compose_config, fixed_overrides, hydra_session
    from trainlab.config import validate
    from trainlab.repeats.group import group_members, is_group

    experiments, name, common = parse(arguments)
    own = None if config_dir is None else Path(config_dir).expanduser().resolve()
    name = name or study_name(experiments, common)
    plans = []
    for experiment in experiments:
        overrides = [f"experiment={experiment}", *common]
        with hydra_session(overrides, own) as hydra:
            swept = compose_config([*overrides, "hydra.mode=MULTIRUN"], hydra)
            jobs = _variants(swept, common)
            configs = []
            for job in jobs:  # each variant's run config, as its job will compose it
                cfg = compose_config([f"experiment={experiment}", *fixed_overrides(common), *job], hydra)
                configs.append(cfg)
        for cfg in configs:
            validate(cfg, build=False)
        first = configs[0]
        if not is_group(first):
            raise fail("repeats", first.repeats, "an integer >= 2 (a study judges its claims over seeds)")
        variants = [dict(o.lstrip("+~").split("=", 1) for o in job) for job in jobs]
        claims = read_claims(first)
        select(claims, variants, experiment)
        root = Path(first.paths.root_dir)
        sweep_dir = root / "multirun" / f"{name}.{experiment}"
        sweep = [*overrides, f"hydra.sweep.dir={sweep_dir}"]
        runs = len(group_members(first, 0))
        plans.append(Plan(experiment, sweep, sweep_dir, variants, runs, claims, first))
    folder = Path(plans[0].cfg.paths.root_dir) / "multirun" / name
    return Study(name, folder, common, plans, own)


@dataclass(frozen=True)
class Group:
    """A variant's finished (or partly finished) group of runs, as its folder records it."""

    overrides: dict[str, str]
    parent_run_id: str | None
    done: dict[str, Any]


def groups(plan: Plan) -> list[Group]:
    """The groups the plan's sweep folder holds (trainlab.repeats.group's records)."""
    from trainlab.figures.exercise import parse_overrides
    from trainlab.repeats.group import GROUP_RECORD
    from trainlab.run.resume import read_json

    found = []
    for record in sorted(plan.sweep_dir.rglob(GROUP_RECORD)):  # a job's, or a population's of groups
        state = read_json(record)
        if "overrides" in state:
            overrides = parse_overrides(" ".join(state["overrides"]))
            found.append(Group(overrides, state.get("mlflow_run_id"), state.get("done") or {}))
    return found


def group_of(variant: dict[str, str], found: list[Group]) -> Group | None:
    return next((g for g in found if matches(variant, g.overrides)), None)


def runs_done(plan: Plan) -> int:
    found = groups(plan)
    return sum(len(group.done) for v in plan.variants if (group := group_of(v, found)) is not None)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def train(study: Study, missing: bool = True, say: Any = print) -> None:
    """Train each experiment's `missing` runs (or only say how far each is), one experiment after
    another, saying how far the study is and how long the rest will take."""
    from trainlab.cli.main import run_job
    from trainlab.cli.session import hydra_session

    total = sum(len(p.variants) * p.runs_per_variant for p in study.plans)
    done = {p.experiment: runs_done(p) for p in study.plans}
    say(f"study {study.name}: {len(study.plans)} experiments, {total} runs, {sum(done.values())} done")
    trained, spent = 0, 0.0
    for index, plan in enumerate(study.plans, start=1):
        runs = len(plan.variants) * plan.runs_per_variant
        head = f"[{index}/{len(study.plans)}] {plan.experiment}:"
        if done[plan.experiment] >= runs:
            say(f"{head} {runs} runs done, reused")
            continue
        left = runs - done[plan.experiment]
        if not missing:
            say(f"{head} {runs - left} of {runs} runs done")
            continue
        say(f"{head} training {left} of {runs} runs")
        started = time.monotonic()
        resume = ["ckpt_path=last"] if plan.sweep_dir.is_dir() else []  # its groups continue in place
        overrides = [*plan.overrides, *resume, "hydra.mode=MULTIRUN"]  # the CLI's `-m`
        with hydra_session(overrides, study.config_dir) as hydra:
            hydra.multirun("train", run_job, overrides)
        spent += time.monotonic() - started
        trained += left
        done[plan.experiment] = runs_done(plan)
        remaining = total - sum(done.values())
        eta = f", ~{_duration(spent / trained * remaining)} left" if remaining and trained else ""
        took = _duration(time.monotonic() - started)
        say(f"{head} done in {took}; {total - remaining} of {total} runs{eta}")


def run_metrics(plan: Plan, group: Group) -> list[dict[str, float]]:
    """The last logged value of every metric of each finished run of `group`, from MLflow."""
    from trainlab.tracking.orphans import store_without_orphans

    if group.parent_run_id is None:  # MLflow was off: the group's record has the final metrics
        return [member["metrics"] for member in group.done.values()]
    client = store_without_orphans(plan.cfg.logger.tracking_uri)
    parent = client.get_run(group.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`group.parent` = '{group.parent_run_id}'", max_results=10000
    )
    return [r.data.metrics for r in children if r.data.tags.get("group.member") in group.done]


def variant_values(plan: Plan) -> list[list[dict[str, float]]]:
    """Per variant of the plan, the metrics of each of its finished runs (none where nothing ran yet)."""
    present = groups(plan)
    found = [group_of(variant, present) for variant in plan.variants]
    return [[] if group is None else run_metrics(plan, group) for group in found]


def verdicts(study: Study) -> list[Any]:
    """Every claim of the study judged on the runs there are, corrected for their number."""
    from trainlab.studies.verdicts import correct, judge

    found = []
    for plan in study.plans:
        metrics = variant_values(plan)

        def values(chosen: dict[str, str] | None, claim: Claim, plan: Plan = plan, metrics: list = metrics):
            if chosen is None:
                return []
            [index] = [i for i, v in enumerate(plan.variants) if matches(chosen, v)]
            return [v for m in metrics[index] if (v := claim.value(m)) is not None]

        for claim in plan.claims:
            a, b = values(claim.a, claim), values(claim.b, claim)
            found.append(judge(plan.experiment, claim, a, b, study.data))
    return correct(found)


def _with_claims(study: Study) -> Study:
    if not any(plan.claims for plan in study.plans):
        names = ", ".join(p.experiment for p in study.plans)
        why = "no claims to judge; state them under `claims:` (docs/experiments.md)"
        raise UserError(f"experiment={names}: {why}")
    return study


def run_study(
    arguments: Sequence[str], config_dir: str | Path | None = None, train_missing: bool = True
) -> Any:
    """Plan, train what is missing (unless not to), judge and report: what `python src/study.py` and
    `trainlab.study` do. Returns the `StudyReport`."""
    from trainlab.studies.report import write_report

    study = _with_claims(plan(arguments, config_dir))
    train(study, train_missing)
    return write_report(study, verdicts(study))


def status_of(arguments: Sequence[str], config_dir: str | Path | None = None) -> None:
    """`--status`: how many runs of each experiment are done; nothing trained, nothing written."""
    train(_with_claims(plan(arguments, config_dir)), missing=False)
