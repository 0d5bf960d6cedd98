"""`train.py --help` without composing every option: its config groups listed straight from `conf/`.

Hydra's help lists each group's options through its config loader, which copies the whole config
repository for every group it asks about (131 deep copies here, ~1 s of a 1.5 s `--help`), Hydra's
own groups included, though the app's help never shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def config_groups(conf: Path) -> dict[str, list[str]]:
    """{group: its options} for every folder of YAML files under `conf` (`a/b` for nested ones), but
    Hydra's own (`hydra/`)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group != "." and group.split("/")[0] != "hydra":
            groups.setdefault(group, []).append(path.stem)
    return groups


def format_groups(conf: Path) -> str:
    """One line per group, `group: option, option, ...`, as Hydra's `$APP_CONFIG_GROUPS` prints them."""
    return "".join(
        f"{group}: {', '.join(options)}\n" for group, options in sorted(config_groups(conf).items())
    )


def list_groups_from(conf: Path) -> None:
    """Make Hydra's `--help` take its group list from `conf`. Only for `--help`: `--hydra-help` lists
    Hydra's own groups, which come from its installed packages, through the same method."""
    from hydra._internal.hydra import Hydra

    def format_config_groups(self: Hydra, predicate: Callable[[str], bool], compact: bool = True) -> str:
        return "" if predicate("hydra") else format_groups(conf)

    Hydra.format_config_groups = format_config_groups
