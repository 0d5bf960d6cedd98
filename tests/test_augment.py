"""Augmentation on the device: what each preset does to a batch, drawn from (seed, epoch, step) alone, and a
resumed run that augments exactly as an uninterrupted one."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, TINY, cli_env, mlflow_runs, write_mnist
from trainlab.augment import Augmentation
from trainlab.config import validate
from trainlab.errors import ConfigError


def one_image_at_a_time(images: torch.Tensor, padding: int, dy, dx, flip) -> torch.Tensor:
    """The textbook crop-and-flip, image by image: pad, slice the shifted window, flip it."""
    h, w = images.shape[2:]
    out = []
    for image, y, x, f in zip(images, dy, dx, flip, strict=True):
        window = F.pad(image, (padding,) * 4)[:, y : y + h, x : x + w]
        out.append(window.flip(-1) if f else window)
    return torch.stack(out)


def test_crop_and_flip_of_the_batch_equal_the_per_image_reference():
    images = torch.rand(64, 3, 10, 12)
    padding = 3
    aug = Augmentation(padding=padding, flip=0.5)
    dy, dx = torch.randint(0, 2 * padding + 1, (64, 1)), torch.randint(0, 2 * padding + 1, (64, 1))
    flip = torch.rand(64, 1) < 0.5
    batched = aug._shift_and_flip(images, dy, dx, flip)
    reference = one_image_at_a_time(images, padding, dy.flatten(), dx.flatten(), flip.flatten())
    assert torch.equal(batched, reference)


def test_draws_depend_on_seed_epoch_and_step_only():
    images = torch.rand(32, 3, 16, 16)
    aug = Augmentation(padding=4, flip=0.5, erase=0.5)
    first = aug(images, seed=1, epoch=2, step=3)
    assert torch.equal(first, aug(images.clone(), seed=1, epoch=2, step=3))
    for other in ((2, 2, 3), (1, 3, 3), (1, 2, 4)):
        assert not torch.equal(first, aug(images, *other))
    assert torch.equal(Augmentation()(images, 1, 2, 3), images)  # augment=none: the batch as it is


def test_flip_alone_mirrors_about_half_the_images_and_keeps_their_pixels():
    images = torch.rand(400, 1, 6, 6)
    out = Augmentation(flip=0.5)(images, 0, 0, 0)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert bool((flipped ^ kept).all()) and 150 < int(flipped.sum()) < 250


def test_erase_blanks_a_square_of_erase_size_clipped_at_the_border():
    images = torch.ones(300, 3, 20, 20)
    out = Augmentation(erase=1.0, erase_size=0.5)(images, 0, 0, 0)
    blanked = (out == 0).all(1)  # every channel of a blanked pixel
    counts = blanked.flatten(1).sum(1)
    assert int(counts.max()) == 100 and int(counts.min()) >= 25  # 10×10, at least its quarter at a corner
    assert bool(((out == 0) | (out == 1)).all())
    rows, cols = blanked.any(2), blanked.any(1)  # a rectangle: its rows and columns form one run each
    for row_run, col_run in zip(rows, cols, strict=True):
        for run in (row_run, col_run):
            index = run.nonzero().flatten()
            assert len(index) == int(index[-1] - index[0]) + 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.flip=1.5", "augment.flip=1.5: must be a probability in [0, 1]"),
        ("augment.padding=-1", "augment.padding=-1: must be an integer >= 0 (pixels)"),
        ("augment.erase_size=0", "augment.erase_size=0: must be a fraction of the image side in (0, 1]"),
        (
            "+augment.scale=2",
            "augment.scale=2: must be unset: none takes only erase, erase_size, flip, padding",
        ),
        ("augment=rotate", None),
    ],
)
def test_bad_augment_values_are_one_line(compose, override, message):
    if message is None:  # an unknown preset: Hydra itself names the options
        from hydra.errors import MissingConfigException

        with pytest.raises(MissingConfigException, match="augment"):
            compose(override)
        return
    with pytest.raises(ConfigError) as error:
        validate(compose(override))
    assert str(error.value) == message


def final_weights(root) -> dict[str, torch.Tensor]:
    [path] = root.glob("outputs/*/*/checkpoints/last.ckpt")
    return torch.load(path, weights_only=True)["state_dict"]


AUGMENTED = [*TINY, "augment=flip_crop", "augment.erase=0.5", "model=simple_cnn", "data.batch_size=20"]


def test_a_resumed_run_augments_exactly_as_an_uninterrupted_one(run_cli, tmp_path):
    """Stopped after 13 of 18 steps (4 into the second epoch), then resumed: the same weights at the end.
    (The draws' dependence on the step, which makes this fail if the step were not restored, is
    `test_draws_depend_on_seed_epoch_and_step_only`.)"""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for root in (straight, stopped):
        write_mnist(root / "data", n_train=200, n_test=40)
    run = [*AUGMENTED, "trainer.max_epochs=2", "callbacks.checkpoint.every_n_train_steps=13"]
    run_cli(*run, root=straight)
    run_cli(*run, "trainer.max_steps=13", root=stopped)
    [last] = stopped.glob("outputs/*/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 13
    run_cli(*run, f"ckpt_path={last}", root=stopped)
    expected, resumed = final_weights(straight), final_weights(stopped)
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    [run] = mlflow_runs(stopped)
    assert run.info.status == "FINISHED" and run.data.params["augment.erase"] == "0.5"


def test_a_population_trains_its_members_on_one_augmented_batch(run_cli, tmp_path):
    write_mnist(tmp_path / "data", n_train=100, n_test=20)
    run_cli("-m", *AUGMENTED, "optimizer.lr=0.01,0.1", "hydra.sweeper.population=2")
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["augment.name"] for r in runs} == {"flip_crop"}


def test_report_draws_a_grid_of_augmented_samples(mnist_root, tmp_path):
    report = [sys.executable, str(REPO / "src" / "report.py"), "augmented", "augment=crop"]
    overrides = [f"paths.root_dir={tmp_path}", f"data.root={mnist_root}", "data.download=false"]
    result = subprocess.run([*report, *overrides], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    png = tmp_path / "outputs" / "reports" / "augmented_mnist_crop.png"
    assert result.stdout.strip() == f"augmented samples: {png}" and png.stat().st_size > 10_000
    bad = subprocess.run([*report, "augment.padding=-2"], capture_output=True, text=True, env=cli_env())
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "error: augment.padding=-2: must be an integer >= 0 (pixels)"
    )
