"""Documentation that cannot rot: every relative link and `#anchor` in README.md and docs/ resolves, every
command line they show for the entry points composes and validates as the CLI would (no training), and
every mistake they show fails with exactly the line shown.

What counts as a shown command: a line of a fenced code block, or an inline code span, that runs
`python src/train.py`, `src/report.py`, `src/eval.py` or `src/predict.py` (any python: `.venv/bin/python`,
inside `docker run …`, after `&&`). A shown mistake: a fenced block on the line after `<!-- mistake -->`
holding `$ python src/… ARGS` lines, each followed by the exact `error: …` line the CLI prints;
`<!-- mistake: no-gpu -->` marks mistakes only a machine without a GPU makes (skipped where torch sees one).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SCRIPTS = ("train.py", "report.py", "eval.py", "predict.py", "study.py", "sweeps.py")
# Hydra's flags that print something and exit: run as shown, in a subprocess (each well under a second).
PRINTING_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion", "-sc")
MULTIRUN_FLAGS = ("-m", "--multirun")


# --- reading the pages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: its first content line's number, its lines, the marker comment before it, and
    its language (a `markdown` block shows a page's source, not commands)."""

    page: Path
    line: int
    lines: tuple[str, ...]
    marker: str | None
    language: str


def fenced_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"\s*(```+|~~~+)\s*(\w*)", lines[index])
        if not fence:
            index += 1
            continue
        before = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = re.fullmatch(r"<!--\s*(mistake(?::\s*[\w-]+)?)\s*-->", before)
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
            end += 1
        block = tuple(lines[index + 1 : end])
        blocks.append(Block(page, index + 2, block, marker and marker.group(1), fence.group(2)))
        index = end + 1
    return blocks


