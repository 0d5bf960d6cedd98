"""What the preflight (trainlab.preflight) adds to a run's validation, per model, in milliseconds.

    python benchmarks/preflight.py [--repeats 5]

Each config is timed in a fresh process, as a run meets it: torch and Lightning already imported (the run
imports them right after validating anyway), then the first call, then the median of `--repeats` more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONFIGS = {
    "mlp (default)": [],
    "simple_cnn": ["model=simple_cnn"],
    "cifar_cnn on cifar10": ["model=cifar_cnn", "data=cifar10"],
    "alexnet on cifar10": ["model=alexnet", "data=cifar10"],
    "alexnet, batch norm, adam": ["model=alexnet", "data=cifar10", "norm=batch", "optimizer=adam"],
}

_TIMER = """
import json, statistics, sys, time
import lightning, torch
from hydra import compose, initialize_config_dir
from trainlab.preflight import preflight

with initialize_config_dir(sys.argv[1], version_base="1.3"):
    cfg = compose("train", overrides=sys.argv[3:])
times = []
for _ in range(1 + int(sys.argv[2])):
    start = time.perf_counter()
    preflight(cfg)
    times.append((time.perf_counter() - start) * 1e3)
print(json.dumps({"first": times[0], "median": statistics.median(times[1:])}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'config':<28} {'first call':>11} {'then':>9}")
    for name, overrides in CONFIGS.items():
        command = [sys.executable, "-c", _TIMER, str(REPO / "conf"), str(args.repeats), *overrides]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(f"{name:<28} {result['first']:>8.0f} ms {result['median']:>6.0f} ms")


if __name__ == "__main__":
    main()
