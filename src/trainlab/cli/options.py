"""An unknown option of a config group as the project's one line (`error: optimizer='lbfgs': must be one
of adagrad, adam, …`, exit status 2), checked on the command line before Hydra composes anything:
Hydra's own message is a dozen lines ending in its search path, and exits 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trainlab.cli.help import config_groups
from trainlab.errors import fail

# Arguments that add config folders (a user's own options, unknown to `conf/`): Hydra then checks alone.
_MORE_CONFIGS = ("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath", "+hydra.searchpath")


def _options_named(value: Any) -> list[str] | None:
    """The option names an override's value gives: `adam`, `[mlflow,tensorboard]`, `adam,sgd` (a sweep);
    None for what names no option itself (glob(), range(), null)."""
    from hydra.core.override_parser.types import ChoiceSweep

    if isinstance(value, ChoiceSweep):
        value = value.list
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def unknown_option(args: list[str], conf: Path) -> str | None:
    """The one-line error for the first `group=option` among `args` whose option has no YAML file in
    `conf/<group>/`, or None (Hydra's own groups and grammar errors are Hydra's to report)."""
    if any(arg.startswith(_MORE_CONFIGS) for arg in args):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException:
        return None
    groups = config_groups(conf)
    for override in overrides:
        options = groups.get(override.key_or_group)
        if options is None or override.is_delete():
            continue
        for name in _options_named(override.value()) or []:
            if name not in options:
                return str(fail(override.key_or_group, name, "one of " + ", ".join(sorted(options))))
    return None


def check_options(args: list[str], conf: Path) -> None:
    """Exit with status 2 and the one line when `args` name an option `conf` does not have."""
    if (error := unknown_option(args, conf)) is not None:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
