"""Weight penalties added to the loss: L1, L2 and their sum, the Elastic Net.

penalty = l1 · Σ|w| + (l2 / 2) · Σ w²,   so   ∂penalty/∂w = l1 · sign(w) + l2 · w.

`l1` weighs the absolute term and `l2` the squared one (the report's λ₁ weighs the squared term:
here the names say which is which). Only weights of affine and conv layers are penalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


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
