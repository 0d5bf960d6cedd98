"""The LightningDataModule: whole splits in memory as uint8, batches by index, validation held out."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from trainlab.data.batches import IndexBatchSampler, ResumableLoader, TensorBatches
from trainlab.data.sources import Splits
from trainlab.data.split import stratified_folds, val_share
from trainlab.errors import fail


class InMemoryDataModule(L.LightningDataModule):
    """Train/val/test loaders over tensors; images stay uint8 until the module scales them on the device.

    Validation images come from the data's own validation split, else from the end of the official
    training set; `data.train_size` from the training images' start, so the validation set does not change
    when the training subset does. With `folds`, fold `fold` of the training images (the first
    `train_size`, and the data's own validation split) validates and the other folds train
    (`split.stratified_folds`). `class_names` name the labels 0…C−1 (for predictions); `kind` and `split`
    say what the data is and how its splits were made (both recorded with the run).
    """

    def __init__(
        self,
        splits: Splits,
        batch_size: int,
        val_size: float | None,
        train_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        on_device: bool = False,
        class_names: list[str] | None = None,
        kind: str = "built-in",
        folds: int | None = None,
        fold: int = 0,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        self.split = splits.split
        if folds:
            train_images, train_labels, val_images, val_labels = self._fold(
                splits, train_size, folds, fold, split_seed, class_names
            )
            train_size = None
            self.split += f"; {folds} folds (stratified, split_seed={split_seed}): fold {fold} validates"
        elif splits.val_images is not None:  # the data's own validation split
            train_images, train_labels = splits.train_images, splits.train_labels
            val_images, val_labels = splits.val_images, splits.val_labels
        else:
            n = len(splits.train_labels)
            val_size = val_share(val_size)
            n_val = round(val_size * n) if val_size < 1 else int(val_size)
            if not 0 < n_val < n:
                raise fail(
                    "data.val_size", val_size, f"a share or count of the {n} training images, not 0 or all"
                )
            train_images, train_labels = splits.train_images[: n - n_val], splits.train_labels[: n - n_val]
            val_images, val_labels = splits.train_images[n - n_val :], splits.train_labels[n - n_val :]
        n_train = len(train_labels) if train_size is None else min(train_size, len(train_labels))
        self.train = TensorBatches(train_images[:n_train], train_labels[:n_train])
        self.val = TensorBatches(val_images, val_labels)
        self.test = TensorBatches(splits.test_images, splits.test_labels)
        self.source = splits.source
        self.kind = kind
        self.num_classes = splits.num_classes
        self.class_names = class_names
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.on_device = on_device

    @staticmethod
    def _fold(
        splits: Splits,
        train_size: int | None,
        folds: int,
        fold: int,
        seed: int,
        class_names: list[str] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train images, labels, validation images, labels) of fold `fold`: the folds are dealt from the
        first `train_size` training images and the data's own validation split, if any
        (`stratified_folds`: fewer than `folds` images are left out, so that every fold has one size)."""
        images, labels = splits.train_images[:train_size], splits.train_labels[:train_size]
        if splits.val_images is not None:
            images, labels = torch.cat([images, splits.val_images]), torch.cat([labels, splits.val_labels])
        folded = stratified_folds(labels, folds, seed, class_names)
        trains, validates = (folded >= 0) & (folded != fold), folded == fold
        return images[trains], labels[trains], images[validates], labels[validates]

    def setup(self, stage: str) -> None:
        """`data.on_device`: move the splits to the accelerator once, so each batch is gathered there by
        index with no host-to-device copy per step (MNIST is 55 MB as uint8, CIFAR-10 184 MB)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if self.on_device and device is not None and device.type != "cpu":
            for data in (self.train, self.val, self.test):
                data.images, data.labels = data.images.to(device), data.labels.to(device)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def _sampler(self, data: TensorBatches, shuffle: bool) -> IndexBatchSampler:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return IndexBatchSampler(len(data), self.batch_size, shuffle, self.seed, rank, world)

    def _loader_options(self) -> dict[str, Any]:
        """Worker settings, and a generator of the loader's own: a DataLoader otherwise draws its seed
        from the global RNG whenever it starts iterating, so a resumed run's dropout masks would differ."""
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "generator": torch.Generator().manual_seed(self.seed),
        }

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Scale uint8 pixels to [0, 1] on the device (the report's x/255), after the cheap uint8 copy."""
        images, labels = batch
        return images.float().div_(255.0), labels

    def _batches_done(self) -> int:
        # Batches whose step has run in the current epoch, as Lightning counts them when it checkpoints.
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        sampler = self._sampler(self.train, shuffle=True)
        return ResumableLoader(self.train, sampler, self._batches_done, **self._loader_options())

    def _in_order(self, data: TensorBatches) -> DataLoader:
        sampler = self._sampler(data, shuffle=False)
        return DataLoader(data, sampler=sampler, batch_size=None, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        return self._in_order(self.val)

    def test_dataloader(self) -> DataLoader:
        return self._in_order(self.test)
