"""`python src/predict.py`: a finished run's best network on new images, as a CSV.

One row per image: `input` (its file, or `file[i]` for an array's i-th image), `predicted` (the class
by name where the run recorded class names, else its index), `probability` (of that class), then one
column per class with its probability (softmax of the network's output). The same numbers as the run's
MLflow model answers when served (trainlab.tracking.model). `output` names the CSV, or a folder to
write predictions.csv in; the file is written whole or not at all.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.errors import fail
from trainlab.evaluate.evaluation import device_of, open_run
from trainlab.evaluate.inputs import read_inputs
from trainlab.rules import Rule, check_rules, is_int

log = logging.getLogger(__name__)

RULES = (
    Rule("batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    Rule("resize", lambda v: isinstance(v, bool), "true or false"),
    Rule("device", lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    Rule("output", lambda v: isinstance(v, str), "null, a .csv file or a folder", optional=True),
)
CSV_NAME = "predictions.csv"

# Rows printed after the CSV is written; a longer file is only named.
SHOWN = 20


@torch.no_grad()
def probabilities(
    network: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """softmax(network(x / 255)) for uint8 images (N, C, H, W), batch by batch: (N, classes) on the CPU."""
    network = network.to(device)
    found = []
    for batch in images.split(batch_size):
        interrupts.check()  # Ctrl-C: between batches, nothing written yet
        found.append(network(batch.to(device).float().div_(255.0)).float().softmax(1).cpu())
    return torch.cat(found)


def output_path(cfg: DictConfig) -> Path:
    """`output`: the CSV, or in a folder (one that exists, or a name ending in /) its predictions.csv;
    null: predictions.csv in the output folder. Refused where a file stands in the way of its folder."""
    output = cfg.get("output")
    if not output:
        return Path(cfg.paths.output_dir) / CSV_NAME
    path = Path(output).expanduser()
    if path.is_dir() or output.endswith("/"):
        path = path / CSV_NAME
    blocking = next((p for p in path.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise fail("output", output, f"a .csv file or a folder ({blocking} is a file, not a folder)")
    return path


def predict(cfg: DictConfig) -> Path:
    """Write the predictions CSV (`output_path`); return its path."""
    check_rules(cfg, RULES)
    device = device_of(cfg.device)
    finished = open_run(cfg)
    images, inputs = read_inputs(cfg.get("input"), finished.image_shape, cfg.resize)
    probs = probabilities(finished.network, images, cfg.batch_size, device)
    names = finished.class_names
    confidence, predicted = probs.max(1)
    rows = [
        [name, names[p], f"{c:.6f}", *(f"{v:.6f}" for v in row)]
        for name, p, c, row in zip(
            inputs, predicted.tolist(), confidence.tolist(), probs.tolist(), strict=True
        )
    ]
    path = output_path(cfg)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["input", "predicted", "probability", *names])
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text.getvalue())
    if len(rows) <= SHOWN:
        for name, label, probability, *_ in rows:
            print(f"{name}: {label} ({float(probability):.3f})")
    print(f"{len(rows)} predictions of {finished.source}: {path}", file=sys.stdout)
    return path
