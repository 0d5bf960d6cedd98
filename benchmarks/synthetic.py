"""Synthetic data sets in the real on-disk layouts, for benchmarks where the real files are absent.

`write_mnist` writes torchvision's `<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`
(60,000 + 10,000 images by default, as MNIST), `write_cifar10` writes `<root>/cifar-10-batches-py/`
(5 × 10,000 + 10,000). Each class is a bright band at a class-specific height over noise, so a model
learns it: the timings are of real training, not of a constant loss.

    python benchmarks/synthetic.py /tmp/bench-data [--cifar]
"""

from __future__ import annotations

import argparse
import pickle
import struct
from pathlib import Path

import numpy as np


def learnable_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, *shape) whose class is a bright band at a class-specific height, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    labels[:10] = np.arange(10)  # every class present, whatever n
    images = rng.integers(0, 60, (n, *shape)).astype(np.uint8)  # the tests' draws: their data stays the same
    band = shape[-2] // 10
    rows = np.arange(shape[-2])
    in_band = (rows[None, :] // band) == labels[:, None]  # (n, H): the rows of each image's band
    mask = in_band.reshape(n, *([1] * (len(shape) - 2)), shape[-2], 1)
    return np.where(mask, np.uint8(255), images), labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX, the format of MNIST's *-ubyte files: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 60_000, n_test: int = 10_000, folder: str = "MNIST") -> Path:
    """MNIST-format files under `root/folder/raw`; returns `root` (what `data.root` takes)."""
    raw = Path(root) / folder / "raw"
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = learnable_images(n, (28, 28), seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return Path(root)


def write_cifar10(root: Path, per_batch: int = 10_000, n_test: int = 10_000) -> Path:
    """cifar-10-batches-py/ as torchvision unpacks it: pickled dicts of uint8 rows (3·32·32) and labels."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        images, labels = learnable_images(n_test if name == "test_batch" else per_batch, (3, 32, 32), seed)
        entry = {"data": images.reshape(len(images), -1), "labels": labels.tolist(), "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return Path(root)


def write_image_folder(
    root: Path,
    per_class: int = 1_000,
    size: int = 32,
    classes: tuple[str, ...] = tuple(f"class{i}" for i in range(10)),
    formats: tuple[str, ...] = ("png",),
    sizes: tuple[int, ...] = (),
    grayscale_every: int = 0,
) -> Path:
    """torchvision's ImageFolder layout, `<root>/<class>/<i>.<format>`, written with PIL: `size`×`size` RGB
    noise with a bright band at a class-specific height (learnable). The i-th image of a class takes the
    i-th format and, if `sizes` are given, the i-th side; every `grayscale_every`-th is gray (0: none)."""
    from PIL import Image

    for index, name in enumerate(classes):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        images = np.random.default_rng(index).integers(0, 60, (per_class, size, size, 3)).astype(np.uint8)
        images[:, index * size // len(classes) : (index + 1) * size // len(classes)] = 255  # the class's band
        for i, array in enumerate(images):
            image = Image.fromarray(array)
            if grayscale_every and i % grayscale_every == 0:
                image = image.convert("L")
            if sizes:
                side = sizes[i % len(sizes)]
                image = image.resize((side, side))
            image.save(folder / f"{i}.{formats[i % len(formats)]}")
    return Path(root)


KINDS = ("images-idx3", "labels-idx1")


def has_mnist(root: Path) -> bool:
    raw = Path(root) / "MNIST" / "raw"
    return all((raw / f"{split}-{kind}-ubyte").exists() for split in ("train", "t10k") for kind in KINDS)


def has_cifar10(root: Path) -> bool:
    return (Path(root) / "cifar-10-batches-py" / "test_batch").exists()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--cifar", action="store_true", help="also write CIFAR-10")
    args = parser.parse_args()
    write_mnist(args.root)
    if args.cifar:
        write_cifar10(args.root)
    print(f"wrote synthetic data under {args.root}")
