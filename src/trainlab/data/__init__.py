"""Data sets by name: each loads its official splits; the data module batches them from memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from trainlab.config import check_choice, fail
from trainlab.data.sources import Splits, load_cifar10, load_idx_dataset
from trainlab.errors import DataError


@dataclass(frozen=True)
class DataSet:
    """How to load a data set, and the shape of its images and count of classes, known without reading it
    (the preflight builds the network on them; `build_datamodule` checks the files agree)."""

    load: Callable[[DictConfig], Splits]
    image_shape: tuple[int, int, int]
    num_classes: int = 10


DATASETS: dict[str, DataSet] = {
    "mnist": DataSet(
        lambda cfg: load_idx_dataset("mnist", cfg.root, cfg.download, cfg.get("allow_fallback", False)),
        (1, 28, 28),
    ),
    "fashion_mnist": DataSet(
        lambda cfg: load_idx_dataset(
            "fashion_mnist", cfg.root, cfg.download, system_copy=cfg.get("system_copy")
        ),
        (1, 28, 28),
    ),
    "cifar10": DataSet(lambda cfg: load_cifar10(cfg.root, cfg.download), (3, 32, 32)),
}


def check_data(cfg: DictConfig) -> None:
    check_choice("data.name", cfg.name, DATASETS)
    if not isinstance(cfg.get("allow_fallback", False), bool):
        raise fail("data.allow_fallback", cfg.allow_fallback, "true or false")
    if not isinstance(cfg.get("on_device", False), bool):
        raise fail("data.on_device", cfg.on_device, "true or false")


def build_datamodule(cfg: DictConfig, seed: int):
    """Load the data set named by `cfg.name` and wrap it for Lightning (raises DataError if unreadable, or
    if its images or classes are not those of `DATASETS`, which the config was checked against)."""
    from trainlab.data.datamodule import InMemoryDataModule

    dataset = DATASETS[cfg.name]
    splits = dataset.load(cfg)
    found = (tuple(splits.train_images.shape[1:]), splits.num_classes)
    if found != (dataset.image_shape, dataset.num_classes):
        raise DataError(
            f"{cfg.name}: {splits.source} holds images of shape {found[0]} in {found[1]} classes, not "
            f"{dataset.image_shape} in {dataset.num_classes}; put the official files in {cfg.root}"
        )
    on_device = cfg.get("on_device", False) and cfg.num_workers == 0  # workers gather on the host
    return InMemoryDataModule(
        splits, cfg.batch_size, cfg.val_size, cfg.train_size, cfg.num_workers, seed, on_device
    )
