"""Data sets by name: the built-in ones (official splits), image folders and npz arrays (held-out splits),
all batched from memory by one data module; or `data=custom`, the user's own LightningDataModule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.data.arrays import check_arrays, describe_arrays, load_arrays
from trainlab.data.folder import check_folder, describe_folder, load_image_folder
from trainlab.data.sources import Splits, load_cifar10, load_idx_dataset
from trainlab.errors import DataError, check_choice, fail
from trainlab.rules import SEEDS, Rule, check_rules, is_int, is_number, is_seed

Shape = tuple[int, int, int]
Describe = Callable[[DictConfig], tuple[Shape, tuple[str, ...]]]


@dataclass(frozen=True)
class DataSet:
    """How to load a data set, and how to know the shape of its images and its classes before reading
    it (the preflight builds the network on them; `build_datamodule` checks the loaded data agrees).

    `describe(cfg)` gives (image shape, class names); `check(cfg)` raises for the kind's own keys."""

    load: Callable[[DictConfig], Splits]
    describe: Describe
    kind: str = "built-in"
    check: Callable[[DictConfig], object] = lambda cfg: None


def _known(shape: Shape, class_names: tuple[str, ...]) -> Describe:
    return lambda cfg: (shape, class_names)


def _check_built_in(cfg: DictConfig) -> None:
    if not isinstance(cfg.get("allow_fallback", False), bool):
        raise fail("data.allow_fallback", cfg.allow_fallback, "true or false")


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS = tuple(map(str, range(10)))

DATASETS: dict[str, DataSet] = {
    "mnist": DataSet(
        lambda cfg: load_idx_dataset("mnist", cfg.root, cfg.download, cfg.get("allow_fallback", False)),
        _known((1, 28, 28), DIGITS),
        check=_check_built_in,
    ),
    "fashion_mnist": DataSet(
        lambda cfg: load_idx_dataset(
            "fashion_mnist", cfg.root, cfg.download, system_copy=cfg.get("system_copy")
        ),
        _known((1, 28, 28), FASHION_MNIST_CLASSES),
        check=_check_built_in,
    ),
    "cifar10": DataSet(
        lambda cfg: load_cifar10(cfg.root, cfg.download),
        _known((3, 32, 32), CIFAR10_CLASSES),
        check=_check_built_in,
    ),
    "image_folder": DataSet(load_image_folder, describe_folder, "image_folder", check_folder),
    "arrays": DataSet(load_arrays, describe_arrays, "arrays", check_arrays),
}
CUSTOM = "custom"


def is_size(value: object) -> bool:
    """A split's size: a fraction of the data in (0, 1), or a count of images >= 1."""
    return is_number(value) and (0 < value < 1 or (is_int(value) and value >= 1))


