"""Data sets by name: each loads its official splits; the data module batches them from memory."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from trainlab.config import check_choice, fail
from trainlab.data.sources import Splits, load_cifar10, load_idx_dataset

DATASETS: dict[str, Callable[[DictConfig], Splits]] = {
    "mnist": lambda cfg: load_idx_dataset("mnist", cfg.root, cfg.download, cfg.get("allow_fallback", False)),
    "fashion_mnist": lambda cfg: load_idx_dataset(
        "fashion_mnist", cfg.root, cfg.download, system_copy=cfg.get("system_copy")
    ),
    "cifar10": lambda cfg: load_cifar10(cfg.root, cfg.download),
}


def check_data(cfg: DictConfig) -> None:
    check_choice("data.name", cfg.name, DATASETS)
    if not isinstance(cfg.get("allow_fallback", False), bool):
        raise fail("data.allow_fallback", cfg.allow_fallback, "true or false")
    if not isinstance(cfg.get("on_device", False), bool):
        raise fail("data.on_device", cfg.on_device, "true or false")


def build_datamodule(cfg: DictConfig, seed: int):
    """Load the data set named by `cfg.name` and wrap it for Lightning (raises DataError if unreadable)."""
    from trainlab.data.datamodule import InMemoryDataModule

    splits = DATASETS[cfg.name](cfg)
    on_device = cfg.get("on_device", False) and cfg.num_workers == 0  # workers gather on the host
    return InMemoryDataModule(
        splits, cfg.batch_size, cfg.val_size, cfg.train_size, cfg.num_workers, seed, on_device
    )
