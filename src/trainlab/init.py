"""Weight initialisation of every affine and conv layer, in the report's fan-in forms.

w = std · N(0, 1) (or uniform on ±√3·std, the same std), bias = 0, output layer included:
- normal: std = init.std
- xavier: std = √(1 / fan)
- he:     std = √(2 / fan)
with fan = n_in (inputs per unit: C_in·kh·kw for conv), or (n_in + n_out) / 2 with `init.fan=avg`.
`default` leaves PyTorch's own initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from trainlab.errors import check_choice

INITS: dict[str, Callable[[DictConfig, float], float] | None] = {
    "default": None,
    "normal": lambda cfg, fan: cfg.std,
    "xavier": lambda cfg, fan: math.sqrt(1.0 / fan),
    "he": lambda cfg, fan: math.sqrt(2.0 / fan),
}


def check_init(cfg: DictConfig) -> None:
    check_choice("init.name", cfg.name, INITS)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(n_in, n_out) of an affine (out, in) or conv (out, in, kh, kw) weight."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def initialize(model: nn.Module, cfg: DictConfig) -> None:
    """Re-draw the weights of every nn.Linear / nn.Conv2d of `model` and zero their biases."""
    std_of = INITS[cfg.name]
    if std_of is None:
        return
    for layer in model.modules():
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            continue
        n_in, n_out = fans(layer.weight)
        std = std_of(cfg, n_in if cfg.get("fan", "in") == "in" else (n_in + n_out) / 2)
        if cfg.get("distribution", "normal") == "uniform":
            layer.weight.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)
        else:
            layer.weight.normal_(0.0, std)
        if layer.bias is not None:
            layer.bias.zero_()
