"""A configurable CNN, so the common small CNNs of papers and tutorials are one command, e.g. TensorFlow's
Fashion-MNIST/MNIST net: `model=cnn model.conv=[32,64] model.kernel_size=5 model.padding=same
model.hidden=[1024] model.dropout=0.4`."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from trainlab.errors import fail
from trainlab.models.layers import ACTIVATIONS, conv_output_size
from trainlab.norms import make_norm


def per_layer(key: str, value: object, layers: int) -> list:
    """One value for each of `layers` conv layers: a single value repeats, a list gives one per layer."""
    values = list(value) if isinstance(value, list | tuple) else [value] * layers
    if len(values) != layers:
        raise fail(f"model.{key}", value, f"one value, or a list of {layers} (one per conv layer)")
    return values


class CNN(nn.Sequential):
    """[conv k×k → norm → activation → max-pool p] per width in `conv` (p = 1: no pool), flatten, then
    [affine → activation → dropout] per width in `hidden`, and affine to the classes.

    `kernel_size`, `padding` (pixels, or "same": the output keeps the input's size) and `pool` take one
    value for every conv layer or a list with one per layer.
    """

    norms = ("none", "batch", "layer", "instance")

    def __init__(
        self,
        image_shape: tuple[int, ...],
        num_classes: int,
        norm: DictConfig,
        conv: list[int],
        kernel_size: int | list[int] = 3,
        padding: int | str | list[int | str] = 0,
        pool: int | list[int] = 2,
        hidden: list[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        channels, height, width = image_shape
        kernels, paddings, pools = (
            per_layer(key, value, len(conv))
            for key, value in (("kernel_size", kernel_size), ("padding", padding), ("pool", pool))
        )
        layers: list[nn.Module] = []
        for out_channels, kernel, pad, size in zip(conv, kernels, paddings, pools, strict=True):
            layers += [
                nn.Conv2d(channels, out_channels, kernel, padding=pad),
                make_norm(norm, out_channels, conv=True),
                ACTIVATIONS[activation](),
            ]
            if pad != "same":
                height, width = (conv_output_size(s, kernel, padding=pad) for s in (height, width))
            if size > 1:
                layers.append(nn.MaxPool2d(size))
                height, width = height // size, width // size
            if height < 1 or width < 1:
                raise fail(
                    "model.conv", conv, f"fewer layers, smaller kernels or pools for {image_shape} images"
                )
            channels = out_channels
        layers.append(nn.Flatten())
        features = channels * height * width
        for units in hidden:
            layers += [nn.Linear(features, units), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            features = units
        layers.append(nn.Linear(features, num_classes))
        super().__init__(*layers)
