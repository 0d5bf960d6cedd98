"""Your own data: image folders (PNG and JPEG written with PIL), npz arrays and a DataModule of the tests'
own, trained through the CLI; their mistakes as one line, exit 2, no MLflow run."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, mlflow_runs, synthetic
from trainlab.config import validate
from trainlab.data import build_datamodule, describe_data
from trainlab.data.split import stratified_split
from trainlab.errors import UserError

CLASSES = ("cat", "dog", "fish")


def write_folder(root: Path, per_class: int = 12, **options) -> Path:
    """A small ImageFolder: PNG and JPEG, sides 12 and 16, every third image grayscale."""
    options = {"size": 16, "formats": ("png", "jpg"), "sizes": (16, 12), "grayscale_every": 3} | options
    return synthetic.write_image_folder(root, per_class, classes=CLASSES, **options)


def checkpoint(root: Path, name: str = "best.ckpt") -> dict:
    [path] = root.glob(f"outputs/*/*/checkpoints/{name}")
    return torch.load(path, weights_only=True)


def test_an_image_folder_of_png_and_jpeg_in_mixed_sizes_trains_through_the_cli(run_cli, tmp_path):
    folder = write_folder(tmp_path / "pets")
    run_cli(*TINY, "data=image_folder", f"data.root={folder}", "data.image_size=12", "model=cnn")
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.tags["data.kind"] == "image_folder"
    assert run.data.tags["data.split"] == (
        "class folders at the root; held out (stratified, split_seed=0): test_size=0.2, val_size=0.1"
    )
    assert run.data.params["data.image_size"] == "12"
    # The class names go with the run and into the checkpoint, so that a prediction can name its class.
    assert checkpoint(tmp_path)["hyper_parameters"]["class_names"] == list(CLASSES)
    artifact = Path(run.info.artifact_uri.removeprefix("file://")) / "class_names.json"
    assert json.loads(artifact.read_text()) == list(CLASSES)
    # Decoded once, into the cache under paths.data_dir.
    assert len(list((tmp_path / "data" / "image_cache").glob("pets-*.npz"))) == 1


def test_train_val_test_subfolders_are_used_as_given(compose, tmp_path):
    for subset, n in (("train", 10), ("val", 3), ("test", 4)):
        write_folder(tmp_path / "f" / subset, per_class=n, sizes=(), grayscale_every=0)
    cfg = compose("data=image_folder", f"data.root={tmp_path / 'f'}", f"paths.data_dir={tmp_path}")
    data = build_datamodule(cfg.data, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 9, 12)
    assert data.split == "folders train, val, test"
    assert data.image_shape == (3, 16, 16) and data.class_names == list(CLASSES)


def test_a_missing_val_folder_is_held_out_of_train_stratified(compose, tmp_path):
    for subset, n in (("train", 20), ("test", 4)):
        write_folder(tmp_path / "f" / subset, per_class=n, sizes=(), grayscale_every=0)
    cfg = compose("data=image_folder", f"data.root={tmp_path / 'f'}", f"paths.data_dir={tmp_path}")
    data = build_datamodule(cfg.data, seed=0)
    assert torch.bincount(data.val.labels).tolist() == [2, 2, 2]  # 10 % of each class's 20
    assert len(data.train) == 54 and len(data.test) == 12
    assert data.split.startswith("folders train, test; held out (stratified, split_seed=0): val_size=0.1")


def test_channels_and_image_size_set_the_shape(compose, tmp_path):
    folder = write_folder(tmp_path / "f")
    common = ["data=image_folder", f"data.root={folder}", f"paths.data_dir={tmp_path}"]
    gray = build_datamodule(compose(*common, "data.channels=1", "data.image_size=[8,10]").data, 0)
    assert gray.image_shape == (1, 8, 10) and gray.train.images.dtype == torch.uint8
    assert describe_data(compose(*common, "data.channels=1", "data.image_size=[8,10]").data).image_shape == (
        1,
        8,
        10,
    )


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(compose, tmp_path, caplog):
    folder = write_folder(tmp_path / "f", sizes=())
    cfg = compose("data=image_folder", f"data.root={folder}", f"paths.data_dir={tmp_path}")
    caplog.set_level(logging.INFO)
    first = build_datamodule(cfg.data, 0)
    assert "decoded 36 images" in caplog.text
    caplog.clear()
    again = build_datamodule(cfg.data, 0)
    assert "36 images from the cache" in caplog.text
    assert torch.equal(first.train.images, again.train.images)
    # A changed image (new bytes, new mtime) is decoded again; the cache file is replaced, not added to.
    changed = folder / "dog" / "1.jpg"
    Image.new("RGB", (16, 16), "white").save(changed)
    os.utime(changed, ns=(1, 1))
    caplog.clear()
    build_datamodule(cfg.data, 0)
    assert "decoded 36 images" in caplog.text
    assert [p.suffix for p in (tmp_path / "image_cache").iterdir()] == [".npz"]  # no .partial left


def test_stratified_split_keeps_each_class_share_and_is_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    mask = stratified_split(labels, 0.1, seed=3)
    assert torch.bincount(labels[mask]).tolist() == [5, 3, 2]
    assert torch.equal(mask, stratified_split(labels, 0.1, seed=3))
    assert not torch.equal(mask, stratified_split(labels, 0.1, seed=4))
    assert int(stratified_split(labels, 7, seed=0).sum()) == 7  # a count, largest remainders first


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def npz_of(layout: str, n: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays as courses hand them out: 4 classes of 12×12 images in `layout`."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n), ("test", n // 2)):
        labels = np.sort(rng.integers(0, 4, count))  # sorted by class, as course files often are
        images = rng.random((count, 12, 12, 3)).astype(np.float32)
        images[np.arange(count), labels * 3] = 1.0  # a bright row per class
        if layout == "NCHW":
            images = images.transpose(0, 3, 1, 2)
        elif layout == "NHW":
            images = images[..., 0]
        elif layout == "uint8 NHWC":
            images = (images * 255).astype(np.uint8)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images, labels
    return arrays


@pytest.mark.parametrize(
    ("layout", "shape"),
    [("NHWC", (3, 12, 12)), ("NCHW", (3, 12, 12)), ("NHW", (1, 12, 12)), ("uint8 NHWC", (3, 12, 12))],
)
def test_npz_arrays_in_any_layout_load_as_uint8_nchw(compose, tmp_path, layout, shape):
    path = write_npz(tmp_path / "course.npz", **npz_of(layout))
    data = build_datamodule(compose("data=arrays", f"data.path={path}").data, 0)
    assert data.image_shape == shape and data.train.images.dtype == torch.uint8
    assert data.class_names == ["0", "1", "2", "3"]
    assert len(data.train) + len(data.val) == 60 and len(data.val) == 6
    assert torch.bincount(data.val.labels, minlength=4).min() >= 1  # held out per class, not the last one


def test_npz_arrays_train_through_the_cli_with_their_class_names(run_cli, tmp_path):
    names = np.array(["circle", "square", "star", "cross"])
    path = write_npz(tmp_path / "course.npz", **npz_of("NHWC"), class_names=names)
    run_cli(*TINY, "data=arrays", f"data.path={path}", "data.batch_size=16")
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["data.kind"] == "arrays"
    assert checkpoint(tmp_path)["hyper_parameters"]["class_names"] == names.tolist()


def test_built_in_data_sets_name_their_classes(compose, mnist_root):
    assert describe_data(compose("data=mnist").data).class_names == tuple("0123456789")
    assert describe_data(compose("data=fashion_mnist").data).class_names[-1] == "Ankle boot"
    assert describe_data(compose("data=cifar10").data).class_names[:2] == ("airplane", "automobile")


def _empty(root: Path) -> list[str]:
    (root / "empty").mkdir()
    return [f"data.root={root / 'empty'}"]


def _empty_class(root: Path) -> list[str]:
    (write_folder(root / "f") / "dog" / "notes.txt").write_text("no image here")
    for image in (root / "f" / "dog").glob("*.*g"):
        image.unlink()
    return [f"data.root={root / 'f'}"]


def _corrupt(root: Path) -> list[str]:
    folder = write_folder(root / "f", sizes=())
    (folder / "cat" / "2.png").write_bytes((folder / "cat" / "2.png").read_bytes()[:60])
    return [f"data.root={folder}"]


def _sizes(root: Path) -> list[str]:
    return [f"data.root={write_folder(root / 'f')}"]


FOLDER_MISTAKES = {
    "empty folder": (_empty, r"data\.root=.*/empty: .* holds no class folders"),
    "class without images": (_empty_class, r"class folder .*/f/dog holds no images PIL can read"),
    "corrupt image": (_corrupt, r"data\.root: .*/f/cat/2\.png is not an image PIL can read"),
    "sizes differ": (
        _sizes,
        r"data\.image_size=None: must be an integer or \[height, width\]: the images differ",
    ),
    "no root": (lambda root: [], r"data\.root=None: must be the folder that holds one folder of images"),
    "root not a path": (lambda root: ["data.root=3"], r"data\.root=3: must be the folder that holds"),
    # Before: the images were decoded and cached, then a traceback (the checks below were the loader's).
    "no test/ and no test_size": (
        lambda root: [*_sizes(root), "data.test_size=null"],
        r"^data\.test_size=None: must be a fraction in \(0, 1\) or an integer count >= 1 \(.*/f has no test/ "
        r"folder: the test images are held out of the others\)$",
    ),
    "test_size of every image": (
        lambda root: [*_sizes(root), "data.test_size=36"],
        r"^data\.test_size=36: must be a share or count of the 36 images, not 0 or all$",
    ),
    "no validation image left": (
        lambda root: [*_sizes(root), "data.test_size=0.9"],
        r"^data\.val_size=0\.1: must be a share or count of the 4 images, not 0 or all$",
    ),
    "split_seed null": (
        lambda root: [*_sizes(root), "data.split_seed=null"],
        r"^data\.split_seed=None: must be an integer from 0 to 4294967295 \(the held-out images are the "
        r"same in every run\)$",
    ),
}


@pytest.mark.parametrize("mistake", list(FOLDER_MISTAKES))
def test_image_folder_mistakes_name_the_key_or_file(compose, tmp_path, mistake):
    make, message = FOLDER_MISTAKES[mistake]
    cfg = compose("data=image_folder", f"paths.data_dir={tmp_path}", *make(tmp_path))
    with pytest.raises(UserError, match=message):
        validate(cfg)
        build_datamodule(cfg.data, 0)


def _npz(**changes) -> callable:
    def make(root: Path) -> list[str]:
        arrays = npz_of("NHWC") | changes
        return [
            f"data.path={write_npz(root / 'bad.npz', **{k: v for k, v in arrays.items() if v is not None})}"
        ]

    return make


NPZ_MISTAKES = {
    "negative label": (_npz(y_test=np.full(30, -1)), r"label -1 is out of range; labels must be 0…3"),
    "label past class_names": (
        _npz(class_names=np.array(["a", "b", "c"])),
        r"label 3 is out of range; labels must be 0…2 \(class_names has 3 names\)",
    ),
    "flat images": (
        _npz(x_train=np.zeros((60, 144), np.uint8)),
        r"x_train has shape \(60, 144\); it must be",
    ),
    "labels of rank 2": (
        _npz(y_train=np.zeros((60, 1), int)),
        r"y_train has shape \(60, 1\) and dtype int64",
    ),
    "missing array": (_npz(y_test=None), r"bad\.npz: lacks y_test"),
    "no file": (
        lambda root: [f"data.path={root / 'none.npz'}"],
        r"data\.path='.*none\.npz': must be an existing",
    ),
    "path not a path": (lambda root: ["data.path=3"], r"^data\.path=3: must be an existing \.npz file"),
    "val_size of every image": (
        lambda root: [*_npz()(root), "data.val_size=60"],
        r"^data\.val_size=60: must be a share or count of the 60 images, not 0 or all$",
    ),
    "split_seed null": (
        lambda root: [*_npz()(root), "data.split_seed=null"],
        r"^data\.split_seed=None: must be",
    ),
}


@pytest.mark.parametrize("mistake", list(NPZ_MISTAKES))
def test_npz_mistakes_name_the_file_and_array(compose, tmp_path, mistake):
    make, message = NPZ_MISTAKES[mistake]
    cfg = compose("data=arrays", *make(tmp_path))
    with pytest.raises(UserError, match=message):
        validate(cfg)
        build_datamodule(cfg.data, 0)


def test_a_folder_without_test_images_or_test_size_stops_before_any_image_is_decoded(run_cli, tmp_path):
    folder = write_folder(tmp_path / "f")
    result = run_cli(*TINY, "data=image_folder", f"data.root={folder}", "data.test_size=null", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data.test_size=None: must be a fraction in (0, 1) or an integer count >= 1 ({folder} has no "
        "test/ folder: the test images are held out of the others)"
    ]
    assert mlflow_runs(tmp_path) == [] and not (tmp_path / "data").exists()


def test_a_datamodule_whose_arguments_give_no_image_shape_is_one_line(compose):
    """Before: int('abc') raised inside trainlab with a traceback."""
    cfg = compose("data=custom", "data._target_=user_data.modules.Stripes", "+data.size=abc")
    with pytest.raises(UserError) as caught:
        validate(cfg)
    assert str(caught.value) == (
        "data._target_='user_data.modules.Stripes': must be a LightningDataModule of (C, H, W) images, "
        "not (1, 'abc', 'abc')"
    )


@pytest.mark.parametrize("kind", ["image_folder", "arrays"])
def test_a_data_mistake_is_one_line_exit_2_and_no_mlflow_run(run_cli, tmp_path, kind):
    make = _corrupt if kind == "image_folder" else _npz(y_test=np.full(30, -1))
    [key] = make(tmp_path)
    result = run_cli(*TINY, f"data={kind}", key, check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.") and ("2.png is not an image" in last or "label -1" in last)
    assert mlflow_runs(tmp_path) == []
