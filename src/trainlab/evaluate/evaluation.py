"""`python src/eval.py`: a finished run's best network on a test set, no training.

Everything a user can get wrong (the run, its checkpoint, the data) is checked before anything is
written. The results go into the run's own MLflow run (`eval/*` metrics, tagged with what was evaluated),
or into a child run of it when `data=` names another data set; figures and the per-class table go with
them and into the output folder.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from trainlab.errors import check_choice, fail
from trainlab.evaluate.finished import Finished, open_finished
from trainlab.rules import Rule, check_rules, is_int

log = logging.getLogger(__name__)

RULES = (
    Rule("mistakes", lambda v: is_int(v) and v >= 0, "an integer >= 0 (how many wrong images to show)"),
    Rule("device", lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
)


@dataclass(frozen=True)
class Outputs:
    """The network's logits on every image of a split, in order, and the true labels."""

    logits: torch.Tensor  # (N, classes), float32 on the CPU
    labels: torch.Tensor  # (N,)

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.softmax(1)


def device_of(name: str) -> torch.device:
    """`auto`: the GPU where there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
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


def data_config(data: DictConfig | None, finished: Finished, data_dir: str) -> DictConfig:
    """The run's own data config, or `data` if given: a data set whose images and classes are the run's.
    The run's own data are read from where it read them, or from `data_dir` (`paths.data_dir`) on a
    machine without that folder."""
    from trainlab.data import DATASETS, check_data, describe_data

    if data is None:
        own = OmegaConf.create(finished.config["data"])
        if not Path(str(own.get("root"))).is_dir():
            own.root = data_dir
        return own
    check_data(data)
    found = describe_data(data)
    wanted = (tuple(finished.image_shape), finished.num_classes)
    if (found.image_shape, found.num_classes) != wanted:
        built_in = {name: ds.describe(data) for name, ds in DATASETS.items() if ds.kind == "built-in"}
        same = sorted(name for name, (shape, names) in built_in.items() if (shape, len(names)) == wanted)
        shape = "×".join(map(str, finished.image_shape))
        raise fail(
            "data",
            data.name,
            f"a data set of the run's {shape} images in {wanted[1]} classes: {', '.join(same)}",
        )
    return data


@torch.no_grad()
def run_network(network: torch.nn.Module, datamodule: Any, device: torch.device) -> Outputs:
    """Logits of the test split, batch by batch, scaled x/255 as in training."""
    network = network.to(device)
    logits, labels = [], []
    for images, targets in datamodule.test_dataloader():
        images, targets = datamodule.on_after_batch_transfer((images.to(device), targets.to(device)), 0)
        logits.append(network(images).float().cpu())
        labels.append(targets.cpu())
    return Outputs(torch.cat(logits), torch.cat(labels))


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


def most_confident_mistakes(outputs: Outputs, count: int) -> torch.Tensor:
    """Indices of the `count` wrong predictions with the highest predicted probability, highest first."""
    confidence, predicted = outputs.probabilities.max(1)
    wrong = (predicted != outputs.labels).nonzero().squeeze(1)
    return wrong[confidence[wrong].argsort(descending=True)[:count]]


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate the run's best checkpoint on the test split of its data (or of `data`); return eval/*."""
    check_rules(cfg, RULES)
    finished = open_run(cfg)
    data = data_config(cfg.get("data"), finished, cfg.paths.data_dir)
    other_data = cfg.get("data") is not None and data.name != finished.config["data"]["name"]
    log_model = cfg.logger.get("log_model") is True or cfg.logger.get("register_model") is not None
    if log_model:
        check_choice("logger.name", cfg.logger.name, ("mlflow",))
        if finished.run_id is None:
            raise fail("logger.log_model", True, "false for a checkpoint that no MLflow run records")
        _check_model_name(cfg, finished)

    from trainlab.data import build_datamodule, example_inputs
    from trainlab.evaluate.figures import confusion_figure, mistakes_figure

    datamodule = build_datamodule(data, finished.config.get("seed") or 0)
    outputs = run_network(finished.network, datamodule, device_of(cfg.device))
    names = finished.class_names
    matrix = confusion(outputs, finished.num_classes)
    values = scores(outputs, matrix, names)
    report = table(matrix, names, values)
    print(
        f"{finished.source} on {data.name} ({datamodule.source}), {len(outputs.labels)} test images\n{report}"
    )

    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "per_class.txt").write_text(report + "\n")
    title = f"{finished.config['model']['name']} on {data.name}: accuracy {values['eval/acc']:.3f}"
    files = [
        confusion_figure(matrix, names, title, folder / "confusion_matrix.png"),
        folder / "per_class.txt",
    ]
    wrong = most_confident_mistakes(outputs, cfg.mistakes)
    if cfg.mistakes:
        confidence, predicted = outputs.probabilities[wrong].max(1)
        images = datamodule.test.images[wrong.to(datamodule.test.images.device)].cpu()
        files.append(
            mistakes_figure(
                images, outputs.labels[wrong], predicted, confidence, names, folder / "mistakes.png"
            )
        )
    log.info("Figures and table in %s", folder)
    if finished.run_id is not None and finished.tracking_uri and cfg.logger.name == "mlflow":
        target = record(finished, data.name, datamodule.source, other_data, values, files)
        log.info("Recorded in MLflow run %s%s", target, " (a child run: other data)" if other_data else "")
        if log_model:
            _log_model(cfg, finished, example_inputs(datamodule))
    return values


def record(
    finished: Finished, data: str, source: str, child: bool, values: dict[str, float], files: list[Path]
) -> str:
    """Log eval/* (at the checkpoint's step), the figures and the tags `eval.checkpoint`, `eval.data` to
    the run, or to a new child run of it for other data; return the id of the run written to."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(finished.tracking_uri)
    tags = {"eval.checkpoint": finished.source, "eval.data": f"{data} ({source})"}
    run_id = finished.run_id
    if child:
        parent = client.get_run(run_id)
        tags["mlflow.parentRunId"] = run_id
        run_id = client.create_run(parent.info.experiment_id, run_name=f"eval data={data}").info.run_id
    now, step = int(time.time() * 1000), int(finished.state.get("global_step") or 0)
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, now, step) for key, value in values.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    for file in files:
        client.log_artifact(run_id, str(file), "eval")
    if child:
        client.set_terminated(run_id, "FINISHED")
    return run_id


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
