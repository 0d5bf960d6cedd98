"""An AlexNet-style network sized for 28×28 and 32×32 images (figure 17)."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from trainlab.models.layers import ACTIVATIONS, dense_head
from trainlab.norms import make_norm

# Max-pool 2×2 after these conv layers (0-based), as AlexNet pools after conv 1, 2 and 5.
_POOL_AFTER = (0, 1, 4)


class AlexNet(nn.Sequential):
    """Five 3×3, pad-1 convs (each → norm → activation), max-pools after the 1st, 2nd and 5th,
    then [dropout → affine → activation] per hidden width and dropout → affine to the classes.
    """

    norms = ("none", "batch", "layer", "instance")

    def __init__(
        self,
        image_shape: tuple[int, ...],
        num_classes: int,
        norm: DictConfig,
        channels: list[int],
        hidden: list[int],
        activation: str = "relu",
        dropout: float = 0.5,
    ) -> None:
        in_channels, height, width = image_shape
        layers: list[nn.Module] = []
        for index, out_channels in enumerate(channels):
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                make_norm(norm, out_channels, conv=True),
                ACTIVATIONS[activation](),
            ]
            if index in _POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        layers.append(nn.Flatten())
        layers.append(dense_head(in_channels * height * width, hidden, num_classes, activation, dropout))
        super().__init__(*layers)