def prose(page: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    inside = None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        fence = re.match(r"\s*(```+|~~~+)", line)
        if fence and inside is None:
            inside = fence.group(1)
        elif fence and inside and line.strip().startswith(inside):
            inside = None
        elif inside is None:
            yield number, line


def code_spans(page: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each inline code span outside code blocks; a span may wrap across lines."""
    paragraphs: list[list[tuple[int, str]]] = []
    for number, line in prose(page):
        if paragraphs and line.strip() and paragraphs[-1][-1][0] == number - 1:
            paragraphs[-1].append((number, line))
        elif line.strip():
            paragraphs.append([(number, line)])
    for paragraph in paragraphs:
        text = "\n".join(line for _, line in paragraph)
        for match in re.finditer(r"(`+)(.+?)\1", text, re.DOTALL):
            number = paragraph[0][0] + text.count("\n", 0, match.start())
            yield number, " ".join(match.group(2).split())


def rel(page: Path) -> str:
    return str(page.relative_to(REPO))


# --- links and anchors ------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text as rendered (code, emphasis and link markup gone), lower
    case, every character but letters, digits, `_`, `-` and spaces dropped, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = "".join(c for c in text.lower() if c in "-_ " or unicodedata.category(c)[0] in "LNM")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives `page`: one per heading (a repeated one gets -1, -2, …), and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose(page):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            name = base if base not in seen else f"{base}-{seen[base]}"
            seen[base] = seen.get(base, 0) + 1
            found.add(name)
        found.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return found


def without_code_spans(line: str) -> str:
    return re.sub(r"(`+).*?\1", "", line)


def links() -> list[tuple[Path, int, str]]:
    """(page, line, target) of every relative link and image in the pages (`[text](target)`, and a reference
    definition `[name]: target`), outside code."""
    found = []
    for page in PAGES:
        for number, line in prose(page):
            text = without_code_spans(line)
            inline = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
            for target in inline + re.findall(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)", text):
                if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not ours
                    found.append((page, number, target))
    return found


LINKS = links()


@pytest.mark.parametrize(("page", "line", "target"), LINKS, ids=[f"{rel(p)}:{n}:{t}" for p, n, t in LINKS])
def test_every_relative_link_and_anchor_in_the_docs_resolves(page: Path, line: int, target: str):
    path, _, anchor = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    assert destination.exists(), f"{rel(page)}:{line}: {target}: no such file"
    assert REPO in destination.parents or destination == REPO, (
        f"{rel(page)}:{line}: {target}: outside the repository"
    )
    if anchor:
        assert destination.suffix == ".md", (
            f"{rel(page)}:{line}: {target}: an anchor into a file that is not a page"
        )
        assert anchor in anchors(destination), (
            f"{rel(page)}:{line}: {target}: no heading with that anchor in {rel(destination)} "
            f"(there are: {', '.join(sorted(anchors(destination)))})"
        )


# --- commands ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A command line shown on a page: where, which script, its arguments, the environment set before it."""

    page: Path
    line: int
    script: str  # train.py, report.py, …
    args: tuple[str, ...]
    env: dict[str, str]
    shown: str

    @property
    def id(self) -> str:
        return f"{rel(self.page)}:{self.line}"


def invocations(text: str) -> list[tuple[str, tuple[str, ...], dict[str, str]]]:
    """(script, arguments, environment set before it) of each `python src/<script> …` in one shell line
    (comments dropped)."""
    if not any(f"src/{script}" in text for script in SCRIPTS):
        return []
    tokens = shlex.split(text, comments=True)
    found, segment = [], []
    for token in [*tokens, ";"]:
        if token not in ("&&", "||", ";", "|"):
            segment.append(token)
            continue
        for index, word in enumerate(segment[1:], 1):
            script = word.rsplit("/", 1)[-1]
            python = Path(segment[index - 1]).name.startswith("python")
            if script in SCRIPTS and word.endswith(f"src/{script}") and python:
                env = dict(t.split("=", 1) for t in segment[: index - 1] if re.match(r"[A-Z_]+=", t))
                found.append((script, tuple(segment[index + 1 :]), env))
                break
        segment = []
    return found


def shell_lines(lines: tuple[str, ...], first: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of each shell line, `\\`-continued lines joined, a leading `$ ` dropped."""
    pending, start = "", first
    for number, line in enumerate(lines, first):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, re.sub(r"^\s*\$\s+", "", pending + line)
        pending = ""


def commands() -> list[Command]:
    found = []
    for page in PAGES:
        for block in fenced_blocks(page):
            if block.marker or block.language in ("markdown", "md"):
                continue  # mistakes: checked by the test below
            for number, line in shell_lines(block.lines, block.line):
                for script, args, env in invocations(line):
                    found.append(Command(page, number, script, args, env, line.strip()))
        for number, span in code_spans(page):
            if re.match(r"(\S*/)?python3? src/", span):
                for script, args, env in invocations(span):
                    found.append(Command(page, number, script, args, env, span))
    return found


COMMANDS = commands()


@contextlib.contextmanager
def hydra_context(cfg=None):
    """Hydra's global state as in the CLI while composing (and HydraConfig set to `cfg`), cleared after."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    try:
        if cfg is not None:
            HydraConfig.instance().set_config(cfg)
        yield
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()


def compose(overrides: list[str]):
    """conf/train.yaml composed with `overrides` as src/train.py composes it, the `hydra` node kept."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import trainlab.cluster.launcher  # noqa: F401  (registers ${slurm_gpus:…}, as src/train.py does)

    with hydra_context(), initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=overrides, return_hydra_config=True)


def sweep_jobs(overrides: list[str], base) -> list[list[str]]:
    """The jobs a `-m` run of `overrides` launches: Hydra's basic (grid) sweeper expands the config's own
    `hydra.sweeper.params` (an experiment's variants) with the command line's sweeps; under the Optuna
    sweeper each discrete sweep value of the command line is a job (its search space is distributions)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    hydra_overrides = [o.input_line for o in parsed if o.is_hydra_override()]
    task = [o for o in parsed if not o.is_hydra_override()]
    if "optuna" in base.hydra.sweeper._target_:
        arguments = [o.input_line for o in task if not o.is_interval_sweep()]
    else:
        params = base.hydra.sweeper.get("params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()] + [o.input_line for o in task]
    [batch] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    return [[*hydra_overrides, *job] for job in batch]


def gpu_missing(cfg) -> bool:
    """The config trains on a GPU and this machine has none (so the preflight, which builds the Trainer on
    this machine, must refuse it)."""
    import torch

    return cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available()


def validate_as_the_cli(cfg, multirun: bool, gpu_elsewhere: bool = False) -> None:
    """What src/train.py checks before it trains or submits: trainlab's validation (with the preflight), the
    SLURM launcher's rules, DDP in a local sweep; for a sweep, the sweeper's own settings. `gpu_elsewhere`:
    a command shown for a GPU machine gets every check but the preflight where this machine has no GPU."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict, read_write

    from trainlab.cluster import container
    from trainlab.cluster.launcher import RULES as SLURM_RULES
    from trainlab.cluster.requeue import check_cluster
    from trainlab.config import validate
    from trainlab.rules import check_rules

    slurm = cfg.hydra.get("callbacks", {}).get("check_launcher") is not None
    if multirun:
        with hydra_context(cfg):
            instantiate(OmegaConf.to_container(cfg.hydra.sweeper, resolve=True))
    if slurm:
        check_rules(cfg, SLURM_RULES)
        container.settings(cfg)  # launcher.container's keys (its image is started at submission only)
    with read_write(cfg.hydra.runtime):  # what Hydra sets as it starts the job (paths.output_dir)
        cfg.hydra.runtime.output_dir = tempfile.mkdtemp(prefix="trainlab-docs-")
    task = cfg.copy()
    with open_dict(task):
        del task["hydra"]
    with hydra_context(cfg):
        validate(task, build=not (gpu_elsewhere and gpu_missing(task)))
    check_cluster(task, in_sweep=multirun and not slurm)


def check_train(args: tuple[str, ...], gpu_elsewhere: bool = True) -> int:
    """Compose and validate every job of `python src/train.py ARGS`; return how many configs that was."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from trainlab.cli.options import unknown_option
    from trainlab.errors import ConfigError

    if (error := unknown_option(list(args), CONF)) is not None:  # src/train.py's first check
        raise ConfigError(error)
    overrides = [a for a in args if not a.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = compose(plain)
    multirun = any(a in MULTIRUN_FLAGS for a in args) or base.hydra.mode == "MULTIRUN"
    if not multirun:
        validate_as_the_cli(base, multirun=False, gpu_elsewhere=gpu_elsewhere)
        return 1
    jobs = sweep_jobs(overrides, base)
    for job in jobs:
        validate_as_the_cli(compose(job), multirun=True, gpu_elsewhere=gpu_elsewhere)
    return len(jobs)


def check_report(args: tuple[str, ...]) -> int:
    """`src/report.py ARGS` up to reading MLflow: the experiment, the kind and the overrides compose (for
    `report.py augmented`, the run config with its data and augmentation checked)."""
    if args[:1] == ("augmented",):
        from trainlab.figures.augmented import compose_checked

        with hydra_context():
            compose_checked(list(args[1:]))
        return 1
    from trainlab.figures.exercise import KINDS
    from trainlab.figures.exercise import compose as compose_exercise

    options = dict(a.split("=", 1) for a in args if a.split("=", 1)[0] in ("experiment", "sweep", "kind"))
    overrides = [a for a in args if a.split("=", 1)[0] not in options]
    assert "experiment" in options, "report.py needs experiment=NAME"
    assert options.get("kind", "accuracy") in KINDS, f"kind={options['kind']}: must be one of {sorted(KINDS)}"
    with hydra_context():
        compose_exercise(options["experiment"], overrides)
    return 1


@contextlib.contextmanager
def python_path(folders: str | None) -> Iterator[None]:
    """`PYTHONPATH=a:b` shown before a command: those folders (from the repository root) importable."""
    added = [str(REPO / folder) for folder in (folders or "").split(":") if folder]
    sys.path[:0] = added
    try:
        yield
    finally:
        del sys.path[: len(added)]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "src" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_every_command_shown_composes_and_validates(command: Command):
    where = f"{command.id}: {command.shown}"
    if not (REPO / "src" / command.script).exists():
        pytest.skip(f"src/{command.script} does not exist in this checkout")
    if any(a.split("=")[0] in PRINTING_FLAGS for a in command.args):
        result = run_script(command.script, *command.args)
        assert result.returncode == 0, f"{where}\nexited {result.returncode}: {result.stderr[-2000:]}"
        return
    if command.script == "study.py":  # planned as the study plans it: every variant and claim checked
        result = run_script(command.script, *command.args, "--status")
        assert result.returncode == 0, f"{where}\nexited {result.returncode}: {result.stderr[-2000:]}"
        return
    if command.script == "sweeps.py":  # its arguments as its parser reads them (the studies may not exist)
        from trainlab.sweeps import arguments

        arguments().parse_args(list(command.args))
        return
    if command.script not in ("train.py", "report.py"):  # eval.py, predict.py: Hydra apps of their own
        result = run_script(command.script, *command.args, "--cfg", "job")
        assert result.returncode == 0, f"{where}\nexited {result.returncode}: {result.stderr[-2000:]}"
        return
    with python_path(command.env.get("PYTHONPATH")):
        try:
            (check_train if command.script == "train.py" else check_report)(command.args)
        except Exception as err:
            raise AssertionError(f"{where}\n{type(err).__name__}: {err}") from err


# --- mistakes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mistake:
    """A shown mistake: the command line, and the one `error: …` line it must print."""

    page: Path
    line: int
    script: str
    args: tuple[str, ...]
    env: dict[str, str]
    error: str
    marker: str

    @property
    def id(self) -> str:
        return f"{rel(self.page)}:{self.line}"


# A mistake that needs what its page's own test makes (a file where a folder should be): neither a command
# to validate here (that would create its folders in the checkout) nor a mistake to rerun here.
OWN_TEST = "mistake: own-test"


def mistakes() -> list[Mistake]:
    found = []
    for page in PAGES:
        for block in fenced_blocks(page):
            if not block.marker or block.marker == OWN_TEST:
                continue
            lines = list(shell_lines(block.lines, block.line))
            for (number, line), (_, error) in itertools.pairwise(lines):
                for script, args, env in invocations(line):
                    found.append(Mistake(page, number, script, args, env, error.strip(), block.marker))
    return found


MISTAKES = mistakes()


def error_lines(script: str, args: tuple[str, ...], root: Path) -> list[str]:
    """What `script ARGS` prints on stderr, as lines: train.py's checks in-process (it stops there, before
    any MLflow run), the others run for real in a subprocess with an empty project folder `root`."""
    if script != "train.py":
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
        result = subprocess.run(
            [sys.executable, str(REPO / "src" / script), *args],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=120,
            env={**env, "TRAINLAB_ROOT": str(root)},
        )
        return result.stderr.strip().splitlines()
    from trainlab.errors import UserError

    try:
        check_train(args, gpu_elsewhere=False)
    except UserError as err:
        return [f"error: {err}"]
    return []


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_every_mistake_shown_fails_with_exactly_the_line_shown(mistake: Mistake, tmp_path: Path):
    if mistake.marker == "mistake: no-gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a mistake only on a machine without a GPU; this one has one")
    assert mistake.error.startswith("error: "), f"{mistake.id}: a mistake is followed by its `error: …` line"
    if not (REPO / "src" / mistake.script).exists():
        pytest.skip(f"src/{mistake.script} does not exist in this checkout")
    with python_path(mistake.env.get("PYTHONPATH")):
        assert error_lines(mistake.script, mistake.args, tmp_path) == [mistake.error]


def test_the_docs_show_commands_and_mistakes_to_check():
    """The collectors find what the pages hold (a collector that found nothing would check nothing)."""
    assert len(COMMANDS) >= 40 and len(MISTAKES) >= 5 and len(LINKS) >= 20
    assert {c.script for c in COMMANDS} >= {"train.py", "report.py"}


# --- the site ---------------------------------------------------------------------------------------------


def test_every_page_is_in_the_sites_navigation():
    import yaml

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
    assert listed == {"index.md", *(str(p.relative_to(REPO / "docs")) for p in PAGES[1:])}


def test_the_site_builds_with_mkdocs_strict(tmp_path: Path):
    """`mkdocs build --strict`: every page renders, and no link is left that mkdocs cannot follow."""
    pytest.importorskip("mkdocs", reason="mkdocs-material is in the dev extra; not installed here")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Quickstart" in home and 'href="configuration/' in home
