"""Models by name. Each takes the image shape and class count from the data, so any model runs on any
data set; a model's config keys (besides `name`) are its constructor's arguments. `model=custom` builds
the user's own `nn.Module` class that `model._target_` names, by the same rules.
"""

from __future__ import annotations

import inspect

from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainlab.errors import ConfigError, check_choice, fail
from trainlab.models.alexnet import AlexNet
from trainlab.models.cifar_cnn import CifarCNN
from trainlab.models.cnn import CNN
from trainlab.models.layers import ACTIVATIONS
from trainlab.models.mlp import MLP
from trainlab.models.simple_cnn import SimpleCNN
from trainlab.norms import NORMS
from trainlab.rules import arguments, check_arguments, import_class

MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "simple_cnn": SimpleCNN,
    "cifar_cnn": CifarCNN,
    "alexnet": AlexNet,
    "cnn": CNN,
}
CUSTOM = "custom"

# Keys of every model that say how it runs, not what it is; `trainlab.module` applies them:
# `compile` (torch.compile the network), `channels_last` (NHWC weights, faster convs on tensor cores).
RUNTIME_KEYS = ("compile", "channels_last")

# What trainlab gives a model, where its constructor takes it: from the data, and the norm group.
PROVIDED = ("image_shape", "num_classes", "norm")

# Keys of the built-in models that hold layer widths: a positive integer, or a list of them
# (`hidden` may be empty: no hidden layer).
_WIDTHS = ("hidden", "channels", "conv", "filters", "kernel_size", "pool", "stride")


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_padding(value: object) -> bool:
    return value == "same" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def import_model(target: object) -> type[nn.Module]:
    """The class `model._target_` names (`my_pkg.nets.MyNet`), imported from the user's code."""
    return import_class("model._target_", target, nn.Module, "an nn.Module", "my_pkg.MyNet")


def model_class(cfg: DictConfig) -> type[nn.Module]:
    """The registry's class for `model.name`, or the user's for `model=custom`."""
    check_choice("model.name", cfg.name, (*MODELS, CUSTOM))
    return import_model(cfg.get("_target_")) if cfg.name == CUSTOM else MODELS[cfg.name]


def check_model(cfg: DictConfig, norm: DictConfig) -> None:
    """Known model, its constructor's keys (all it needs, nothing it does not take), positive widths, and
    a norm that fits its layers."""
    cls = model_class(cfg)
    label = cfg._target_ if cfg.name == CUSTOM else cfg.name
    for key in RUNTIME_KEYS:
        if not isinstance(cfg.get(key, False), bool):
            raise fail(f"model.{key}", cfg[key], "true or false")
    given = _network_arguments(cfg)
    check_arguments("model", OmegaConf.create({"name": label, **given}), cls, reserved=PROVIDED)
    parameters = inspect.signature(cls).parameters
    for key, parameter in parameters.items():
        required = parameter.default is inspect.Parameter.empty and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if required and key not in (*PROVIDED, *given):
            raise fail(f"model.{key}", None, f"set: {label} has no default for it (+model.{key}=...)")
    if cfg.name != CUSTOM:
        _check_widths(given)
    check_choice("model.activation", cfg.get("activation", "relu"), ACTIVATIONS)
    check_choice("norm.name", norm.name, NORMS)
    norms = getattr(cls, "norms", tuple(NORMS) if "norm" in parameters else ("none",))
    if norm.name not in norms:
        why = "its layers are dense and have no channels" if "norm" in parameters else "it takes no norm"
        raise ConfigError(
            f"norm={norm.name} does not fit model={cfg.name}: {why}; use one of {', '.join(norms)}"
        )


def _check_widths(given: dict[str, object]) -> None:
    for key, value in given.items():
        if key in _WIDTHS:
            values = value if isinstance(value, list) else [value]
            empty = isinstance(value, list) and not value and key != "hidden"
            if empty or not all(_is_positive_int(v) for v in values):
                raise fail(f"model.{key}", value, "a positive integer or a non-empty list of them")
    if "padding" in given:
        padding = given["padding"]
        if not all(_is_padding(p) for p in (padding if isinstance(padding, list) else [padding])):
            raise fail("model.padding", padding, 'an integer >= 0 or "same", or a list of them')


def _network_arguments(cfg: DictConfig) -> dict[str, object]:
    """The constructor's keyword arguments: the group's keys but `name`, `_target_` and the runtime keys."""
    return {key: value for key, value in arguments(cfg).items() if key not in (*RUNTIME_KEYS, "_target_")}


def build_model(
    cfg: DictConfig, norm: DictConfig, image_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """The network: its config keys, plus image shape, class count and norm where it takes them."""
    cls = model_class(cfg)
    provided = {"image_shape": image_shape, "num_classes": num_classes, "norm": norm}
    takes = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in provided.items() if k in takes}, **_network_arguments(cfg))
