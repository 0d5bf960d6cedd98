"""The report's CIFAR-10 CNN (figures 18–25): two 3×3 convs, a max-pool and a 512-unit dense layer."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from trainlab.models.layers import ACTIVATIONS, conv_output_size
from trainlab.norms import make_norm


class CifarCNN(nn.Sequential):
    """conv(same) → activation → norm → conv(valid) → activation → max-pool 2 → affine(hidden) → activation
    → dropout → affine.

    The norm layer sits once, right after the first conv + activation, where exercise 8 puts it.
    On 32×32 inputs: 32 → 32 → 30 → 15, so the flattened size is filters·15·15 = 7200.
    """

    norms = ("none", "batch", "layer", "instance")

    def __init__(
        self,
        image_shape: tuple[int, ...],
        num_classes: int,
        norm: DictConfig,
        filters: int = 32,
        hidden: int = 512,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        channels, height, width = image_shape
        out_h, out_w = (conv_output_size(size, 3) // 2 for size in (height, width))
        super().__init__(
            nn.Conv2d(channels, filters, 3, padding=1),
            ACTIVATIONS[activation](),
            make_norm(norm, filters, conv=True),
            nn.Conv2d(filters, filters, 3),
            ACTIVATIONS[activation](),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(filters * out_h * out_w, hidden),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
