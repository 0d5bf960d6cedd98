"""Normalisation layers by name, for dense (N, F) and conv (N, C, H, W) activations.

- batch:    per feature/channel over the batch (and H, W): (x - mean) / sqrt(var + eps), then gamma·x + beta;
            biased batch variance in training, running estimates in evaluation.
- layer:    per sample over all features, or all of (C, H, W) for conv (GroupNorm with one group).
- instance: per sample and per channel over (H, W); conv only.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig
from torch import nn

from trainlab.errors import ConfigError


def _batch(features: int, conv: bool, cfg: DictConfig) -> nn.Module:
    cls = nn.BatchNorm2d if conv else nn.BatchNorm1d
    return cls(features, eps=cfg.eps, momentum=cfg.get("momentum", 0.1))


def _layer(features: int, conv: bool, cfg: DictConfig) -> nn.Module:
    return nn.GroupNorm(1, features, eps=cfg.eps) if conv else nn.LayerNorm(features, eps=cfg.eps)


def _instance(features: int, conv: bool, cfg: DictConfig) -> nn.Module:
    if not conv:
        raise ConfigError(
            "norm=instance: dense layers have no channels to normalise; use none, batch or layer"
        )
    return nn.InstanceNorm2d(features, eps=cfg.eps, affine=True)


NORMS: dict[str, Callable[[int, bool, DictConfig], nn.Module] | None] = {
    "none": None,
    "batch": _batch,
    "layer": _layer,
    "instance": _instance,
}


def make_norm(cfg: DictConfig, features: int, conv: bool) -> nn.Module:
    """The norm layer `cfg.name` for `features` features/channels (nn.Identity for none)."""
    build = NORMS[cfg.name]
    return nn.Identity() if build is None else build(features, conv, cfg)