# The keys of the data sets trainlab batches from memory (a custom DataModule has its own).
IN_MEMORY_RULES: tuple[Rule, ...] = (
    Rule("data.batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    Rule("data.train_size", lambda v: is_int(v) and v >= 1, "null or an integer >= 1", optional=True),
    Rule(
        "data.val_size",
        is_size,
        "null, a fraction in (0, 1) or an integer count >= 1",
        optional=True,
    ),
    Rule("data.folds", lambda v: is_int(v) and v >= 2, "null or an integer >= 2", optional=True),
    Rule("data.fold", lambda v: is_int(v) and v >= 0, "null or an integer >= 0", optional=True),
    Rule(
        "data.test_size",
        is_size,
        "a fraction in (0, 1) or an integer count >= 1",
        optional=True,
    ),
    # A kind that has these keys sets them (the built-in sets split nothing: no split_seed).
    Rule(
        "data.split_seed",
        is_seed,
        f"{SEEDS} (the held-out images are the same in every run)",
        optional=True,
        nullable=False,
    ),
    Rule("data.num_workers", lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    Rule("data.download", lambda v: isinstance(v, bool), "true or false", optional=True, nullable=False),
    Rule("data.on_device", lambda v: isinstance(v, bool), "true or false", optional=True, nullable=False),
)


def check_data(cfg: DictConfig) -> None:
    """The data group's keys, and for folders and npz files that they are there and readable (their
    mistakes, like every config mistake, end the run before it is recorded)."""
    check_choice("data.name", cfg.name, (*DATASETS, CUSTOM))
    if cfg.name == CUSTOM:
        from trainlab.data.custom import check_custom

        check_custom(cfg)
        return
    check_rules(OmegaConf.create({"data": cfg}), IN_MEMORY_RULES)
    check_folds(cfg)
    DATASETS[cfg.name].check(cfg)


def check_folds(cfg: DictConfig) -> None:
    """`data.fold` names one of `data.folds`' folds, and a fold, not `data.val_size`, validates."""
    folds, fold = cfg.get("folds"), cfg.get("fold")
    if folds is None and fold is not None:
        raise fail("data.fold", fold, "null without data.folds (data.folds=K: K-fold cross-validation)")
    if folds is not None and fold is not None and fold >= folds:
        raise fail("data.fold", fold, f"an integer from 0 to {folds - 1} (data.folds={folds})")
    if folds is not None and cfg.get("val_size") is not None:
        raise fail("data.val_size", cfg.val_size, "null with data.folds (each fold validates in turn)")


@dataclass(frozen=True)
class Description:
    """What the network and the run need to know of the data before training."""

    image_shape: Shape
    num_classes: int
    class_names: tuple[str, ...]


def describe_data(cfg: DictConfig) -> Description:
    """The image shape, class count and names of `cfg` (a custom DataModule is built to be asked)."""
    if cfg.name == CUSTOM:
        datamodule = build_datamodule(cfg, seed=0)
        names = datamodule.class_names or tuple(map(str, range(datamodule.num_classes)))
        return Description(datamodule.image_shape, datamodule.num_classes, tuple(names))
    shape, names = DATASETS[cfg.name].describe(cfg)
    return Description(tuple(shape), len(names), tuple(names))


def epoch_batches(datamodule: Any, world_size: int = 1) -> int | None:
    """Training batches in an epoch of one rank: from the split's size for the data trainlab batches (not
    the loader's length: a run resumed mid-epoch has a shorter first loader, and the same run length); a
    custom DataModule's train loader's length (None if it has none)."""
    if hasattr(datamodule, "train") and hasattr(datamodule, "batch_size"):
        return math.ceil(math.ceil(len(datamodule.train) / world_size) / datamodule.batch_size)
    if getattr(datamodule, "trainer", None) is None:
        datamodule.setup("fit")  # before Lightning does, as describing its first batch did (data.custom)
    try:
        return len(datamodule.train_dataloader())
    except TypeError:
        return None


def example_inputs(datamodule: Any, count: int = 2) -> Any:
    """The first `count` test images as the network takes them (float (N, C, H, W); x/255 for the data
    trainlab batches, a custom DataModule's own range): an MLflow model's input example."""
    if hasattr(datamodule, "test") and hasattr(datamodule.test, "images"):
        return datamodule.test.images[:count].float().div(255)
    images, _ = next(iter(datamodule.test_dataloader()))
    return images[:count].float()


def build_datamodule(cfg: DictConfig, seed: int) -> Any:
    """Load the data set named by `cfg.name` and wrap it for Lightning (raises DataError if unreadable, or
    if its images or classes are not those `describe_data` gave, which the config was checked against).

    The data module has `image_shape`, `num_classes`, `class_names`, `source` (where the images came
    from), `kind` and `split` (how its splits were made), whatever the kind of data."""
    if cfg.name == CUSTOM:
        from trainlab.data.custom import build_custom

        datamodule = build_custom(cfg)
        datamodule.kind, datamodule.split = CUSTOM, "the DataModule's own"
        return datamodule
    return _in_memory(cfg, _load(cfg), seed)


def build_member_datamodule(cfgs: list[DictConfig], seeds: list[int]) -> Any:
    """One data module for a population whose member k has data config `cfgs[k]` (they differ at most in
    `data.fold`) and seed `seeds[k]`: batches of (K, B, …), member k's as its standalone run takes them
    (trainlab.data.members). The data is read once; members of one fold share its splits."""
    from trainlab.data.members import MemberDataModule

    splits = _load(cfgs[0])
    folds: dict[Any, Any] = {}
    for cfg, seed in zip(cfgs, seeds, strict=True):
        if cfg.get("fold") not in folds:
            folds[cfg.get("fold")] = _in_memory(cfg, splits, seed)
    return MemberDataModule([folds[cfg.get("fold")] for cfg in cfgs], seeds)


def _load(cfg: DictConfig) -> Splits:
    """The data set's splits, checked against what `describe_data` said of it."""
    expected = describe_data(cfg)
    splits = DATASETS[cfg.name].load(cfg)
    found = (tuple(splits.train_images.shape[1:]), splits.num_classes)
    if found != (expected.image_shape, expected.num_classes):
        raise DataError(
            f"{cfg.name}: {splits.source} holds images of shape {found[0]} in {found[1]} classes, not "
            f"{expected.image_shape} in {expected.num_classes}; put the official files in {cfg.get('root')}"
        )
    return splits


def _in_memory(cfg: DictConfig, splits: Splits, seed: int) -> Any:
    from trainlab.data.datamodule import InMemoryDataModule

    on_device = cfg.get("on_device", False) and cfg.num_workers == 0  # workers gather on the host
    return InMemoryDataModule(
        splits,
        cfg.batch_size,
        cfg.val_size,
        cfg.train_size,
        cfg.num_workers,
        seed,
        on_device,
        list(describe_data(cfg).class_names),
        DATASETS[cfg.name].kind,
        cfg.get("folds"),
        cfg.get("fold") or 0,
        cfg.get("split_seed") or 0,
    )


CLASS_NAMES_FILE = "class_names.json"


def data_tags(datamodule: Any) -> dict[str, str]:
    """The run's tags about its data: where it came from, its kind, how its splits were made, its classes."""
    return {
        "data.source": str(datamodule.source),
        "data.kind": datamodule.kind,
        "data.split": datamodule.split,
        "data.num_classes": str(datamodule.num_classes),
    }


def log_class_names(tracker: Any, datamodule: Any, run_dir: Path) -> None:
    """`class_names.json` (the names of labels 0…C−1, or null) beside the run's config and in its MLflow
    artifacts, so that a prediction read from the run can name its class."""
    import json

    from trainlab.atomic import write_atomically

    path = run_dir / CLASS_NAMES_FILE
    write_atomically(path, json.dumps(datamodule.class_names))
    tracker.log_artifact(path)
