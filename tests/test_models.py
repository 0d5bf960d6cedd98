"""Every valid model × norm × init × optimizer × regularizer builds and takes a training step."""

from __future__ import annotations

import itertools

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO
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
SHAPES = {"mlp": (1, 28, 28), "simple_cnn": (1, 28, 28), "cifar_cnn": (3, 32, 32), "alexnet": (3, 32, 32)}


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
