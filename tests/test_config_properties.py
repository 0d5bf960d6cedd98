"""Property-based: a few hundred drawn override lists — valid values, wrong types, out-of-range numbers,
unknown choices, conflicting combinations, Trainer arguments, shapes that do not fit the images — and the
validator's verdict always matches the rules; a refused list reaches the user as one line, exit 2, no run."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import MissingConfigException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from trainlab.cli.main import main
from trainlab.config import validate
from trainlab.errors import ConfigError, Stop


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def number(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def one_of(*values: object) -> st.SearchStrategy:
    return st.sampled_from(values)


# key -> (strategy of allowed values, strategy of values that must be refused)
VALUES = {
    "optimizer.lr": (number(1e-6, 10), number(-10, 0) | st.just("fast")),
    "regularizer.l1": (number(0, 1), number(-1, -1e-6)),
    "regularizer.l2": (number(0, 1), number(-1, -1e-6) | st.just("[1]")),
    "model.dropout": (number(0, 0.95), number(1, 5) | number(-1, -1e-6)),
    "data.batch_size": (st.integers(1, 512), st.integers(-5, 0) | st.just("big") | number(1.5, 9.5)),
    "data.val_size": (number(0.05, 0.5), st.just(0) | number(-2, -0.01)),
    "seed": (st.integers(0, 2**31), st.just("abc") | number(0.5, 0.9)),
    # The metrics a run logs (trainlab.module.logged_metrics), and names it does not.
    "optimized_metric": (
        one_of("val/acc", "val/loss", "test/acc", "train/penalty", "weights/zero_fraction"),
        one_of("val/accuracy", "acc", "test/penalty", "curve/train/acc"),
    ),
}
# Accelerators this machine lacks: refusing them is the machine's real condition, not a mock.
MISSING = (
    ["xyz"]
    + ["gpu", "cuda"] * (not torch.cuda.is_available())
    + ["mps"] * (not torch.backends.mps.is_available())
)
# Lightning judges most of these when a Trainer is built, trainlab's rules the rest.
TRAINER = {
    "trainer.accelerator": (one_of("auto", "cpu"), one_of(*MISSING)),
    "trainer.devices": (one_of(1, "auto"), one_of(0, -3, "abc")),
    "trainer.strategy": (one_of("auto", "ddp"), one_of("nope", "ddp_sideways")),
    "trainer.precision": (one_of(32, "32-true", "16-mixed", "bf16-mixed", "64-true"), one_of("x", 8, "fp8")),
    "trainer.max_epochs": (st.integers(-1, 5), one_of("abc", -5, 1.5)),
    "trainer.accumulate_grad_batches": (st.integers(1, 4), st.integers(-2, 0)),
    "trainer.val_check_interval": (one_of(0.5, 1.0, 10), one_of(0, 2.5, -1)),
    "trainer.limit_train_batches": (one_of(0.5, 10), one_of(-1, 1.5)),
    "trainer.gradient_clip_algorithm": (one_of("value", "norm"), one_of("x")),
}
MLP_ONLY = {
    "model.hidden": (
        st.lists(st.integers(1, 64), min_size=1, max_size=4),
        st.lists(st.integers(-3, 0), min_size=1, max_size=3),  # [] is valid: no hidden layer
    ),
}
# Shapes: simple_cnn's may not fit the image (checked against `fits` below); the others always fit.
SIMPLE_CNN = {
    "model.kernel_size": st.integers(1, 40),
    "model.stride": st.integers(1, 6),
    "model.padding": st.integers(0, 6),
    "model.pool": st.integers(1, 8),
}
WIDTHS = {  # small, to keep each build cheap
    "simple_cnn": {"model.filters": st.integers(1, 16), "model.hidden": st.integers(1, 32)},
    "cifar_cnn": {"model.filters": st.integers(1, 16), "model.hidden": st.integers(1, 32)},
    "alexnet": {
        "model.channels": st.lists(st.integers(1, 16), min_size=1, max_size=6),
        "model.hidden": st.lists(st.integers(1, 32), min_size=1, max_size=3),
    },
}
IMAGE_SIZE = {"mnist": 28, "cifar10": 32}


def render(value: object) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def fits(size: int, shape: dict[str, int], norm: str, batch: object) -> bool:
    """Whether simple_cnn trains on size×size images: OH = (H + 2P − K) // S + 1 pixels after the conv, at
    least one window of the pool, more than one value per channel for batch norm (the batch's pixels) and
    instance norm (one sample's)."""
    kernel, stride, padding, pool = (
        shape[f"model.{k}"] for k in ("kernel_size", "stride", "padding", "pool")
    )
    if size + 2 * padding < kernel:
        return False
    out = (size + 2 * padding - kernel) // stride + 1
    values = {"instance": out * out, "batch": (batch if isinstance(batch, int) else 2) * out * out}
    return out >= pool and values.get(norm, 2) > 1


@st.composite
def override_lists(draw: st.DrawFn) -> tuple[list[str], set[str]]:
    """Overrides plus the keys among them that must be refused (empty: the whole list is valid)."""
    # model=custom needs a user's class (tests/test_models.py, tests/test_config.py run it).
    model = draw(st.sampled_from([option for option in options("model") if option != "custom"]))
    norm = draw(st.sampled_from(options("norm")))
    data = draw(st.sampled_from(sorted(IMAGE_SIZE)))
    overrides, refused = [f"model={model}", f"norm={norm}", f"data={data}"], set()
    if model == "mlp" and norm == "instance":
        refused.add("norm=instance")
    table = VALUES | TRAINER | (MLP_ONLY if model == "mlp" else {})
    values = {}
    for key in draw(st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True)):
        good, bad = table[key]
        if draw(st.booleans()):
            values[key] = draw(bad)
            refused.add(key)
        else:
            values[key] = draw(good)
    values |= {key: draw(widths) for key, widths in WIDTHS.get(model, {}).items()}
    if model == "simple_cnn":
        shape = {key: draw(strategy) for key, strategy in SIMPLE_CNN.items()}
        values |= shape
        if not fits(IMAGE_SIZE[data], shape, norm, values.get("data.batch_size", 100)):
            refused |= {*shape, f"norm={norm}", "data.batch_size"}
    elif model == "mlp" and norm == "batch" and values.get("data.batch_size") == 1:
        refused |= {"norm=batch", "data.batch_size"}
    overrides += [f"{key}={render(value)}" for key, value in values.items()]
    return overrides, refused


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=override_lists())
def test_validation_accepts_exactly_the_allowed_overrides(compose, tmp_path, case):
    overrides, refused = case
    cfg = compose(f"paths.root_dir={tmp_path}", *overrides)
    if not refused:
        validate(cfg)
        return
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    message = str(caught.value)
    assert "\n" not in message
    assert any(message.startswith(key) for key in refused), (message, refused)
    # What the user sees: the run's entry point stops with the line (trainlab.cli.fast_exit prints it) and
    # exit status 2, before any MLflow store exists.
    with pytest.raises(Stop) as stopped:
        main(cfg)
    assert stopped.value.code == 2 and str(stopped.value.error) == message
    assert not (tmp_path / "mlruns").exists()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    group=st.sampled_from(["model", "optimizer", "norm", "init", "regularizer", "data"]),
    name=st.text("xyzq_", min_size=3),
)
def test_unknown_choices_name_the_group(compose, group, name):
    with pytest.raises(MissingConfigException, match=f"{group}/{name}"):
        compose(f"{group}={name}")


@pytest.mark.parametrize(
    "override",
    ["data.batch_size=big", "model.hidden=[0]", "regularizer.l1=-1", "model.dropout=1", "optimizer.lr=0"],
)
def test_user_mistakes_reach_the_cli_user_as_one_line_not_a_traceback(run_cli, override):
    result = run_cli(override, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {override.split('=')[0]}=")
