"""`data=custom`: the user's own LightningDataModule (`data._target_`), for data that does not fit in memory
or needs its own pipeline. Its config keys but `name` and `_target_` are its constructor's arguments.

trainlab needs the image shape and class count before it builds the network: from the module's
attributes (`image_shape` or `dims`; `num_classes` or `class_names`), else the shape from its first
training batch, an `(images, labels)` pair of float images (N, C, H, W) in the range the network wants.
"""

from __future__ import annotations

import operator
from typing import Any

from omegaconf import DictConfig

from trainlab.errors import DataError, fail
from trainlab.rules import arguments, check_call, construct, import_class

CUSTOM = "custom"


def datamodule_class(cfg: DictConfig) -> type:
    import lightning as L

    base = L.LightningDataModule
    return import_class("data._target_", cfg.get("_target_"), base, "a LightningDataModule", "my_pkg.Data")


def check_custom(cfg: DictConfig) -> None:
    """Its class imports, every key is one of its constructor's arguments, and none it needs is missing."""
    check_call("data", cfg._target_, datamodule_class(cfg), _keys(cfg))


def _keys(cfg: DictConfig) -> dict[str, Any]:
    """The constructor's arguments: the group's keys but `name` and `_target_`."""
    return {k: v for k, v in arguments(cfg).items() if k != "_target_"}


def build_custom(cfg: DictConfig) -> Any:
    """The user's DataModule, built from its keys, with `image_shape`, `num_classes`, `class_names` and
    `source` set as trainlab reads them (see the module docstring)."""
    datamodule = construct("data", cfg._target_, datamodule_class(cfg), _keys(cfg))
    names = getattr(datamodule, "class_names", None)
    num_classes = getattr(datamodule, "num_classes", None) or (len(names) if names else None)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise fail(
            "data._target_",
            cfg._target_,
            "a LightningDataModule with an attribute num_classes (an integer >= 2) or class_names",
        )
    shape = getattr(datamodule, "image_shape", None) or getattr(datamodule, "dims", None)
    if shape is None:
        shape = _first_batch_shape(datamodule, cfg._target_)
    image_shape = _sizes(shape)
    if len(image_shape) != 3:
        raise fail("data._target_", cfg._target_, f"a LightningDataModule of (C, H, W) images, not {shape}")
    found = {
        "image_shape": image_shape,
        "num_classes": num_classes,
        "class_names": list(map(str, names)) if names else None,
        "source": cfg._target_,
    }
    for name, value in found.items():
        if getattr(datamodule, name, None) != value:  # a property of the user's that already says it stays
            setattr(datamodule, name, value)
    return datamodule


def _sizes(shape: Any) -> tuple[int, ...]:
    """`shape` as positive integers (NumPy's and torch's too), or () if it is not such a sequence."""
    try:
        sizes = tuple(operator.index(s) for s in shape)
    except TypeError:
        return ()
    return sizes if all(s >= 1 for s in sizes) else ()


def _first_batch_shape(datamodule: Any, target: str) -> tuple[int, ...]:
    """The image shape of the first training batch, as Lightning would make it (prepare_data, setup)."""
    import torch

    datamodule.prepare_data()
    datamodule.setup("fit")
    try:
        batch = next(iter(datamodule.train_dataloader()))
    except StopIteration:
        raise DataError(f"data._target_={target}: its train_dataloader yields no batch") from None
    if not (isinstance(batch, list | tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor)):
        raise fail(
            "data._target_",
            target,
            "a LightningDataModule whose batches are (images, labels) pairs, or with an attribute "
            "image_shape (C, H, W)",
        )
    return tuple(batch[0].shape[1:])
