"""What recording a run's provenance (trainlab.tracking.provenance) adds to the start of a run, in ms.

    python benchmarks/provenance.py [--repeats 7]

Each repeat is a fresh process doing what `train()` does before it records the run: import torch and
Lightning (and validate, here left out: it only lengthens the overlap). Three ways, alternated:

- `without`: the imports alone;
- `background` (what runs do): `Provenance()` started first, the imports, then `collect()`;
- `inline`: the imports, then `Provenance().collect()` at once (the cost a run would pay without the thread).

The added start-up time is `background - without` (the thread competes with the imports for the CPU and
the GIL, then `collect()` waits for whatever is left). Medians of wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_TIMER = """
import json, sys, time
start = time.perf_counter()
mode = sys.argv[1]
if mode == "background":
    from trainlab.tracking.provenance import Provenance
    provenance = Provenance()
import lightning, torch
imported = time.perf_counter()
if mode == "background":
    record = provenance.collect()
elif mode == "inline":
    from trainlab.tracking.provenance import Provenance
    record = Provenance().collect()
end = time.perf_counter()
print(json.dumps({"total": (end - start) * 1e3, "wait": (end - imported) * 1e3}))
"""

MODES = ("without", "background", "inline")


def measure(mode: str) -> dict[str, float]:
    env_path = str(REPO / "src")
    result = subprocess.run(
        [sys.executable, "-c", _TIMER, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    measure("without")  # warm the file cache
    found: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            found[mode].append(measure(mode))
    median = {mode: statistics.median(r["total"] for r in runs) for mode, runs in found.items()}
    wait = {mode: statistics.median(r["wait"] for r in runs) for mode, runs in found.items()}
    print(f"{'':>40} {'start to record (ms)':>22} {'after the imports (ms)':>24}")
    for mode in MODES:
        print(f"{mode:>40} {median[mode]:>22.0f} {wait[mode]:>24.0f}")
    print(f"{'added by provenance, in the background':>40} {median['background'] - median['without']:>22.0f}")
    print(f"{'added by provenance, inline':>40} {median['inline'] - median['without']:>22.0f}")


if __name__ == "__main__":
    main()
