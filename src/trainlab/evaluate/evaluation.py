"""`python src/eval.py`: a finished run's best network on a test set, no training.

Everything a user can get wrong (the run, its checkpoint, the data, the device) is checked before anything
is written. The results go into the run's own MLflow run (`eval/*` metrics, tagged with what was
evaluated), or into a child run of it when `data=` names another data set, which lasts as long as the
evaluation and always ends (FINISHED, FAILED or KILLED); figures and the per-class table go with them and
into the output folder.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from trainlab import interrupts
from trainlab.atomic import write_atomically
from trainlab.errors import DataError, check_choice, fail
from trainlab.evaluate.data import data_config
from trainlab.evaluate.finished import Finished, open_finished
from trainlab.rules import Rule, check_rules, is_int

log = logging.getLogger(__name__)

RULES = (
    Rule("mistakes", lambda v: is_int(v) and v >= 0, "an integer >= 0 (how many wrong images to show)"),
    Rule("device", lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
)


@dataclass(frozen=True)
class Outputs:
    """The network's logits on every image of a split, in order, the true labels, and the most confidently
    wrong images as the network took them (float (M, C, H, W), on the CPU) with their indices, most
    confident first."""

    logits: torch.Tensor  # (N, classes), float32 on the CPU
    labels: torch.Tensor  # (N,)
    mistakes: torch.Tensor  # (M,) indices into the split
    mistake_images: torch.Tensor

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.softmax(1)


def device_of(name: str) -> torch.device:
    """`auto`: the GPU where there is one, else the CPU; `cuda` only where torch sees one (else one line,
    not CUDA's traceback from deep inside the first copy)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise fail("device", name, "auto or cpu (torch sees no CUDA GPU on this machine)")
    return torch.device(name)


def run_roots(cfg: DictConfig) -> list[Path]:
    """Where run folders live on this machine (as `ckpt_path=last` searches them)."""
    root = Path(cfg.paths.root_dir)
    return [root / "outputs", root / "multirun"]


def open_run(cfg: DictConfig) -> Finished:
    """The run that `ckpt_path` or `run_id` names (a run id needs an MLflow logger: it is looked up there)."""
    uri = cfg.logger.get("tracking_uri")
    if cfg.get("run_id") is not None and not uri:
        raise fail("logger", cfg.logger.name, "mlflow to find a run by its id (or give ckpt_path=...)")
    return open_finished(cfg.get("ckpt_path"), cfg.get("run_id"), uri, run_roots(cfg))


class Worst:
    """The `count` most confidently wrong predictions seen so far, with their images: kept batch by batch,
    so that a test set need not fit in memory (a DataModule's)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.confidence = torch.empty(0)
        self.index = torch.empty(0, dtype=torch.long)
        self.images: torch.Tensor | None = None

    def add(self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, first: int) -> None:
        """One batch, whose first image is the split's `first`."""
        if not self.count:
            return
        confidence, predicted = logits.softmax(1).max(1)
        wrong = (predicted != labels).nonzero().squeeze(1)
        candidates = images[wrong].float().cpu()
        if self.images is not None:
            candidates = torch.cat([self.images, candidates])
        confidence = torch.cat([self.confidence, confidence[wrong].cpu()])
        index = torch.cat([self.index, wrong.cpu() + first])
        top = confidence.argsort(descending=True, stable=True)[: self.count]
        self.confidence, self.index, self.images = confidence[top], index[top], candidates[top]


@torch.no_grad()
def run_network(network: torch.nn.Module, datamodule: Any, device: torch.device, mistakes: int) -> Outputs:
    """The test split through the network as Lightning's `trainer.test` feeds it: the DataModule's
    `prepare_data`, `setup("test")` and `test_dataloader`, each batch through its transfer hooks (for the
    data trainlab batches, the x/255 of training)."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if not is_overridden("test_dataloader", datamodule):
        raise DataError(f"{datamodule.source}: has no test_dataloader (eval tests on the test split)")
    datamodule.prepare_data()
    datamodule.setup("test")
    network = network.to(device)
    logits, labels, worst, seen = [], [], Worst(mistakes), 0
    for batch in datamodule.test_dataloader():
        interrupts.check()  # Ctrl-C: between batches, the child run ended KILLED
        batch = datamodule.on_before_batch_transfer(batch, 0)
        batch = datamodule.transfer_batch_to_device(batch, device, 0)
        batch = datamodule.on_after_batch_transfer(batch, 0)
        if not (isinstance(batch, list | tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor)):
            raise DataError(f"{datamodule.source}: its test batches must be (images, labels) pairs")
        images, targets = batch
        out = network(images).float()
        worst.add(out, targets, images, seen)
        logits.append(out.cpu())
        labels.append(targets.cpu())
        seen += len(targets)
    if not seen:
        raise DataError(f"{datamodule.source}: its test_dataloader yields no images")
    shown = worst.images if worst.images is not None else torch.empty(0)
    return Outputs(torch.cat(logits), torch.cat(labels), worst.index, shown)


def confusion(outputs: Outputs, classes: int) -> torch.Tensor:
    """matrix[true, predicted] = how many images of class `true` were predicted `predicted`."""
    index = outputs.labels * classes + outputs.logits.argmax(1)
    return torch.bincount(index, minlength=classes * classes).view(classes, classes)


def metric_key(name: str) -> str:
    """A class name as MLflow accepts it in a metric key (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w\-./ ]", "_", name)


def scores(outputs: Outputs, matrix: torch.Tensor, names: list[str]) -> dict[str, float]:
    """eval/loss (mean cross-entropy), eval/acc, and eval/class_acc/<class> for each class with images."""
    loss = torch.nn.functional.cross_entropy(outputs.logits, outputs.labels)
    values = {"eval/loss": float(loss), "eval/acc": float(matrix.diagonal().sum() / matrix.sum())}
    for c, name in enumerate(names):
        if matrix[c].sum():
            values[f"eval/class_acc/{metric_key(name)}"] = float(matrix[c, c] / matrix[c].sum())
    return values


def table(matrix: torch.Tensor, names: list[str], values: dict[str, float]) -> str:
    """Per-class accuracy as a text table, the overall figures last."""
    width = max(8, *map(len, names))
    lines = [f"{'class':<{width}}  {'images':>7}  {'accuracy':>8}"]
    for c, name in enumerate(names):
        count = int(matrix[c].sum())
        accuracy = f"{float(matrix[c, c]) / count:8.4f}" if count else f"{'-':>8}"
        lines.append(f"{name:<{width}}  {count:>7}  {accuracy}")
    total = int(matrix.sum())
    lines.append(f"{'all':<{width}}  {total:>7}  {values['eval/acc']:8.4f}   loss {values['eval/loss']:.4f}")
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate the run's best checkpoint on the test split of its data (or of `data`); return eval/*."""
    from trainlab.tracking.tracker import check_logger

    check_rules(cfg, RULES)
    check_logger(cfg.logger)
    device = device_of(cfg.device)
    finished = open_run(cfg)
    data, other_data = data_config(cfg.get("data"), finished, cfg.paths.data_dir)
    log_model = cfg.logger.get("log_model") is True or cfg.logger.get("register_model") is not None
    if log_model:
        check_choice("logger.name", cfg.logger.name, ("mlflow",))
        if finished.run_id is None:
            raise fail("logger.log_model", True, "false for a checkpoint that no MLflow run records")
        _check_model_name(cfg, finished)

    from trainlab.data import build_datamodule, example_inputs

    with results_run(cfg, finished, data.name if other_data else None) as run_id:
        datamodule = build_datamodule(data, finished.config.get("seed") or 0)
        outputs = run_network(finished.network, datamodule, device, cfg.mistakes)
        values, files = report(cfg, finished, data.name, datamodule.source, outputs)
        if run_id is not None:
            record(finished, run_id, data.name, datamodule.source, values, files)
            log.info(
                "Recorded in MLflow run %s%s", run_id, " (a child run: other data)" if other_data else ""
            )
    if log_model:
        _log_model(cfg, finished, example_inputs(datamodule))
    return values


def report(
    cfg: DictConfig, finished: Finished, data: str, source: str, outputs: Outputs
) -> tuple[dict[str, float], list[Path]]:
    """Print the per-class table; write it, the confusion matrix and the mistakes into the output folder;
    return (eval/*, the files written)."""
    from trainlab.evaluate.figures import confusion_figure, mistakes_figure

    names = finished.class_names
    matrix = confusion(outputs, finished.num_classes)
    values = scores(outputs, matrix, names)
    text = table(matrix, names, values)
    print(f"{finished.source} on {data} ({source}), {len(outputs.labels)} test images\n{text}")

    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / "per_class.txt", text + "\n")
    title = f"{finished.config['model']['name']} on {data}: accuracy {values['eval/acc']:.3f}"
    files = [
        confusion_figure(matrix, names, title, folder / "confusion_matrix.png"),
        folder / "per_class.txt",
    ]
    if cfg.mistakes:
        wrong = outputs.mistakes
        confidence, predicted = outputs.probabilities[wrong].max(1)
        files.append(
            mistakes_figure(
                outputs.mistake_images,
                outputs.labels[wrong],
                predicted,
                confidence,
                names,
                folder / "mistakes.png",
            )
        )
    log.info("Figures and table in %s", folder)
    return values, files


