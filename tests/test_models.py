"""Every valid model × norm × init × optimizer × regularizer builds and takes a training step; the
configurable CNN; a user's own module through the CLI."""

from __future__ import annotations

import itertools

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TINY, mlflow_runs
from trainlab.config import validate
from trainlab.errors import ConfigError
from trainlab.models import MODELS
from trainlab.module import Classifier

NORMS = ["none", "batch", "layer", "instance"]
INITS = ["default", "normal", "xavier", "he"]
OPTIMIZERS = ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"]
REGULARIZERS = ["none", "l1", "l2", "elastic_net"]
# Every pair of init, optimizer and regularizer, in 24 triples instead of all 96 (AlexNet takes ~0.4 s each).
OTHERS = [
    (init, optimizer, REGULARIZERS[(i + j) % len(REGULARIZERS)])
    for i, init in enumerate(INITS)
    for j, optimizer in enumerate(OPTIMIZERS)
]
SHAPES = {
    "mlp": (1, 28, 28),
    "simple_cnn": (1, 28, 28),
    "cifar_cnn": (3, 32, 32),
    "alexnet": (3, 32, 32),
    "cnn": (1, 28, 28),
}


def group(name: str, option: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / name / f"{option}.yaml"))


def classifier_config(
    model: str, norm: str = "none", init: str = "he", optimizer: str = "sgd", regularizer: str = "none"
) -> dict:
    """The five groups a Classifier is built from, as the CLI would compose them."""
    choices = {"model": model, "norm": norm, "init": init, "optimizer": optimizer, "regularizer": regularizer}
    return {name: group(name, option) for name, option in choices.items()}


@pytest.mark.parametrize(("model", "norm"), list(itertools.product(MODELS, NORMS)))
def test_every_combination_builds_and_takes_a_step(compose, model, norm):
    if norm not in MODELS[model].norms:
        with pytest.raises(ConfigError, match=f"norm={norm} does not fit model={model}"):
            validate(compose(f"model={model}", f"norm={norm}"))
        return
    images = torch.rand(4, *SHAPES[model])
    labels = torch.tensor([0, 1, 2, 3])
    for init, optimizer, regularizer in OTHERS:
        module = Classifier(classifier_config(model, norm, init, optimizer, regularizer), SHAPES[model], 10)
        opt = module.configure_optimizers()
        before = [p.detach().clone() for p in module.parameters()]
        loss = module.training_step((images, labels), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss), (init, optimizer, regularizer)
        changed = any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))
        assert changed, (init, optimizer, regularizer)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_any_model_runs_on_any_data_shape(model, shape):
    logits = Classifier(classifier_config(model, norm="batch"), shape, 10)(torch.rand(2, *shape))
    assert logits.shape == (2, 10)


def test_simple_cnn_matches_the_reports_shapes():
    net = Classifier(classifier_config("simple_cnn", "none", "normal", "adam"), (1, 28, 28), 10).model
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert (linears[0].in_features, linears[0].out_features, linears[1].out_features) == (4320, 100, 10)


def test_cifar_cnn_flattens_to_7200_on_cifar():
    net = Classifier(classifier_config("cifar_cnn", "none", "xavier", "adam"), (3, 32, 32), 10).model
    assert [m.in_features for m in net if isinstance(m, torch.nn.Linear)] == [7200, 512]


def test_cnn_builds_the_tutorial_net_from_lists():
    config = classifier_config("cnn", norm="batch")
    config["model"].update(conv=[32, 64], kernel_size=5, padding="same", pool=2, hidden=[1024], dropout=0.4)
    net = Classifier(config, (1, 28, 28), 10).model
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (64, (5, 5))]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net) == 2  # a norm after each conv
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, torch.nn.Linear)] == [
        (64 * 7 * 7, 1024),
        (1024, 10),
    ]


def test_cnn_takes_one_value_per_conv_or_one_for_all():
    config = classifier_config("cnn")
    config["model"].update(
        conv=[8, 8, 8], kernel_size=[5, 3, 3], padding=[0, 1, "same"], pool=[2, 1, 2], hidden=[]
    )
    net = Classifier(config, (1, 28, 28), 10).model
    # 28 → conv5 24 → pool 12 → conv3 pad 1 12 → conv3 same 12 → pool 6: 8·6·6 features, no hidden layer.
    assert [m.in_features for m in net if isinstance(m, torch.nn.Linear)] == [8 * 6 * 6]
    config["model"].update(kernel_size=[5, 3])
    with pytest.raises(ConfigError, match=r"model.kernel_size=\[5, 3\]: must be one value, or a list of 3"):
        Classifier(config, (1, 28, 28), 10)


def test_a_users_own_module_trains_sweeps_diagnoses_and_reloads_through_the_cli(
    run_cli, mnist_root, tmp_path
):
    """`model=custom`: a network defined outside trainlab (tests/user_models/, on PYTHONPATH) gets the data's
    shape and classes and the norm group, its own key from the command line, and the platform's init,
    regularizer, diagnostics, sweep and checkpoints."""
    user_model = ["model=custom", "model._target_=user_models.nets.TinyConvNet", "norm=batch", "init=xavier"]
    extras = ["regularizer=l2", "diagnostics=on", "diagnostics.every_n_steps=1"]
    run_cli("-m", *TINY, *user_model, *extras, "+model.width=4,6", env={"PYTHONPATH": str(REPO / "tests")})
    runs = mlflow_runs(tmp_path)
    assert sorted(run.data.params["model.width"] for run in runs) == ["4", "6"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["model._target_"] == "user_models.nets.TinyConvNet"
        assert run.data.metrics["train/penalty"] > 0
        assert {"grad_norm/layer1", "grad_norm/layer2"} <= set(run.data.metrics)
    [best, *_] = sorted(tmp_path.glob("multirun/*/*/checkpoints/best.ckpt"))
    restored = Classifier.load_from_checkpoint(best, weights_only=True)
    assert type(restored.model).__name__ == "TinyConvNet"
    assert isinstance(restored.model.features[1], torch.nn.BatchNorm2d)
    assert restored(torch.rand(2, 1, 28, 28)).shape == (2, 10)
