"""The fully connected network of the report's MNIST exercises (e.g. 784-40-20-10, 784-[100]x6-10)."""

from __future__ import annotations

import math

from omegaconf import DictConfig
from torch import nn

from trainlab.models.layers import ACTIVATIONS
from trainlab.norms import make_norm


class MLP(nn.Sequential):
    """flatten → [affine → norm → activation → dropout] per hidden width → affine to the classes."""

    norms = ("none", "batch", "layer")

    def __init__(
        self,
        image_shape: tuple[int, ...],
        num_classes: int,
        norm: DictConfig,
        hidden: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(image_shape)
        for width in hidden:
            layers += [
                nn.Linear(features, width),
                make_norm(norm, width, conv=False),
                ACTIVATIONS[activation](),
                nn.Dropout(dropout),
            ]
            features = width
        layers.append(nn.Linear(features, num_classes))
        super().__init__(*layers)
