"""The optimisers of `trainlab.optim`, applied to K members at once: every parameter carries a leading
member dimension and every hyperparameter is a tensor of K values, so one update serves K trials.

`torch.optim` takes one learning rate per parameter group; K groups would cost K update calls a step.
Each rule below is torch's own single-tensor update written once over (K, …) tensors, member k's
numbers in row k, so member k's weights follow what `torch.optim` does with its numbers
(tests/test_population.py compares them). Per-member numbers: lr, momentum, dampening, weight_decay,
alpha, eps, betas, lr_decay, initial_accumulator_value; the switches (nesterov, centered, amsgrad,
maximize) are shared by the population.

Per step, the per-member coefficients (lr / (1 − β₁ᵗ), √(1 − β₂ᵗ), …) are formed once in double
precision on the CPU, as torch forms them from Python floats, and sent to the device in one copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

# The per-member numbers of each rule, with torch's defaults (a key the config does not set).
DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
    "adagrad": {
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
    },
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2},
}
# trainlab's option names → the rule that updates them (`momentum` is SGD with momentum).
RULE_OF = {name: name for name in DEFAULTS} | {"momentum": "sgd"}
FLAGS = ("nesterov", "centered", "amsgrad", "maximize")

Coefficients = Mapping[str, torch.Tensor]  # name → (K, 1, …, 1) in the parameter's dtype and device


def _sgd_coefficients(h: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    return {"lr": h["lr"], "momentum": h["momentum"], "undamped": 1 - h["dampening"], "wd": h["weight_decay"]}


def _sgd(param, grad, state, c, flags) -> None:
    """V = μV + (1 − dampening)·g (V₁ = g); w −= lr·(g + μV if nesterov else V); where μ = 0: w −= lr·g."""
    if flags["decay"]:
        grad = grad.add(param * c["wd"])
    if not flags["momentum"]:
        param.sub_(grad * c["lr"])
        return
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = grad.clone()
    else:
        buf.mul_(c["momentum"]).add_(grad * c["undamped"])
    direction = grad + c["momentum"] * buf if flags["nesterov"] else buf
    param.sub_(torch.where(c["momentum"] != 0, direction, grad).mul_(c["lr"]))


def _adagrad_coefficients(h: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    return {
        "clr": h["lr"] / (1 + (step - 1) * h["lr_decay"]),
        "eps": h["eps"],
        "wd": h["weight_decay"],
        "initial": h["initial_accumulator_value"],
    }


def _adagrad(param, grad, state, c, flags) -> None:
    """h += g²; w −= lr / (1 + (t − 1)·lr_decay) · g / (√h + eps)."""
    if flags["decay"]:
        grad = grad.add(param * c["wd"])
    if "sum" not in state:
        state["sum"] = c["initial"].expand_as(param).clone()
    state["sum"].addcmul_(grad, grad)
    param.sub_(grad.mul(c["clr"]).div_(state["sum"].sqrt().add_(c["eps"])))


def _rmsprop_coefficients(h: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    return {
        "lr": h["lr"],
        "alpha": h["alpha"],
        "one_minus_alpha": 1 - h["alpha"],
        "eps": h["eps"],
        "wd": h["weight_decay"],
        "momentum": h["momentum"],
    }


def _rmsprop(param, grad, state, c, flags) -> None:
    """h = αh + (1 − α)g²; w −= lr · g / (√h + eps) (centered: √(h − ḡ²); momentum: through a buffer)."""
    if flags["decay"]:
        grad = grad.add(param * c["wd"])
    if "square_avg" not in state:
        state["square_avg"] = torch.zeros_like(param)
    square_avg = state["square_avg"]
    square_avg.mul_(c["alpha"]).add_(grad.square().mul_(c["one_minus_alpha"]))
    if flags["centered"]:
        if "grad_avg" not in state:
            state["grad_avg"] = torch.zeros_like(param)
        grad_avg = state["grad_avg"]
        grad_avg.add_((grad - grad_avg).mul_(c["one_minus_alpha"]))
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
    else:
        avg = square_avg.sqrt()
    avg.add_(c["eps"])
    if flags["momentum"]:  # μ = 0 members: buf = g / avg each step, torch's plain update
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param)
        buf = state["momentum_buffer"]
        buf.mul_(c["momentum"]).addcdiv_(grad, avg)
        param.sub_(buf * c["lr"])
    else:
        param.sub_(grad.div(avg).mul_(c["lr"]))


def _adam_coefficients(h: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    return {
        "one_minus_beta1": 1 - h["beta1"],
        "beta2": h["beta2"],
        "one_minus_beta2": 1 - h["beta2"],
        "step_size": h["lr"] / (1 - h["beta1"] ** step),
        "bias_correction2_sqrt": (1 - h["beta2"] ** step).sqrt(),
        "eps": h["eps"],
        "wd": h["weight_decay"],
        "decay_factor": 1 - h["lr"] * h["weight_decay"],
    }


def _adam(param, grad, state, c, flags, decoupled: bool = False) -> None:
    """m = β₁m + (1 − β₁)g; v = β₂v + (1 − β₂)g²; w −= lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)."""
    if flags["decay"]:
        if decoupled:
            param.mul_(c["decay_factor"])
        else:
            grad = grad.add(param * c["wd"])
    if "exp_avg" not in state:
        state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(param), torch.zeros_like(param)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, c["one_minus_beta1"])
    exp_avg_sq.mul_(c["beta2"]).add_(grad.square().mul_(c["one_minus_beta2"]))
    second = exp_avg_sq
    if flags["amsgrad"]:
        if "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        second = torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
    denom = second.sqrt().div_(c["bias_correction2_sqrt"]).add_(c["eps"])
    param.sub_(exp_avg.div(denom).mul_(c["step_size"]))


Rule = Callable[..., None]
RULES: dict[str, tuple[Callable[[Mapping[str, torch.Tensor], int], dict[str, torch.Tensor]], Rule]] = {
    "sgd": (_sgd_coefficients, _sgd),
    "adagrad": (_adagrad_coefficients, _adagrad),
    "rmsprop": (_rmsprop_coefficients, _rmsprop),
    "adam": (_adam_coefficients, _adam),
    "adamw": (_adam_coefficients, lambda *args: _adam(*args, decoupled=True)),
}


def member_hypers(option: str, configs: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """{name: K values (float64)} from the members' `optimizer` configs (torch's defaults where unset)."""
    rule = RULE_OF[option]
    rows = []
    for cfg in configs:
        values = dict(DEFAULTS[rule])
        for key, value in cfg.items():
            if key == "betas":
                values["beta1"], values["beta2"] = value
            elif key in values:
                values[key] = value
        rows.append(values)
    return {key: torch.tensor([row[key] for row in rows], dtype=torch.float64) for key in DEFAULTS[rule]}


def shared_flags(configs: list[Mapping[str, Any]]) -> dict[str, bool]:
    """The boolean switches, which every member must set alike (they change the update's form)."""
    return {flag: bool(configs[0].get(flag, False)) for flag in FLAGS}


class PopulationOptimizer(torch.optim.Optimizer):
    """Updates (K, …) parameters with per-member hyperparameters (`hypers`, K values each).

    `step` counts the population's steps (all members step together). `keep(index)` drops members
    (pruned, failed) from the state and the hyperparameters; the module shrinks the parameters.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        option: str,
        hypers: dict[str, torch.Tensor],
        flags: Mapping[str, bool],
    ) -> None:
        super().__init__(params, {"option": option, "hypers": hypers, "flags": dict(flags), "step": 0})

    @staticmethod
    def _on(packed: torch.Tensor, names: list[str], param: torch.Tensor) -> dict[str, torch.Tensor]:
        shape = (-1,) + (1,) * (param.dim() - 1)
        return {name: row.view(shape) for name, row in zip(names, packed, strict=True)}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["step"] += 1
            hypers = group["hypers"]
            coefficients_of, rule = RULES[RULE_OF[group["option"]]]
            coefficients = coefficients_of(hypers, group["step"])
            names = list(coefficients)
            flags = {
                **group["flags"],
                "decay": bool(hypers["weight_decay"].any()),  # wd = 0 everywhere: skip the term
                "momentum": bool(hypers.get("momentum", torch.zeros(1)).any()),
            }
            packed: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                key = (param.device, param.dtype)
                if key not in packed:  # one host-to-device copy of every coefficient per step
                    packed[key] = torch.stack([coefficients[n] for n in names]).to(param.device, param.dtype)
                grad = -param.grad if flags["maximize"] else param.grad
                rule(param, grad, self.state[param], self._on(packed[key], names, param), flags)
        return loss

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at `index` (positions in the current population)."""
        for group in self.param_groups:
            group["hypers"] = {k: v[index.cpu()] for k, v in group["hypers"].items()}
            for param in group["params"]:
                state = self.state.get(param, {})
                for key, value in state.items():
                    state[key] = value[index.to(value.device)]
