"""Per-member batches, for a population whose members differ in seed or fold: at every step member k gets
the batch its standalone run would take (its own data order, its own fold's images), stacked into
(K, B, …) images and (K, B) labels, so that each member stays exactly its own run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainlab.data.batches import IndexBatchSampler, ResumableLoader, TensorBatches
from trainlab.data.datamodule import InMemoryDataModule


class MemberBatches(Dataset):
    """`dataset[index]` for a (K, B) index tensor: member k's rows `index[k]` of its own split `splits[k]`."""

    def __init__(self, splits: Sequence[TensorBatches]) -> None:
        self.splits = list(splits)

    def __len__(self) -> int:
        return len(self.splits[0])

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [split[rows] for split, rows in zip(self.splits, index, strict=True)]
        return torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])


class MemberSampler(Sampler[torch.Tensor]):
    """The members' own samplers in step: each step a (K, B) tensor, row k from member k's sampler (its
    splits have one size, so each epoch has the same batches of the same sizes)."""

    def __init__(self, samplers: Sequence[IndexBatchSampler]) -> None:
        self.samplers = list(samplers)

    @property
    def epoch(self) -> int:
        return self.samplers[0].epoch

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        for sampler in self.samplers:
            sampler.resume_at(epoch, batches_done)

    def __len__(self) -> int:
        return len(self.samplers[0])

    def __iter__(self) -> Iterator[torch.Tensor]:
        for rows in zip(*self.samplers, strict=True):
            yield torch.stack(rows)


class MemberDataModule(L.LightningDataModule):
    """Member k trains on `modules[k]` (an InMemoryDataModule of its fold; members of one fold share one)
    in the order of `seeds[k]`; the test set is the first module's, the same for all."""

    def __init__(self, modules: Sequence[InMemoryDataModule], seeds: Sequence[int]) -> None:
        super().__init__()
        first = modules[0]
        self.modules, self.seeds = list(modules), list(seeds)
        self.train, self.val, self.test = first.train, first.val, first.test
        self.batch_size, self.num_classes, self.class_names = (
            first.batch_size,
            first.num_classes,
            first.class_names,
        )
        self.source, self.kind = first.source, first.kind
        self.split = (
            first.split
            + "; per member: its own data order"
            + (" and fold" if len({id(m) for m in modules}) > 1 else "")
        )
        self.image_shape = first.image_shape

    def setup(self, stage: str) -> None:
        for module in {id(m): m for m in self.modules}.values():  # data.on_device: each split once
            module.trainer = self.trainer
            module.setup(stage)

    def _sampler(self, splits: list[TensorBatches], shuffle: bool) -> MemberSampler:
        return MemberSampler(
            [
                IndexBatchSampler(len(s), self.batch_size, shuffle, seed)
                for s, seed in zip(splits, self.seeds, strict=True)
            ]
        )

    def train_dataloader(self) -> DataLoader:
        splits = [m.train for m in self.modules]
        first = self.modules[0]
        return ResumableLoader(
            MemberBatches(splits), self._sampler(splits, True), first._batches_done, **first._loader_options()
        )

    def val_dataloader(self) -> DataLoader:
        splits = [m.val for m in self.modules]
        return DataLoader(MemberBatches(splits), sampler=self._sampler(splits, False), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return self.modules[0].test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.modules[0].on_after_batch_transfer(batch, dataloader_idx)