@contextmanager
def results_run(cfg: DictConfig, finished: Finished, other_data: str | None) -> Iterator[str | None]:
    """The MLflow run the results go into, for the length of the evaluation: the run itself; for other data
    (`other_data`: their name) a child run of it, named `eval data=<name>`; None where no MLflow run records
    the checkpoint, or with `logger=none`."""
    if finished.run_id is None or not finished.tracking_uri or cfg.logger.name != "mlflow":
        yield None
    elif other_data is None:
        yield finished.run_id
    else:
        with child_run(finished.tracking_uri, finished.run_id, f"eval data={other_data}") as run_id:
            yield run_id


@contextmanager
def child_run(tracking_uri: str, parent_id: str, name: str) -> Iterator[str]:
    """A new child run of `parent_id` for the length of the block, created with its owner (a process that
    dies in it leaves a run the next command marks) and ended whatever happens in it, as a training run is
    (trainlab.tracking.tracker.end_run): FINISHED, FAILED with its `failure_reason`, or KILLED."""
    from trainlab.tracking.orphans import OWNER_TAG, owner
    from trainlab.tracking.spool import ResilientClient
    from trainlab.tracking.tracker import end_run, ending

    client = ResilientClient(tracking_uri)
    experiment = client.get_run(parent_id).info.experiment_id
    tags = {"mlflow.parentRunId": parent_id, OWNER_TAG: owner()}
    run_id = client.create_run(experiment, tags=tags, run_name=name).info.run_id
    try:
        yield run_id
    except BaseException as err:
        end_run(client, run_id, *ending(err))
        raise
    end_run(client, run_id, "FINISHED")


