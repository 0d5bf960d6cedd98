"""A user's DataModules: images made on the fly (as data that does not fit in memory is read per batch)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


def stripes(n: int, size: int, seed: int) -> TensorDataset:
    """Float images (n, 1, size, size): class 0 has bright rows, class 1 bright columns, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    pattern = (torch.arange(size) % 2).float()
    rows, columns = pattern[:, None].expand(size, size), pattern[None, :].expand(size, size)
    images = torch.where(labels[:, None, None] == 0, rows, columns)[:, None]
    return TensorDataset(images + 0.1 * torch.rand(n, 1, size, size, generator=generator), labels)


class Stripes(L.LightningDataModule):
    """Says its image shape and classes as attributes; `size` and `batch_size` are its own keys."""

    class_names = ("rows", "columns")

    def __init__(self, size: int = 8, batch_size: int = 16) -> None:
        super().__init__()
        self.size, self.batch_size = size, batch_size
        self.image_shape = (1, size, size)

    def setup(self, stage: str) -> None:
        names = ("train", "val", "test")
        self.splits = {name: stripes(64, self.size, seed) for seed, name in enumerate(names)}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.batch_size)


class ShapeFromFirstBatch(Stripes):
    """Says its class count but not its image shape: trainlab reads that from the first batch."""

    num_classes = 2
    class_names = None

    def __init__(self, size: int = 8, batch_size: int = 16) -> None:
        super().__init__(size, batch_size)
        del self.image_shape


class DictBatches(ShapeFromFirstBatch):
    """Batches as dicts and no image_shape attribute: trainlab cannot tell the image shape."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader([{"x": torch.zeros(1, 8, 8), "y": 0}] * 4, batch_size=2)


NOT_A_DATAMODULE = 42


class LostTestSplit(Stripes):
    """Its test split cannot be read (a disk gone mid-evaluation): eval's child run must end FAILED."""

    def test_dataloader(self) -> DataLoader:
        raise OSError("the test images' disk is gone")
