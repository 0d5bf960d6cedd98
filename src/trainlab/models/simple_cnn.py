"""The report's simple CNN (figure 16): one conv layer, a max-pool and a two-layer dense head."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from trainlab.models.layers import ACTIVATIONS, conv_output_size
from trainlab.norms import make_norm


class SimpleCNN(nn.Sequential):
    """conv(filters, k×k) → norm → activation → max-pool → affine(hidden) → activation → dropout → affine.

    On 28×28 MNIST with the defaults: conv 30@5×5 → 24×24, pool 2 → 12×12, so 4320 → 100 → 10.
    """

    norms = ("none", "batch", "layer", "instance")

    def __init__(
        self,
        image_shape: tuple[int, ...],
        num_classes: int,
        norm: DictConfig,
        filters: int = 30,
        kernel_size: int = 5,
        stride: int = 1,
        padding: int = 0,
        pool: int = 2,
        hidden: int = 100,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        channels, height, width = image_shape
        out_h = conv_output_size(height, kernel_size, stride, padding) // pool
        out_w = conv_output_size(width, kernel_size, stride, padding) // pool
        super().__init__(
            nn.Conv2d(channels, filters, kernel_size, stride, padding),
            make_norm(norm, filters, conv=True),
            ACTIVATIONS[activation](),
            nn.MaxPool2d(pool),
            nn.Flatten(),
            nn.Linear(filters * out_h * out_w, hidden),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
