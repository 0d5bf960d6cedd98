"""What the preflight (trainlab.preflight) adds to a run's validation, per model, in milliseconds.

    python benchmarks/preflight.py [--repeats 5]

Each config is timed in a fresh process, as a run meets it: torch and Lightning already imported (the run
imports them right after validating anyway), then the first call, then the median of `--repeats` more.
Wall-clock and CPU time (all threads) both: on a shared machine the wall clock also counts waiting.
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
wall, cpu = [], []
for _ in range(1 + int(sys.argv[2])):
    start, start_cpu = time.perf_counter(), time.process_time()
    preflight(cfg)
    wall.append((time.perf_counter() - start) * 1e3)
    cpu.append((time.process_time() - start_cpu) * 1e3)
print(json.dumps([wall[0], statistics.median(wall[1:]), cpu[0], statistics.median(cpu[1:])]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'ms: wall (CPU)':<28} {'first call':>15} {'then':>15}")
    for name, overrides in CONFIGS.items():
        command = [sys.executable, "-c", _TIMER, str(REPO / "conf"), str(args.repeats), *overrides]
        wall, wall_then, cpu, cpu_then = json.loads(
            subprocess.run(command, capture_output=True, text=True, check=True).stdout
        )
        print(f"{name:<28} {wall:>7.0f} ({cpu:>5.0f}) {wall_then:>7.0f} ({cpu_then:>5.0f})")


if __name__ == "__main__":
    main()
