"""Check, before Hydra creates it, that the run's output folder can be created: otherwise Hydra fails
inside its own code with a traceback. Registered as a Hydra callback in conf/hydra/default.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trainlab.errors import Stop, UserError


def unwritable_reason(folder: Path) -> str | None:
    """Why `folder` cannot be created (or written), or None if it can: looks at its nearest existing
    ancestor, creating nothing."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


class CheckOutputFolder(Callback):
    """One line on stderr and exit status 2 when `hydra.run.dir` / `hydra.sweep.dir` cannot be made."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(Path(config.hydra.sweep.dir))


def _check(folder: Path) -> None:
    reason = unwritable_reason(folder.absolute())
    if reason:
        raise Stop(
            UserError(
                f"cannot create the output folder {folder}: {reason}; "
                "set paths.root_dir to a writable folder (or hydra.run.dir / hydra.sweep.dir)"
            )
        )
