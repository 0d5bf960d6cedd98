"""Building blocks shared by the models: activations by name and the conv output-size formula."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """OH = (H + 2P − FH) / S + 1 (floored, as PyTorch does)."""
    return (size + 2 * padding - kernel) // stride + 1


def dense_head(
    features: int, hidden: list[int], num_classes: int, activation: str, dropout: float
) -> nn.Sequential:
    """[dropout → affine → activation] per hidden layer, then dropout → affine to the classes.

    Dropout sits *before* each affine layer of the head, as in AlexNet; with dropout=0 it is a no-op.
    """
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(features, width), ACTIVATIONS[activation]()]
        features = width
    layers += [nn.Dropout(dropout), nn.Linear(features, num_classes)]
    return nn.Sequential(*layers)
