"""A user's network: it takes the data's shape and class count and the norm config, and a width of its own."""

from __future__ import annotations

import math

from torch import nn

from trainlab.norms import make_norm


class TinyConvNet(nn.Module):
    """conv 3×3 (width) → norm → ReLU → global average pool → affine to the classes."""

    def __init__(self, image_shape: tuple[int, ...], num_classes: int, norm, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(image_shape[0], width, 3, padding=1), make_norm(norm, width, conv=True), nn.ReLU()
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, images):
        return self.head(self.features(images).mean((2, 3)))


class Linear10(nn.Sequential):
    """A linear classifier for 28×28 images into 10 classes: it takes nothing from trainlab."""

    def __init__(self) -> None:
        super().__init__(nn.Flatten(), nn.Linear(math.prod((1, 28, 28)), 10))


NOT_A_MODULE = 42
