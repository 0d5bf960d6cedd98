"""Batches by index from tensors held in memory: no per-sample transforms, no collation.

The sampler yields one index tensor per batch, and the dataset gathers the whole batch at once. The
order is a function of (seed, epoch) alone, so a resumed run sees the same batches as an
uninterrupted one, and every DDP rank takes its own slice of the same permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class TensorBatches(Dataset):
    """`dataset[index_tensor]` is the batch `(images[index], labels[index])`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class IndexBatchSampler(Sampler[torch.Tensor]):
    """Index tensors of `batch_size` (the last may be shorter), shuffled per epoch, sharded by rank.

    Lightning calls `set_epoch` before each training epoch. Under DDP each rank gets every
    `world_size`-th index of the permutation (padded by wrapping, as DistributedSampler does) so all
    ranks take the same number of steps.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size = size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        return -(-self.size // self.world_size)

    def __len__(self) -> int:
        return -(-self._per_rank() // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        if self.world_size > 1:
            padding = self._per_rank() * self.world_size - self.size
            order = torch.cat([order, order[:padding]])[self.rank :: self.world_size]
        yield from order.split(self.batch_size)
