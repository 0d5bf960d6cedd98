"""The composed config as a short tree, printed when a run starts: what the run really is, one line per
config group (its option and its values), however the command line and the files combined to make it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Machine paths and bookkeeping: not what the run is.
LEFT_OUT = ("paths", "hydra", "report", "variants", "population")
WIDTH = 160  # characters a line may take before it is cut with "…"


def _flat(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    items = []
    for key, value in node.items():
        if isinstance(value, Mapping):
            items += _flat(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}={value}")
    return items


def _line(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"


def config_tree(config: Mapping[str, Any], choices: Mapping[str, Any]) -> str:
    """`config` (resolved) as a tree:

        config
        ├─ data: mnist  root=data batch_size=128 …
        ├─ optimizer: adam  lr=0.001 …
        └─ seed=0 optimized_metric=val/acc …

    A group shows the option chosen for it (`choices`, Hydra's runtime choices); top-level values share
    the last line."""
    groups = [k for k, v in config.items() if isinstance(v, Mapping) and k not in LEFT_OUT]
    leaves = [f"{k}={v}" for k, v in config.items() if not isinstance(v, Mapping) and k not in LEFT_OUT]
    lines = ["config"]
    for key in groups:
        option = f": {choices[key]}" if choices.get(key) is not None else ""
        lines.append(_line(f"├─ {key}{option}  " + " ".join(_flat(config[key]))))
    lines.append(_line("└─ " + " ".join(leaves)))
    return "\n".join(lines)
