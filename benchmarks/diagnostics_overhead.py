"""Step-time overhead of `diagnostics=on` (at its default interval) against `off`, on the study's MLPs.

    .venv/bin/python benchmarks/diagnostics_overhead.py [--steps 400] [--repeats 3] [--device cpu]

Trains each model for `--steps` SGD steps (batch 100, MNIST-sized random images, 40 steps per epoch as on
the 4,000-image subset, no validation) with an MLflow logger in a temporary SQLite store, alternating off
and on `--repeats` times, and prints the median wall and CPU time per step of each and the overhead
(target: ≤ 15 %). torch runs on one thread, so the CPU time (robust to other jobs on a shared machine)
is the work done.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

MODELS = {
    "784-40-20-10 sigmoid (exercise 1)": ["model.hidden=[40,20]", "model.activation=sigmoid", "init=xavier"],
    "784-[100]x6-10 relu (exercise 4)": ["model.hidden=[100,100,100,100,100,100]"],
}


def fit_seconds(overrides: list[str], steps: int, device: str, store: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of a `fit` of `steps` training steps."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.loggers import MLFlowLogger
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader, TensorDataset

    from trainlab.diagnostics import Diagnostics
    from trainlab.module import Classifier
    from trainlab.run.callbacks import build_callbacks

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    groups = ("model", "norm", "init", "optimizer", "regularizer")
    module = Classifier({g: OmegaConf.to_container(cfg[g], resolve=True) for g in groups}, (1, 28, 28), 10)
    data = TensorDataset(torch.rand(4000, 1, 28, 28), torch.randint(0, 10, (4000,)))
    loader = DataLoader(data, batch_size=100, shuffle=True)
    diagnostics = [c for c in build_callbacks(cfg, store) if isinstance(c, Diagnostics)]
    trainer = L.Trainer(
        max_steps=steps,
        accelerator=device,
        devices=1,
        limit_val_batches=0,
        logger=MLFlowLogger(tracking_uri=f"sqlite:///{store}/mlflow.db"),
        callbacks=diagnostics,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=store,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, train_dataloaders=loader)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch
    from hydra.core.global_hydra import GlobalHydra

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder)
        for name, overrides in MODELS.items():
            times: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
            fit_seconds(overrides, 20, args.device, store)  # warm-up: imports, allocator, MLflow schema
            for _ in range(args.repeats):
                for mode in times:
                    GlobalHydra.instance().clear()
                    seconds = fit_seconds([*overrides, f"diagnostics={mode}"], args.steps, args.device, store)
                    times[mode].append(tuple(1000 * s / args.steps for s in seconds))
            for index, clock in enumerate(("wall", "CPU")):
                off, on = (statistics.median(t[index] for t in times[mode]) for mode in ("off", "on"))
                overhead = 100 * (on / off - 1)
                print(f"{name}, {clock}: off {off:.2f} ms/step, on {on:.2f} ms/step, {overhead:+.1f} %")
            GlobalHydra.instance().clear()


if __name__ == "__main__":
    main()
