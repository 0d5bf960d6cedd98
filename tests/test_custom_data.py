"""`data=custom`: a LightningDataModule of the tests' own (tests/user_data/, on PYTHONPATH as a user's code
is) trains, sweeps, resumes and trains in a population like the built-in data; its mistakes are one line."""

from __future__ import annotations

import pytest
import torch
from user_callbacks.inputs import load_steps

from conftest import REPO, TINY, mlflow_runs
from trainlab.config import validate
from trainlab.data import build_datamodule, describe_data
from trainlab.errors import ConfigError
from trainlab.module import Classifier

USER_CODE = {"PYTHONPATH": str(REPO / "tests")}
STRIPES = ["data=custom", "data._target_=user_data.modules.Stripes", "+data.size=8", "model=cnn"]
# diagnostics=on of model=cnn's 4 layers (2 conv, 2 linear): each one's gradient norm and update ratio, and
# the activation statistics of the 3 followed by a ReLU.
DIAGNOSED = {f"{m}/layer{k}" for m in ("grad_norm", "update_ratio") for k in range(1, 5)} | {
    f"{m}/layer{k}" for m in ("act_mean", "act_std", "saturation") for k in range(1, 4)
}


def test_a_users_datamodule_trains_and_sweeps_through_the_cli_with_platform_features(run_cli, tmp_path):
    """Init, penalty, diagnostics (per-layer metrics) and augmentation (what the network is shown, recorded
    by tests/user_callbacks/inputs.py) act on a user's batches as on trainlab's own."""
    extras = ["init=xavier", "regularizer=l2", "diagnostics=on", "augment=flip_crop"]
    watched = "callbacks.extra=[{_target_:user_callbacks.inputs.NetworkInputs,filename:inputs.pt}]"
    run_cli("-m", *TINY, *STRIPES, *extras, watched, "optimizer.lr=0.05,0.1", env=USER_CODE)
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["data.kind"] == "custom"
        assert run.data.tags["data.source"] == "user_data.modules.Stripes"
        assert run.data.params["data.size"] == "8"
        assert run.data.metrics["train/penalty"] > 0 and "test/acc" in run.data.metrics
        assert {m for m in run.data.metrics if "/layer" in m} == DIAGNOSED
    assert len(list(tmp_path.glob("multirun/*/*/diagnostics/activations.json"))) == 2
    shown = [load_steps(path) for path in tmp_path.glob("multirun/*/*/inputs.pt")]
    assert len(shown) == 2
    for steps in shown:  # training batches shifted and flipped, nearly every image; validation ones as given
        assert len(steps["train"]) == 4 and len(steps["val"]) == 4
        given, seen = map(torch.cat, zip(*steps["train"].values(), strict=True))
        assert (given != seen).flatten(1).any(1).float().mean() > 0.9
        assert all(torch.equal(seen, given) for given, seen in steps["val"].values())
    [best, *_] = sorted(tmp_path.glob("multirun/*/*/checkpoints/best.ckpt"))
    restored = Classifier.load_from_checkpoint(best, weights_only=True)
    assert restored.hparams.class_names == ["rows", "columns"]
    assert restored(torch.rand(2, 1, 8, 8)).shape == (2, 2)


def test_a_run_on_a_users_datamodule_resumes_from_its_checkpoint(run_cli, tmp_path):
    run_cli(*TINY, *STRIPES, env=USER_CODE)
    [last] = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    run_cli(*STRIPES, *TINY[1:], "trainer.max_epochs=2", f"ckpt_path={last}", env=USER_CODE)
    assert torch.load(last, weights_only=True)["global_step"] == 8  # 2 epochs of 64 images in batches of 16
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"


def test_a_population_trains_on_a_users_datamodule(run_cli, tmp_path):
    run_cli("-m", *TINY, *STRIPES, "optimizer.lr=0.05,0.1", "hydra.sweeper.population=2", env=USER_CODE)
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 2
    assert all(r.info.status == "FINISHED" and "test/acc" in r.data.metrics for r in runs)


def test_the_image_shape_comes_from_the_first_batch_when_the_module_does_not_say_it(compose):
    cfg = compose("data=custom", "data._target_=user_data.modules.ShapeFromFirstBatch", "+data.size=6")
    described = describe_data(cfg.data)
    assert (described.image_shape, described.num_classes) == ((1, 6, 6), 2)
    assert build_datamodule(cfg.data, 0).class_names is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data._target_=no_such_pkg.Data"],
            "data._target_='no_such_pkg.Data': must be an importable LightningDataModule class "
            "(No module named 'no_such_pkg')",
        ),
        (
            ["data._target_=user_data.modules.NOT_A_DATAMODULE"],
            "data._target_='user_data.modules.NOT_A_DATAMODULE': must be a subclass of "
            "lightning.LightningDataModule",
        ),
        (
            ["data._target_=user_data.modules.DictBatches"],
            "data._target_='user_data.modules.DictBatches': must be a LightningDataModule whose batches are "
            "(images, labels) pairs, or with an attribute image_shape (C, H, W)",
        ),
        (
            ["data._target_=user_data.modules.Stripes", "+data.width=3"],
            "data.width=3: must be unset: user_data.modules.Stripes takes only batch_size, size",
        ),
        (
            ["data._target_=user_data.modules.Stripes", "callbacks.curves.every_n_steps=5"],
            "callbacks.curves.every_n_steps=5: must be null with data=custom (the curves evaluate "
            "trainlab's in-memory splits)",
        ),
        ([], "data._target_=None: must be the dotted path of a LightningDataModule class, e.g. my_pkg.Data"),
    ],
)
def test_custom_data_mistakes_are_one_line(compose, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose("data=custom", *overrides))
    assert str(error.value) == message
