"""`python src/predict.py`: a finished run's best network on new images, as a CSV.

One row per image: `input` (its file, or `file[i]` for an array's i-th image), `predicted` (the class
by name where the run recorded class names, else its index), `probability` (of that class), then one
column per class with its probability (softmax of the network's output). The same numbers as the run's
MLflow model answers when served (trainlab.tracking.model).
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from trainlab.evaluate.evaluation import device_of, open_run
from trainlab.evaluate.inputs import read_inputs
from trainlab.rules import Rule, check_rules, is_int

log = logging.getLogger(__name__)

RULES = (
    Rule("batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    Rule("resize", lambda v: isinstance(v, bool), "true or false"),
    Rule("device", lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
)

# Rows printed after the CSV is written; a longer file is only named.
SHOWN = 20


@torch.no_grad()
def probabilities(
    network: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """softmax(network(x / 255)) for uint8 images (N, C, H, W), batch by batch: (N, classes) on the CPU."""
    network = network.to(device)
    return torch.cat(
        [
            network(batch.to(device).float().div_(255.0)).float().softmax(1).cpu()
            for batch in images.split(batch_size)
        ]
    )


def predict(cfg: DictConfig) -> Path:
    """Write the predictions CSV (`output`, or predictions.csv in the output folder); return its path."""
    check_rules(cfg, RULES)
    finished = open_run(cfg)
    images, inputs = read_inputs(cfg.get("input"), finished.image_shape, cfg.resize)
    probs = probabilities(finished.network, images, cfg.batch_size, device_of(cfg.device))
    names = finished.class_names
    confidence, predicted = probs.max(1)
    path = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / "predictions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        [name, names[p], f"{c:.6f}", *(f"{v:.6f}" for v in row)]
        for name, p, c, row in zip(
            inputs, predicted.tolist(), confidence.tolist(), probs.tolist(), strict=True
        )
    ]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["input", "predicted", "probability", *names])
        writer.writerows(rows)
    if len(rows) <= SHOWN:
        for name, label, probability, *_ in rows:
            print(f"{name}: {label} ({float(probability):.3f})")
    print(f"{len(rows)} predictions of {finished.source}: {path}", file=sys.stdout)
    return path
