"""The optimisers of `trainlab.optim`, applied to K members at once: every parameter carries a leading
member dimension and every hyperparameter is a tensor of K values, so one update serves K trials.

`torch.optim` takes one learning rate per parameter group; K groups would cost K update calls a step.
Each rule below is torch's own single-tensor update, written once with broadcasting (member k's values
in row k), so member k's weights follow exactly what `torch.optim` would do with its numbers
(tests/test_population.py compares them). Per-member numbers: lr, momentum, dampening, weight_decay,
alpha, eps, betas, lr_decay, initial_accumulator_value; flags (nesterov, centered, amsgrad, maximize)
are shared by the population.
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
RULE_OF = {
    "sgd": "sgd",
    "momentum": "sgd",
    "adagrad": "adagrad",
    "rmsprop": "rmsprop",
    "adam": "adam",
    "adamw": "adamw",
}
FLAGS = ("nesterov", "centered", "amsgrad", "maximize")

# name → (K, 1, …, 1) in float64, broadcast against a (K, …) parameter: per-member coefficients such as
# 1 − β₂ᵗ are formed in double precision, as torch forms them from Python floats, then cast.
Hypers = Mapping[str, torch.Tensor]
Rule = Callable[[torch.Tensor, torch.Tensor, dict[str, Any], Hypers, int, Mapping[str, bool]], None]


def _as(param: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return value.to(param.dtype)


def _with_weight_decay(param: torch.Tensor, grad: torch.Tensor, h: Hypers) -> torch.Tensor:
    """g + wd·w (torch adds it only where wd ≠ 0; adding 0·w changes nothing)."""
    return grad + _as(param, h["weight_decay"]) * param


def _sgd(param, grad, state, h, step, flags) -> None:
    """V = μV + (1 − dampening)·g (V₁ = g); w −= lr·(g + μV if nesterov else V); μ = 0: w −= lr·g."""
    grad = _with_weight_decay(param, grad, h)
    buf = state.get("momentum_buffer")
    momentum = _as(param, h["momentum"])
    if buf is None:
        buf = grad.clone()
    else:
        buf.mul_(momentum).add_(grad * _as(param, 1 - h["dampening"]))
    state["momentum_buffer"] = buf
    direction = grad + momentum * buf if flags["nesterov"] else buf
    param.sub_(_as(param, h["lr"]) * torch.where(momentum != 0, direction, grad))


def _adagrad(param, grad, state, h, step, flags) -> None:
    """h += g²; w −= lr / (1 + (t − 1)·lr_decay) · g / (√h + eps)."""
    grad = _with_weight_decay(param, grad, h)
    if "sum" not in state:
        state["sum"] = _as(param, h["initial_accumulator_value"]).expand_as(param).clone()
    state["sum"].addcmul_(grad, grad)
    clr = _as(param, h["lr"] / (1 + (step - 1) * h["lr_decay"]))
    param.sub_(clr * grad / (state["sum"].sqrt() + _as(param, h["eps"])))


def _rmsprop(param, grad, state, h, step, flags) -> None:
    """h = αh + (1 − α)g²; w −= lr · g / (√h + eps) (centered: √(h − ḡ²); momentum: through a buffer)."""
    grad = _with_weight_decay(param, grad, h)
    square_avg = state.setdefault("square_avg", torch.zeros_like(param))
    alpha = _as(param, h["alpha"])
    square_avg.mul_(alpha).addcmul_(grad, grad * _as(param, 1 - h["alpha"]))
    if flags["centered"]:
        grad_avg = state.setdefault("grad_avg", torch.zeros_like(param))
        grad_avg.add_((grad - grad_avg) * _as(param, 1 - h["alpha"]))
        avg = (square_avg - grad_avg * grad_avg).sqrt_()
    else:
        avg = square_avg.sqrt()
    avg.add_(_as(param, h["eps"]))
    buf = state.setdefault("momentum_buffer", torch.zeros_like(param))
    buf.mul_(_as(param, h["momentum"])).add_(grad / avg)  # μ = 0: buf = g / avg, torch's plain update
    param.sub_(_as(param, h["lr"]) * buf)


def _adam(param, grad, state, h, step, flags, decoupled: bool = False) -> None:
    """m = β₁m + (1 − β₁)g; v = β₂v + (1 − β₂)g²; w −= lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)."""
    if decoupled:
        param.mul_(_as(param, 1 - h["lr"] * h["weight_decay"]))
    else:
        grad = _with_weight_decay(param, grad, h)
    exp_avg = state.setdefault("exp_avg", torch.zeros_like(param))
    exp_avg_sq = state.setdefault("exp_avg_sq", torch.zeros_like(param))
    exp_avg.add_((grad - exp_avg) * _as(param, 1 - h["beta1"]))
    exp_avg_sq.mul_(_as(param, h["beta2"])).addcmul_(grad, grad * _as(param, 1 - h["beta2"]))
    second = exp_avg_sq
    if flags["amsgrad"]:
        second = state.setdefault("max_exp_avg_sq", torch.zeros_like(param))
        torch.maximum(second, exp_avg_sq, out=second)
    step_size = _as(param, h["lr"] / (1 - h["beta1"] ** step))
    bias_correction2_sqrt = _as(param, (1 - h["beta2"] ** step).sqrt())
    denom = second.sqrt() / bias_correction2_sqrt + _as(param, h["eps"])
    param.sub_(step_size * exp_avg / denom)


RULES: dict[str, Rule] = {
    "sgd": _sgd,
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": lambda *args: _adam(*args, decoupled=True),
}


def member_hypers(option: str, configs: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """{name: tensor of K values} from the members' `optimizer` configs (torch's defaults where unset)."""
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

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["step"] += 1
            rule = RULES[RULE_OF[group["option"]]]
            for param in group["params"]:
                if param.grad is None:
                    continue
                shape = (-1,) + (1,) * (param.dim() - 1)
                h = {k: v.to(param.device).view(shape) for k, v in group["hypers"].items()}
                grad = -param.grad if group["flags"]["maximize"] else param.grad
                rule(param, grad, self.state[param], h, group["step"], group["flags"])
        return loss

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at `index` (positions in the current population)."""
        for group in self.param_groups:
            group["hypers"] = {k: v[index.cpu()] for k, v in group["hypers"].items()}
            for param in group["params"]:
                state = self.state.get(param, {})
                for key, value in state.items():
                    state[key] = value[index.to(value.device)]