def record(
    finished: Finished, run_id: str, data: str, source: str, values: dict[str, float], files: list[Path]
) -> None:
    """Log eval/* (at the checkpoint's step), the figures and the tags `eval.checkpoint`, `eval.data` to
    the MLflow run `run_id` (the run itself, or its child run for other data)."""
    from mlflow.entities import Metric, RunTag

    from trainlab.tracking.spool import ResilientClient

    client = ResilientClient(finished.tracking_uri)  # a busy SQLite store is waited for
    tags = {"eval.checkpoint": finished.source, "eval.data": f"{data} ({source})"}
    now, step = int(time.time() * 1000), int(finished.state.get("global_step") or 0)
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, now, step) for key, value in values.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    for file in files:
        client.log_artifact(run_id, str(file), "eval")


def _label(finished: Finished) -> str:
    from trainlab.tracking.model import network_label

    return network_label(finished.config["model"], finished.image_shape, finished.num_classes)


def _check_model_name(cfg: DictConfig, finished: Finished) -> None:
    from mlflow.tracking import MlflowClient

    from trainlab.tracking.model import check_registered_name

    name = cfg.logger.get("register_model")
    if name:
        check_registered_name(MlflowClient(cfg.logger.tracking_uri), name, _label(finished))


def _log_model(cfg: DictConfig, finished: Finished, examples: torch.Tensor) -> None:
    """`logger.log_model=true` / `logger.register_model=<name>`: the network as the run's MLflow model
    (what a sweep trial does not log by itself)."""
    from trainlab.tracking.model import log_network

    name = cfg.logger.get("register_model")
    uri = log_network(
        finished.tracking_uri,
        finished.run_id,
        finished.network,
        examples.cpu().numpy(),
        name,
        _label(finished),
    )
    log.info("MLflow model %s", uri)
