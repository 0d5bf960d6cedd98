"""Batches by index from tensors held in memory: no per-sample transforms, no collation.

The sampler yields one index tensor per batch, and the dataset gathers the whole batch at once. The
order is a function of (seed, epoch) alone, so a resumed run sees the same batches as an
uninterrupted one, and every DDP rank takes its own slice of the same permutation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


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
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches already done in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next pass over `epoch` start after its first `batches_done` batches."""
        self._resume_at = (epoch, batches_done)

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
        batches = order.split(self.batch_size)
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            batches = batches[self._resume_at[1] :]
        self._resume_at = None
        yield from batches


class ResumableLoader(DataLoader):
    """A DataLoader whose state is "epoch e, first n batches done".

    Lightning stores it in every checkpoint; a run resumed from a mid-epoch checkpoint (a kill -9
    after `every_n_train_steps`) continues with the very next batch, as if never stopped.
    `batches_done` reads the trainer's count of processed batches in the current epoch.
    """

    def __init__(
        self, dataset: Dataset, sampler: IndexBatchSampler, batches_done: Callable[[], int], **kwargs: Any
    ) -> None:
        super().__init__(dataset, sampler=sampler, batch_size=None, **kwargs)
        self._batches_done = batches_done

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch, "batches_done": self._batches_done()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.resume_at(state["epoch"], state["batches_done"])
