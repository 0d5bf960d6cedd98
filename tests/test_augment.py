"""Augmentation on the device: what each preset does to a batch, drawn from (seed, epoch, step) alone; what
the network is shown in a run, in a second run, in a population and after a resume (tests/user_callbacks/
inputs.py records it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from user_callbacks.inputs import NetworkInputs, Steps, load_steps

from conftest import REPO, TINY, cli_env, mlflow_runs, write_mnist
from trainlab.augment import Augmentation, build_augmentation
from trainlab.config import validate
from trainlab.data import build_datamodule, build_member_datamodule
from trainlab.errors import ConfigError
from trainlab.module import Classifier
from trainlab.population.module import PopulationClassifier
from trainlab.population.run import own_batches
from trainlab.run.callbacks import build_callbacks, resume_callbacks

USER_CODE = {"PYTHONPATH": str(REPO / "tests")}


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


AUGMENTED = [*TINY, "model=simple_cnn", "data.batch_size=20", "augment=flip_crop", "augment.erase=0.5"]
# Two epochs of 9 batches (180 of the 200 training images; 20 held out for validation).
WATCHED = [*AUGMENTED, "trainer.max_epochs=2"]
STRIPES = ["data=custom", "data._target_=user_data.modules.Stripes", "+data.size=8", "model=cnn"]


def resolved(cfg: DictConfig) -> dict:
    """A composed run config as plain values (its output folder exists only inside a Hydra job)."""
    cfg.paths.output_dir = "unused"
    return OmegaConf.to_container(cfg, resolve=True)


def watch(
    module: L.LightningModule, datamodule, cfg: DictConfig, callbacks: list, run_dir: Path, ckpt_path=None
) -> Steps:
    """Fit `module` as a run of `cfg` does; what its forward was shown (tests/user_callbacks/inputs.py)."""
    inputs = NetworkInputs()
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=False,
        callbacks=[*callbacks, inputs],
        default_root_dir=run_dir,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return inputs.steps


def run_of(config: dict) -> tuple[Classifier, object]:
    """The module and data of a run of the resolved `config`, built as trainlab.run.training builds them."""
    cfg = OmegaConf.create(config)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data, cfg.seed)
    module = Classifier(config, datamodule.image_shape, datamodule.num_classes, datamodule.class_names)
    return module, datamodule


def watch_run(cfg: DictConfig, run_dir: Path, ckpt_path: Path | None = None) -> Steps:
    """What the network of a run of `cfg` is shown, trained in-process with the callbacks trainlab gives it
    (`run_dir/last.ckpt` at each epoch's end), resumed from `ckpt_path` if given."""
    module, datamodule = run_of(resolved(cfg))
    return watch(module, datamodule, cfg, build_callbacks(cfg, run_dir), run_dir, ckpt_path)


def watch_population(cfgs: list[DictConfig], run_dir: Path) -> Steps:
    """What the stacked network of a population of `cfgs` is shown, built as trainlab.population.run builds
    it: per-member (K, B, …) batches where the members differ in seed, else one batch for all."""
    first = cfgs[0]
    if own_batches(cfgs):
        datamodule = build_member_datamodule([c.data for c in cfgs], [c.seed for c in cfgs])
    else:
        datamodule = build_datamodule(first.data, first.seed)
    configs = [resolved(cfg) for cfg in cfgs]
    module = PopulationClassifier(configs, datamodule.image_shape, datamodule.num_classes)
    return watch(module, datamodule, first, resume_callbacks(first, run_dir), run_dir)


def altered(given: torch.Tensor, seen: torch.Tensor) -> float:
    """The share of the images (N, C, H, W) that the network was shown altered."""
    return (given != seen).flatten(1).any(1).float().mean().item()


def per_image(steps: Steps, epoch: int) -> dict[bytes, torch.Tensor]:
    """{an image as the data gave it: what the network was shown of it} over the training steps of `epoch`."""
    return {
        image.numpy().tobytes(): shown
        for (at, _), (given, seen) in steps["train"].items()
        if at == epoch
        for image, shown in zip(given, seen, strict=True)
    }


def test_the_network_trains_on_augmented_batches_and_validates_on_the_images_as_they_are(
    compose, mnist_root, tmp_path
):
    """Each training batch reaches the network as `Augmentation` draws it for (seed, epoch, batch), nearly
    every image altered; each validation batch reaches it unchanged."""
    cfg = compose(*WATCHED, f"paths.root_dir={tmp_path}", "seed=5")
    steps = watch_run(cfg, tmp_path / "run")
    augmentation = build_augmentation(cfg.augment)
    assert sorted(steps["train"]) == [(epoch, batch) for epoch in (0, 1) for batch in range(9)]
    for (epoch, batch), (given, seen) in steps["train"].items():
        assert altered(given, seen) > 0.9
        assert torch.equal(seen, augmentation(given, 5, epoch, batch))
    assert len(steps["val"]) == 2 and all(torch.equal(seen, given) for given, seen in steps["val"].values())


def test_two_runs_of_one_seed_show_the_network_the_same_augmented_batches_and_new_ones_each_epoch(
    compose, mnist_root, tmp_path
):
    """Seed 0 in both runs: the same batches at the same (epoch, batch); the second epoch's batches drawn
    anew (not as the first epoch's draws at that batch would alter them), and so each image shown anew."""
    cfg = compose(*WATCHED, f"paths.root_dir={tmp_path}")
    augmentation = build_augmentation(cfg.augment)
    first, second = (watch_run(cfg.copy(), tmp_path / name) for name in "ab")
    assert first["train"].keys() == second["train"].keys()
    for (epoch, batch), (given, seen) in first["train"].items():
        assert altered(given, seen) > 0.9
        assert torch.equal(given, second["train"][epoch, batch][0])
        assert torch.equal(seen, second["train"][epoch, batch][1])
        if epoch == 1:
            assert not torch.equal(seen, augmentation(given, 0, 0, batch))
    shown = [per_image(first, epoch) for epoch in (0, 1)]
    assert len(shown[0]) == 180 and shown[0].keys() == shown[1].keys()
    again = [torch.equal(shown[0][image], shown[1][image]) for image in shown[0]]
    assert sum(again) < 0.05 * len(again)


def test_a_run_resumed_after_its_first_epoch_shows_the_network_the_batches_of_an_uninterrupted_one(
    compose, mnist_root, tmp_path
):
    run = [*WATCHED, f"paths.root_dir={tmp_path}"]
    straight = watch_run(compose(*run), tmp_path / "straight")
    watch_run(compose(*run, "trainer.max_epochs=1"), tmp_path / "stopped")
    resumed = watch_run(compose(*run), tmp_path / "resumed", ckpt_path=tmp_path / "stopped" / "last.ckpt")
    assert sorted(resumed["train"]) == [(1, batch) for batch in range(9)]
    for key, (given, seen) in resumed["train"].items():
        assert altered(given, seen) > 0.9
        assert torch.equal(given, straight["train"][key][0]) and torch.equal(seen, straight["train"][key][1])


@pytest.mark.parametrize(
    "members",
    [["optimizer.lr=0.01", "optimizer.lr=0.1"], ["seed=1", "seed=2"]],
    ids=["one_batch_for_all", "a_batch_each"],
)
def test_each_member_of_a_population_is_shown_the_augmented_batches_of_its_standalone_run(
    compose, mnist_root, tmp_path, members
):
    """Members of one seed share a batch, members of different seeds each have their own
    (trainlab.population.run.own_batches): either way member k is shown its standalone run's batches."""
    cfgs = [compose(*WATCHED, f"paths.root_dir={tmp_path}", member) for member in members]
    population = watch_population(cfgs, tmp_path / "population")
    shown = [watch_run(cfg, tmp_path / f"member{k}") for k, cfg in enumerate(cfgs)]
    assert population["train"].keys() == shown[0]["train"].keys() == shown[1]["train"].keys()
    for key, (_, seen) in population["train"].items():
        for k, alone in enumerate(shown):
            given, expected = alone["train"][key]
            assert altered(given, expected) > 0.9
            assert torch.equal(seen[k] if seen.dim() == 5 else seen, expected)
    # The members' batches: one and the same, or each its own.
    differ = [
        not torch.equal(shown[0]["train"][key][1], shown[1]["train"][key][1]) for key in shown[0]["train"]
    ]
    assert all(differ) if members[0].startswith("seed") else not any(differ)


def test_members_sharing_a_users_datamodules_batches_are_shown_them_augmented_from_the_first_members_seed(
    compose, tmp_path
):
    """A custom DataModule's batches are shared whatever the members' seeds, and so is their augmentation:
    drawn from the first member's seed, as documented (docs/data.md#augmentation)."""
    run = [*TINY, *STRIPES, "augment=flip_crop", "trainer.max_epochs=2", f"paths.root_dir={tmp_path}"]
    cfgs = [compose(*run, f"seed={seed}") for seed in (3, 4)]
    steps = watch_population(cfgs, tmp_path / "population")
    augmentation = build_augmentation(cfgs[0].augment)
    assert len(steps["train"]) == 8  # 2 epochs of 64 images in batches of 16
    for (epoch, batch), (given, seen) in steps["train"].items():
        assert given.dim() == 4 and altered(given, seen) > 0.9
        assert torch.equal(seen, augmentation(given, 3, epoch, batch))


def test_a_resumed_run_augments_exactly_as_an_uninterrupted_one(run_cli, tmp_path):
    """Stopped after 13 of 18 steps (4 into the second epoch), then resumed: the network is shown the same
    augmented batches in the rest of the epoch, and the weights at the end are the same."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for root in (straight, stopped):
        write_mnist(root / "data", n_train=200, n_test=40)
    run = [*AUGMENTED, "trainer.max_epochs=2", "callbacks.checkpoint.every_n_train_steps=13"]
    watched = "callbacks.extra=[{_target_:user_callbacks.inputs.NetworkInputs,filename:inputs.pt}]"
    run_cli(*run, watched, root=straight, env=USER_CODE)
    run_cli(*run, "trainer.max_steps=13", root=stopped)
    [last] = stopped.glob("outputs/*/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 13
    run_cli(*run, watched, f"ckpt_path={last}", root=stopped, env=USER_CODE)
    expected, resumed = final_weights(straight), final_weights(stopped)
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    [run] = mlflow_runs(stopped)
    assert run.info.status == "FINISHED" and run.data.params["augment.erase"] == "0.5"
    [uninterrupted] = (load_steps(p)["train"] for p in straight.glob("outputs/*/*/inputs.pt"))
    [after_resume] = (load_steps(p)["train"] for p in stopped.glob("outputs/*/*/inputs.pt"))
    assert sorted(after_resume) == [(1, batch) for batch in range(4, 9)]
    for key, (given, seen) in after_resume.items():
        assert altered(given, seen) > 0.9
        assert torch.equal(given, uninterrupted[key][0]) and torch.equal(seen, uninterrupted[key][1])


def test_each_member_of_a_population_job_ends_as_its_standalone_run_with_augmentation_not_without(
    compose, run_cli, tmp_path
):
    """Two members trained together through the CLI (what they are shown: the in-process tests above; a
    population job takes no `callbacks.extra`): each one's weights are those of its own config trained
    alone (allclose, rtol 1e-4), and not those of that config with `augment=none`."""
    write_mnist(tmp_path / "data", n_train=100, n_test=20)
    run_cli("-m", *AUGMENTED, "optimizer.lr=0.01,0.1", "hydra.sweeper.population=2")
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["augment.name"] for r in runs} == {"flip_crop"}
    members = sorted(tmp_path.glob("multirun/*/*/member_*/checkpoints/last.ckpt"))
    assert len(members) == 2
    for path in members:
        member = torch.load(path, weights_only=True)
        config = member["hyper_parameters"]["config"]
        for augment, same in ((config["augment"], True), ({"name": "none"}, False)):
            module, datamodule = run_of({**config, "augment": augment})
            watch(module, datamodule, OmegaConf.create(config), [], path.parent / augment["name"])
            alone = module.state_dict()
            close = [torch.allclose(member["state_dict"][k], alone[k], rtol=1e-4, atol=1e-6) for k in alone]
            assert all(close) if same else not all(close)


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
