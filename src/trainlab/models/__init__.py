"""Models by name. Each takes the image shape and class count from the data, so any model runs on any
data set; a model's config keys (besides `name`) are its constructor's arguments.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainlab.config import arguments, check_arguments, check_choice, fail
from trainlab.errors import ConfigError
from trainlab.models.alexnet import AlexNet
from trainlab.models.cifar_cnn import CifarCNN
from trainlab.models.layers import ACTIVATIONS
from trainlab.models.mlp import MLP
from trainlab.models.simple_cnn import SimpleCNN
from trainlab.norms import NORMS

MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "simple_cnn": SimpleCNN,
    "cifar_cnn": CifarCNN,
    "alexnet": AlexNet,
}

# Keys of every model that say how it runs, not what it is; `trainlab.module` applies them:
# `compile` (torch.compile the network), `channels_last` (NHWC weights, faster convs on tensor cores).
RUNTIME_KEYS = ("compile", "channels_last")

# Keys that hold layer widths: a positive integer, or a list of them.
_WIDTHS = ("hidden", "channels", "filters", "kernel_size", "pool", "stride")


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_model(cfg: DictConfig, norm: DictConfig) -> None:
    """Known model, known keys, positive widths, and a norm that fits its layers."""
    check_choice("model.name", cfg.name, MODELS)
    cls = MODELS[cfg.name]
    for key in RUNTIME_KEYS:
        if not isinstance(cfg.get(key, False), bool):
            raise fail(f"model.{key}", cfg[key], "true or false")
    network = OmegaConf.create({"name": cfg.name, **_network_arguments(cfg)})
    check_arguments("model", network, cls, reserved=("image_shape", "num_classes", "norm"))
    for key, value in arguments(network).items():
        if key in _WIDTHS:
            values = value if isinstance(value, list) else [value]
            if (isinstance(value, list) and not value) or not all(_is_positive_int(v) for v in values):
                raise fail(f"model.{key}", value, "a positive integer or a non-empty list of them")
    if "padding" in cfg and not (isinstance(cfg.padding, int) and cfg.padding >= 0):
        raise fail("model.padding", cfg.padding, "an integer >= 0")
    check_choice("model.activation", cfg.get("activation", "relu"), ACTIVATIONS)
    check_choice("norm.name", norm.name, NORMS)
    if norm.name not in cls.norms:
        raise ConfigError(
            f"norm={norm.name} does not fit model={cfg.name}: its layers are dense and have no channels; "
            f"use one of {', '.join(cls.norms)}"
        )


def _network_arguments(cfg: DictConfig) -> dict[str, object]:
    return {key: value for key, value in arguments(cfg).items() if key not in RUNTIME_KEYS}


def build_model(
    cfg: DictConfig, norm: DictConfig, image_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    return MODELS[cfg.name](image_shape, num_classes, norm, **_network_arguments(cfg))
