"""Property-based: a few hundred drawn override lists — valid values, wrong types, out-of-range numbers,
unknown choices, conflicting combinations — and the validator's verdict always matches the rules."""

from __future__ import annotations

import pytest
from hydra.errors import MissingConfigException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from trainlab.config import validate
from trainlab.errors import ConfigError


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def number(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# key -> (strategy of allowed values, strategy of values that must be refused)
VALUES = {
    "optimizer.lr": (number(1e-6, 10), number(-10, 0) | st.just("fast")),
    "regularizer.l1": (number(0, 1), number(-1, -1e-6)),
    "regularizer.l2": (number(0, 1), number(-1, -1e-6) | st.just("[1]")),
    "model.dropout": (number(0, 0.95), number(1, 5) | number(-1, -1e-6)),
    "data.batch_size": (st.integers(1, 512), st.integers(-5, 0) | st.just("big") | number(1.5, 9.5)),
    "data.val_size": (number(0.05, 0.5), st.just(0) | number(-2, -0.01)),
    "seed": (st.integers(0, 2**31), st.just("abc") | number(0.5, 0.9)),
}
MLP_ONLY = {
    "model.hidden": (
        st.lists(st.integers(1, 64), min_size=1, max_size=4),
        st.lists(st.integers(-3, 0), min_size=1, max_size=3),  # [] is valid: no hidden layer
    ),
}


def render(value: object) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


@st.composite
def override_lists(draw: st.DrawFn) -> tuple[list[str], set[str]]:
    """Overrides plus the keys among them that must be refused (empty: the whole list is valid)."""
    # model=custom needs a user's class (tests/test_models.py, tests/test_config.py run it).
    model = draw(st.sampled_from([option for option in options("model") if option != "custom"]))
    norm = draw(st.sampled_from(options("norm")))
    overrides, refused = [f"model={model}", f"norm={norm}"], set()
    if model == "mlp" and norm == "instance":
        refused.add("norm=instance")
    table = VALUES | (MLP_ONLY if model == "mlp" else {})
    for key in draw(st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True)):
        good, bad = table[key]
        if draw(st.booleans()):
            value = draw(bad)
            refused.add(key)
        else:
            value = draw(good)
        overrides.append(f"{key}={render(value)}")
    return overrides, refused


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=override_lists())
def test_validation_accepts_exactly_the_allowed_overrides(compose, case):
    overrides, refused = case
    cfg = compose(*overrides)
    if not refused:
        validate(cfg)
        return
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    message = str(caught.value)
    assert "\n" not in message
    assert any(message.startswith(key) for key in refused), (message, refused)


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
