"""The study's formulas (shared/EXPERIMENTS.md), checked numerically on toy problems."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from trainlab.init import initialize
from trainlab.models.layers import conv_output_size
from trainlab.norms import make_norm
from trainlab.optim import build_optimizer
from trainlab.regularizers import penalized_weights, weight_penalty, zero_fraction


def init_cfg(name: str, **keys) -> OmegaConf:
    return OmegaConf.create({"name": name, "distribution": "normal", "fan": "in", **keys})


@pytest.mark.parametrize(
    ("name", "expected"), [("xavier", lambda n: math.sqrt(1 / n)), ("he", lambda n: math.sqrt(2 / n))]
)
@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_xavier_and_he_use_the_reports_fan_in_std(name, expected, distribution):
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(400, 600))
    initialize(layer, init_cfg(name, distribution=distribution))
    assert layer[0].weight.std().item() == pytest.approx(expected(400), rel=0.02)
    assert torch.count_nonzero(layer[0].bias) == 0


def test_fan_of_a_conv_weight_counts_channels_times_kernel():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(16, 300, 5))
    initialize(conv, init_cfg("he"))
    assert conv[0].weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 25)), rel=0.02)


def test_glorot_average_fan_option():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(300, 500))
    initialize(layer, init_cfg("xavier", fan="avg"))
    assert layer[0].weight.std().item() == pytest.approx(math.sqrt(1 / 400), rel=0.02)


def test_normal_init_with_std_zero_makes_every_unit_identical():
    layer = nn.Sequential(nn.Linear(10, 5), nn.Sigmoid(), nn.Linear(5, 3))
    initialize(layer, init_cfg("normal", std=0.0))
    out = layer[:2](torch.randn(4, 10))
    assert torch.allclose(out, out[:, :1].expand_as(out))


def norm(name: str, features: int, conv: bool) -> nn.Module:
    return make_norm(OmegaConf.create({"name": name, "eps": 1e-5, "momentum": 0.1}), features, conv)


def test_batch_norm_normalises_each_feature_over_the_batch_with_biased_variance():
    x = torch.randn(32, 6) * 3 + 2
    y = norm("batch", 6, conv=False).train()(x)
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(y, expected, atol=1e-5)


def test_layer_norm_normalises_each_sample_over_channels_height_and_width():
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    y = norm("layer", 3, conv=True)(x)
    flat = y.reshape(4, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(flat.var(1, unbiased=False), torch.ones(4), atol=1e-3)


def test_instance_norm_normalises_each_sample_and_channel():
    x = torch.randn(4, 3, 6, 6) * 5 - 2
    y = norm("instance", 3, conv=True)(x)
    per = y.reshape(4, 3, -1)
    assert torch.allclose(per.mean(-1), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(per.var(-1, unbiased=False), torch.ones(4, 3), atol=1e-3)


def test_elastic_net_penalty_and_its_gradient():
    w = torch.tensor([[1.5, -2.0], [0.0, 0.5]], requires_grad=True)
    penalty = weight_penalty([w], l1=0.3, l2=0.2)
    assert penalty.item() == pytest.approx(0.3 * 4.0 + 0.5 * 0.2 * (2.25 + 4 + 0.25))
    penalty.backward()
    assert torch.allclose(w.grad, 0.3 * torch.sign(w.detach()) + 0.2 * w.detach())


def test_penalty_covers_weights_not_biases_or_norm_parameters():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    assert {id(p) for p in penalized_weights(model)} == {id(model[0].weight), id(model[3].weight)}


def steps(cfg: dict, grads: list[float], w0: float = 1.0) -> list[float]:
    """Run the configured optimiser on one scalar weight with the given gradient sequence."""
    w = nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    optimizer = build_optimizer(OmegaConf.create(cfg), [w])
    path = []
    for g in grads:
        w.grad = torch.tensor([g], dtype=torch.float64)
        optimizer.step()
        path.append(w.item())
    return path


GRADS = [0.5, -1.0, 2.0, 0.25, 1.5]


def test_momentum_follows_v_equals_mu_v_minus_lr_g():
    lr, mu, w, v, expected = 0.1, 0.9, 1.0, 0.0, []
    for g in GRADS:
        v = mu * v - lr * g
        w += v
        expected.append(w)
    assert steps({"name": "momentum", "lr": lr, "momentum": mu}, GRADS) == pytest.approx(expected)


def test_adagrad_follows_the_reports_equation():
    lr, theta, w, h, expected = 0.1, 1e-7, 1.0, 1e-7, []
    for g in GRADS:
        h += g * g
        w -= lr * g / (math.sqrt(h) + theta)
        expected.append(w)
    cfg = {"name": "adagrad", "lr": lr, "eps": theta, "initial_accumulator_value": theta}
    assert steps(cfg, GRADS) == pytest.approx(expected, rel=1e-9)


def test_rmsprop_follows_the_reports_equation():
    lr, alpha, eps, w, h, expected = 0.01, 0.99, 1e-7, 1.0, 0.0, []
    for g in GRADS:
        h = alpha * h + (1 - alpha) * g * g
        w -= lr * g / (math.sqrt(h) + eps)
        expected.append(w)
    assert steps({"name": "rmsprop", "lr": lr, "alpha": alpha, "eps": eps}, GRADS) == pytest.approx(
        expected, rel=1e-9
    )


def test_conv_output_size_formula():
    assert conv_output_size(6, kernel=2, stride=1, padding=1) == 7
    assert conv_output_size(28, kernel=5) == 24
    assert conv_output_size(32, kernel=3, padding=1) == 32


def test_sigmoid_derivative_peaks_at_a_quarter():
    x = torch.linspace(-10, 10, 2001, requires_grad=True)
    torch.sigmoid(x).sum().backward()
    assert x.grad.max().item() == pytest.approx(0.25)
    assert x[x.grad.argmax()].item() == pytest.approx(0.0, abs=1e-6)


def test_zero_fraction_counts_weights_below_the_threshold_over_all_penalised_weights():
    weights = [torch.tensor([[0.0, 5e-4], [-2e-3, 1.0]]), torch.tensor([-9e-4, 0.5, 0.1, -1e-3])]
    flat = [w.flatten() for w in weights]
    assert zero_fraction(flat).item() == pytest.approx(3 / 8)  # 0, 5e-4, -9e-4; not |w| = 1e-3
    # A population's (K, n) weights: one share per member.
    stacked = [torch.stack([w, w.abs() + 1]) for w in flat]
    assert zero_fraction(stacked).tolist() == pytest.approx([3 / 8, 0.0])
