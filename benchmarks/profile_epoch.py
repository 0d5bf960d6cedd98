"""Where a platform epoch's time goes: `src/train.py <overrides>` in this process under cProfile.

    python benchmarks/profile_epoch.py data.root=/tmp/bench-data optimizer=adam trainer.max_epochs=2

Prints the functions with the most own time and the Lightning/trainlab hooks with the most cumulative
time, over the whole `trainer.fit` (imports and start-up excluded).
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(overrides: list[str], rows: int = 35) -> None:
    import lightning as L

    profiler = cProfile.Profile()
    fit = L.Trainer.fit

    def profiled_fit(self, *args, **kwargs):
        profiler.enable()
        try:
            return fit(self, *args, **kwargs)
        finally:
            profiler.disable()

    L.Trainer.fit = profiled_fit

    def print_stats() -> None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(rows)
        stats.sort_stats("cumulative").print_stats(rows)

    atexit.register(print_stats)  # the CLI leaves through its exit handlers and then os._exit (fast_exit.py)
    sys.argv = [str(REPO / "src" / "train.py"), "callbacks.progress_bar.refresh_rate=20", *overrides]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
