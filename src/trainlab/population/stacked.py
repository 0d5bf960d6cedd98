"""K copies of one network as one module: every parameter and buffer gets a leading member dimension,
and the forward pass is the single network's own, vectorised over members with `torch.func.vmap` (a
convolutional network on a CPU calls each member's in turn instead: faster there).

Because members run the unchanged single-model code (PyTorch's ensembling recipe), every layer is exact
per member: a BatchNorm keeps statistics per member, a conv is a grouped conv under the hood, a LayerNorm
normalises each member's features. Dropout is the one layer rewritten: its rate becomes a per-member
buffer, and vmap draws a different mask for every member (or it goes where every rate is 0).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class MemberDropout(nn.Module):
    """Dropout whose rate `p` is a (per-member) buffer: x · mask / (1 − p), mask ~ Bernoulli(1 − p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = 1 - self.p
        return x * (torch.rand_like(x) < keep) / keep


def _with_member_dropout(models: list[nn.Module]) -> None:
    """Replace, in place, each nn.Dropout of the members' networks (same architecture) by a MemberDropout
    of the member's rate, or by nn.Identity where every member's rate is 0 (no random draws at all, as
    torch's dropout skips them at p = 0)."""
    for name, layer in list(models[0].named_modules()):
        if not isinstance(layer, nn.Dropout):
            continue
        rates = [model.get_submodule(name).p for model in models]
        for model, rate in zip(models, rates, strict=True):
            replacement = MemberDropout(rate) if any(rates) else nn.Identity()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, replacement)


def _safe(name: str) -> str:
    return name.replace(".", "__")


class StackedNetwork(nn.Module):
    """The members' networks (same architecture, own weights) stacked: `forward(x)` is (K, N, …).

    Parameters are registered under the single network's names with dots as `__`; `member_state(k)`
    gives member k's ordinary `state_dict` (what `nn.Module.load_state_dict` of the single network takes).
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        members = [copy.deepcopy(model) for model in models]
        _with_member_dropout(members)
        params, buffers = stack_module_state(members)
        self.param_names = list(params)
        self.buffer_names = list(buffers)
        for name, value in params.items():
            self.register_parameter(_safe(name), nn.Parameter(value))
        for name, value in buffers.items():
            self.register_buffer(_safe(name), value)
        # The architecture without storage: vmap calls it with each member's tensors.
        self._skeleton = [copy.deepcopy(members[0]).to("meta")]
        self._state_names = set(models[0].state_dict())
        self.convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in members[0].modules())

    @property
    def size(self) -> int:
        return getattr(self, _safe(self.param_names[0])).shape[0]

    def stacked(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer under its single-network name, member dimension first."""
        return {name: getattr(self, _safe(name)) for name in self.param_names + self.buffer_names}

    def forward(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        """(K, N, …) outputs of every member on the same `x` (N, …), or with `per_member` on its own row
        of `x` (K, N, …)."""
        skeleton = self._skeleton[0]
        if skeleton.training != self.training:  # Lightning restores modes by flag, not through .train()
            skeleton.train(self.training)

        def member(state: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(skeleton, state, (inputs,))

        if self.convolutional and x.device.type == "cpu":
            # On a CPU, vmap's convolution and pooling are slower than the members' own calls one after
            # another (5 simple CNNs: 113 against 48 ms a step; 25 MLPs: 17 against 35 ms, so MLPs keep
            # vmap): benchmarks/stacked_forward.py. Each call gets views of the member's tensors, so its
            # gradients and BatchNorm statistics land in the stacked ones.
            stacked = self.stacked()
            return torch.stack(
                [
                    member({name: value[k] for name, value in stacked.items()}, x[k] if per_member else x)
                    for k in range(self.size)
                ]
            )
        return vmap(member, in_dims=(0, 0 if per_member else None), randomness="different")(self.stacked(), x)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's `state_dict` as the single network names it (dropout rates left out)."""
        return {
            name: value[k].detach().clone()
            for name, value in self.stacked().items()
            if name in self._state_names
        }

    @torch.no_grad()
    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at `index`: parameters, their gradients and buffers shrink in place."""
        for name in self.param_names:
            param = getattr(self, _safe(name))
            param.data = param.data[index]
            if param.grad is not None:
                param.grad = param.grad[index]
        for name in self.buffer_names:
            setattr(self, _safe(name), getattr(self, _safe(name))[index])
