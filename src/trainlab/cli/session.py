"""One Hydra session on trainlab's `conf/` (and a user's own config folder) inside a running Python
process: what the Python API (trainlab.api) and a study (trainlab.studies) compose and run sweeps in, as
the CLI would, with nothing of Hydra's global state left behind."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
CONF = ROOT / "conf"


@contextmanager
def _initialized(config_dir: Path | None) -> Iterator[None]:
    """Hydra initialised on `conf/`, and `config_dir` (a user's own configs) searched before it as the
    CLI's `--config-dir` is: so the jobs of a sweep, which compose again, find the user's options too."""
    from hydra import initialize_config_dir, version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    if config_dir is None:
        with initialize_config_dir(str(CONF), version_base="1.3", job_name="train"):
            yield
        return
    if not config_dir.is_dir():
        from trainlab.errors import UserError

        raise UserError(f"--config-dir={config_dir}: no such folder")
    version.setbase("1.3")
    search_path = create_config_search_path(str(CONF))
    search_path.prepend("command-line", f"file://{config_dir}", anchor=SearchPathQuery(provider="schema"))
    Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
    try:
        yield
    finally:
        GlobalHydra.instance().clear()


@contextmanager
def hydra_session(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> Iterator[Any]:
    """Hydra set up on trainlab's `conf/` (and a user's `config_dir`) for one call with `overrides` (an
    unknown group option raised as the CLI's line), and nothing of it left behind afterwards."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException

    from trainlab import interrupts
    from trainlab.cli.options import unknown_option
    from trainlab.errors import ConfigError, Stop, UserError

    if config_dir is None and (error := unknown_option(list(overrides), CONF)) is not None:
        raise ConfigError(error)
    own = None if config_dir is None else Path(config_dir).expanduser().resolve()

    os.environ.setdefault("TRAINLAB_ROOT", str(ROOT))
    import trainlab.cluster.launcher  # noqa: F401  (registers ${slurm_gpus:…}, as src/train.py does)

    try:
        with (
            _initialized(own),
            interrupts.kernel_safe(),
            interrupts.cooperative(),
        ):
            yield GlobalHydra.instance().hydra
    except HydraException as err:  # an unknown group option, a bad key: Hydra's first line says which
        raise UserError(str(err).strip().splitlines()[0]) from None
    except Stop as stop:  # what the CLI prints as one line: a mistake, a sweep that stopped
        raise stop.error from None
    except interrupts.Interrupted as stop:  # the stop button: the run is saved and KILLED
        raise KeyboardInterrupt(str(stop)) from None
    except SystemExit as stop:
        if isinstance(stop.__context__, KeyboardInterrupt):  # Lightning's way out of one: sys.exit(1)
            raise KeyboardInterrupt("interrupted: the run is KILLED in MLflow") from None
        raise
    finally:
        HydraConfig.instance().cfg = None


def compose_config(overrides: list[str], hydra: Any) -> Any:
    """The config as the CLI composes it (sweep values left to the sweeper under `hydra.mode=MULTIRUN`)."""
    from hydra.types import RunMode

    multirun = "hydra.mode=MULTIRUN" in overrides
    return hydra.compose_config(
        "train",
        overrides,
        run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
        with_log_configuration=False,
    )


def fixed_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that are not sweeps: with a variant's own, what composes its one config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    return [o for o in overrides if not parser.parse_override(o).is_sweep_override()]
