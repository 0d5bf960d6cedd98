"""Weight penalties added to the loss: L1, L2 and their sum, the Elastic Net.

penalty = l1 · Σ|w| + (l2 / 2) · Σ w²,   so   ∂penalty/∂w = l1 · sign(w) + l2 · w.

`l1` weighs the absolute term and `l2` the squared one (the report's λ₁ weighs the squared term:
here the names say which is which). Only weights of affine and conv layers are penalised, unless
`regularizer.target=activations` puts the same penalty on the last hidden layer's output instead
(Keras' activity regularizer, as exercise 7's originals do on the 512-unit layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainlab.errors import ConfigError
from trainlab.models.layers import ACTIVATIONS


def penalized_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights a penalty applies to: affine and conv weights; not biases, not norm parameters."""
    return [layer.weight for layer in model.modules() if isinstance(layer, nn.Linear | nn.Conv2d)]


def weight_penalty(weights: Sequence[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
    """Elastic Net: l1 · Σ|w| + (l2 / 2) · Σ w² over `weights` (0 when both strengths are 0)."""
    total = weights[0].new_zeros(())
    if l1:
        total = total + l1 * sum(w.abs().sum() for w in weights)
    if l2:
        total = total + 0.5 * l2 * sum(w.pow(2).sum() for w in weights)
    return total


# |w| below this counts as zero in `zero_fraction`: ~2 % of He init's σ for a 784-input layer (0.05), so a
# weight this small changes no logit by more than noise, and plain SGD's L1 steps (lr·λ₁, which jitter
# around 0 rather than land on it) stay under it.
ZERO_THRESHOLD = 1e-3


def zero_fraction(weights: Sequence[torch.Tensor], threshold: float = ZERO_THRESHOLD) -> torch.Tensor:
    """The share of `weights` that a penalty has driven to (near) zero, #{|w| < threshold} / #w, over
    each tensor's last dimension (flattened weights; a population's leading member dimension is kept)."""
    small = sum((w.detach().abs() < threshold).sum(-1) for w in weights)
    return small / sum(w.shape[-1] for w in weights)


def last_hidden_activation(model: nn.Module) -> nn.Module:
    """The activation module feeding the output layer (in `cifar_cnn`, the 512-unit layer's)."""
    found = [layer for layer in model.modules() if isinstance(layer, tuple(ACTIVATIONS.values()))]
    if not found:  # a user's model may apply its activations as functions
        raise ConfigError(
            f"regularizer.target=activations: {type(model).__name__} has no activation module "
            f"({', '.join(cls.__name__ for cls in ACTIVATIONS.values())}) to penalise; use target=weights"
        )
    return found[-1]


def activation_penalty(activations: torch.Tensor, l1: float, l2: float) -> torch.Tensor:
    """Activity penalty per sample, averaged over the batch: (l1 · Σ|a| + (l2 / 2) · Σ a²) / batch size."""
    return weight_penalty([activations], l1, l2) / len(activations)
