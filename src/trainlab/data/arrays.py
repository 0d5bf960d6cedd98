"""`data=arrays`: a NumPy `.npz` of `x_train, y_train, x_test, y_test`, the form courses hand data out in.

Images are uint8 (0–255) or float (0–1, or 0–255), NCHW or NHWC, or (N, H, W) for one channel; labels are
integers 0…C−1. An optional `class_names` array names the classes. Floats are stored as uint8, as every
other data set is, and scaled back to [0, 1] on the device (x/255: a float image loses below 1/255).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from trainlab.data.sources import Splits
from trainlab.data.split import held_out, hold_out, shuffled, val_share
from trainlab.errors import DataError, fail

log = logging.getLogger(__name__)

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
CHANNELS = (1, 3)


def _npz(cfg: DictConfig) -> Path:
    path = cfg.get("path")
    if not isinstance(path, str) or not Path(path).expanduser().is_file():
        raise fail("data.path", path, "an existing .npz file holding x_train, y_train, x_test, y_test")
    return Path(path).expanduser()


def _header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype from its .npy header, without reading its data."""
    with archive.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, dtype


def _channel_axis(path: Path, name: str, shape: tuple[int, ...]) -> int | None:
    """1 for NCHW, 3 for NHWC, None for (N, H, W); DataError for any other rank or channel count."""
    if len(shape) == 3:
        return None
    if len(shape) == 4 and shape[1] in CHANNELS:
        return 1
    if len(shape) == 4 and shape[3] in CHANNELS:
        return 3
    raise DataError(
        f"data.path={path}: {name} has shape {shape}; it must be images (N, C, H, W) or (N, H, W, C) "
        "with C = 1 or 3, or (N, H, W)"
    )


def _shape(path: Path, name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    axis = _channel_axis(path, name, shape)
    if axis is None:
        return (1, shape[1], shape[2])
    return (shape[1], shape[2], shape[3]) if axis == 1 else (shape[3], shape[1], shape[2])


def _class_names(labels: list[np.ndarray], names: np.ndarray | None, path: Path) -> tuple[str, ...]:
    """The npz's `class_names`, or "0"…"C−1" for C = the largest label + 1; labels must lie in 0…C−1."""
    for name, y in zip(("y_train", "y_test"), labels, strict=True):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"data.path={path}: {name} has shape {y.shape} and dtype {y.dtype}; it must be integer "
                "class labels, one per image (N,)"
            )
    top = max(int(y.max(initial=0)) for y in labels)
    low = min(int(y.min(initial=0)) for y in labels)
    count = len(names) if names is not None else top + 1
    if low < 0 or top >= count:
        bad = low if low < 0 else top
        raise DataError(
            f"data.path={path}: label {bad} is out of range; labels must be 0…{count - 1}"
            + (f" (class_names has {count} names)" if names is not None else "")
        )
    return tuple(str(n) for n in names) if names is not None else tuple(str(c) for c in range(count))


def _read(path: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"data.path={path}: not a readable .npz file ({err})") from None
    missing = [n for n in ARRAYS if f"{n}.npy" not in archive.namelist()]
    if missing:
        raise DataError(
            f"data.path={path}: lacks {', '.join(missing)}; save it with "
            "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    return archive


def describe_arrays(cfg: DictConfig) -> tuple[tuple[int, int, int], tuple[str, ...]]:
    """The image shape and class names, from the arrays' headers and the labels (no image is read)."""
    path = _npz(cfg)
    with _read(path) as archive:
        shapes = {name: _header(archive, name)[0] for name in ("x_train", "x_test")}
    image_shapes = {name: _shape(path, name, shape) for name, shape in shapes.items()}
    if image_shapes["x_train"] != image_shapes["x_test"]:
        raise DataError(
            f"data.path={path}: x_train holds {image_shapes['x_train']} images but x_test "
            f"{image_shapes['x_test']} (as C, H, W); both splits need one image shape"
        )
    with np.load(path, allow_pickle=False) as data:
        names = data["class_names"] if "class_names" in data.files else None
        class_names = _class_names([data["y_train"], data["y_test"]], names, path)
    return image_shapes["x_train"], class_names


def check_arrays(cfg: DictConfig) -> None:
    """The npz's arrays (`describe_arrays`), and a `data.val_size` that leaves images on both sides."""
    describe_arrays(cfg)
    with _read(_npz(cfg)) as archive:
        images = _header(archive, "x_train")[0][0]
    held_out("data.val_size", val_share(cfg.val_size), images)


def _as_uint8(path: Path, name: str, x: np.ndarray) -> torch.Tensor:
    """Images as uint8 (N, C, H, W): floats in [0, 1] are scaled by 255, floats in [0, 255] rounded."""
    axis = _channel_axis(path, name, x.shape)
    x = x[:, None] if axis is None else (x.transpose(0, 3, 1, 2) if axis == 3 else x)
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"data.path={path}: {name} has dtype {x.dtype}; it must be uint8 or float images")
        low, high = float(x.min(initial=0)), float(x.max(initial=0))
        if low < 0 or high > 255:
            raise DataError(
                f"data.path={path}: {name} holds values in [{low:g}, {high:g}]; images must be in [0, 1] "
                "or [0, 255] (undo any normalisation: trainlab scales pixels itself)"
            )
        scale = 255.0 if np.issubdtype(x.dtype, np.floating) and high <= 1 else 1.0
        x = np.rint(x.astype(np.float32) * scale).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(x))


def load_arrays(cfg: DictConfig) -> Splits:
    """The npz's train and test splits, and `data.val_size` of the training images held out (stratified:
    course files often come sorted by class)."""
    _, class_names = describe_arrays(cfg)
    path = _npz(cfg)
    with np.load(path, allow_pickle=False) as data:
        x_train = _as_uint8(path, "x_train", data["x_train"])
        x_test = _as_uint8(path, "x_test", data["x_test"])
        y_train, y_test = torch.from_numpy(data["y_train"]).long(), torch.from_numpy(data["y_test"]).long()
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise DataError(f"data.path={path}: x_{name} holds {len(x)} images but y_{name} {len(y)} labels")
    val_size = val_share(cfg.val_size)
    val = hold_out("data.val_size", val_size, y_train, cfg.split_seed)
    train = shuffled((~val).nonzero().squeeze(1), cfg.split_seed)
    split = f"x_train, x_test; held out (stratified, split_seed={cfg.split_seed}): val_size={val_size}"
    log.info("arrays: %d training + %d test images from %s", len(y_train), len(y_test), path)
    return Splits(
        x_train[train],
        y_train[train],
        x_test,
        y_test,
        str(path),
        len(class_names),
        x_train[val],
        y_train[val],
        split,
    )
