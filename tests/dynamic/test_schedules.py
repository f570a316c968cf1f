"""Rate schedules: literal values, exact endpoints, clipping beyond the horizon, the MLM decays
of Yang et al. (2022), pickling, state dicts (and those saved by earlier versions) and argument
errors."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwise.dynamic import (
    Schedule,
    constant,
    cosine,
    cosine_decay,
    linear,
    linear_decay,
    step,
)

# One instance of every schedule, with settings whose values are easy to state.
SCHEDULES = {
    "constant": lambda: constant(0.15),
    "linear": lambda: linear(0.1, 0.5, 100),
    "cosine": lambda: cosine(0.4, 0.0, 100),
    "step": lambda: step([0.1, 0.2, 0.3], [100, 200]),
    "cosine_decay": lambda: cosine_decay(0.32, 1000),
    "linear_decay": lambda: linear_decay(0.3, 1000),
}
PROBE_STEPS = [-5, 0, 1, 7, 50, 99, 100, 101, 250, 999, 1000, 1001, 10**6]


# --------------------------------------------------------------------------------------------
# literal values


def test_constant() -> None:
    s = constant(0.15)
    assert [s(t) for t in (0, 1, 10**9)] == [0.15, 0.15, 0.15]


def test_linear_values_and_clipping() -> None:
    s = linear(0.1, 0.5, 100)
    assert s(0) == 0.1
    assert s(25) == 0.2
    assert s(50) == 0.3
    assert s(75) == 0.4
    assert s(100) == 0.5
    # Clipped on both sides of [0, steps].
    assert s(-10) == 0.1
    assert s(101) == 0.5 and s(10**6) == 0.5
    # Decreasing direction too.
    d = linear(0.5, 0.1, 4)
    assert [d(t) for t in range(6)] == [0.5, 0.4, 0.3, 0.2, 0.1, 0.1]


def test_cosine_values_and_clipping() -> None:
    s = cosine(0.4, 0.0, 100)
    assert s(0) == pytest.approx(0.4, abs=1e-12)
    # end + (start - end) * (1 + cos(pi t / T)) / 2
    assert s(25) == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)), abs=1e-12)  # 0.3414...
    assert s(25) == pytest.approx(0.341421356237, abs=1e-9)
    assert s(50) == pytest.approx(0.2, abs=1e-12)
    assert s(75) == pytest.approx(0.058578643763, abs=1e-9)
    assert s(100) == pytest.approx(0.0, abs=1e-12)
    assert s(10**6) == s(100)
    assert s(-3) == s(0)
    # Rising cosine: slow, fast, slow.
    r = cosine(0.1, 0.5, 10)
    values = [r(t) for t in range(11)]
    assert values == sorted(values)
    increments = [b - a for a, b in zip(values, values[1:])]
    assert increments[4] > increments[0] and increments[4] > increments[-1]


def test_step_values() -> None:
    s = step([0.1, 0.2, 0.3], [100, 200])
    assert [s(t) for t in (-1, 0, 99, 100, 199, 200, 10**6)] == [0.1, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3]
    # No milestones: a constant.
    assert step([0.4], [])(123) == 0.4


def test_cosine_decay_starts_at_its_argument() -> None:
    """From start to floor along half a cosine: cosine_decay(0.3, T) starts at 0.3."""
    s = cosine_decay(0.3, 1000)
    assert s(0) == 0.3 and s(-7) == 0.3
    assert s(1000) == 0.02 and s(5000) == 0.02  # the floor, beyond the horizon too
    assert s(500) == pytest.approx(0.16)
    for t in (1, 123, 250, 750, 999):
        assert s(t) == pytest.approx(0.02 + 0.28 * (1 + math.cos(math.pi * t / 1000)) / 2)
    values = [s(t) for t in range(0, 1001, 50)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert cosine_decay(0.15, 10, floor=0.0)(10) == 0.0
    # The same schedule as cosine(start, floor, steps).
    c = cosine(0.3, 0.02, 1000)
    assert all(s(t) == c(t) for t in PROBE_STEPS)


def test_cosine_decay_reaches_the_published_formula() -> None:
    """Yang et al. (2022): p_t = p (1 + cos(pi t / T)) + 0.02, i.e. cosine_decay(2p + 0.02, T)."""
    p, T = 0.15, 1000
    s = cosine_decay(2 * p + 0.02, T)
    for t in (0, 1, 123, 250, 500, 750, 999, 1000, 5000):
        want = p * (1 + math.cos(math.pi * min(t, T) / T)) + 0.02
        assert s(t) == pytest.approx(want, abs=1e-12)
    assert (s(0), round(s(500), 12), s(1000)) == (0.32, 0.17, 0.02)


def test_linear_decay_starts_at_its_argument_and_reaches_the_published_formula() -> None:
    """start (1 - t / T); Yang et al.'s 2p (1 - t / T) is linear_decay(2p, T)."""
    p, T = 0.15, 1000
    s = linear_decay(2 * p, T)
    for t in (0, 1, 123, 250, 500, 750, 999, 1000):
        assert s(t) == pytest.approx(2 * p * (1 - t / T), abs=1e-12)
    assert (s(0), s(500), s(1000)) == (0.3, 0.15, 0.0)
    assert s(1001) == 0.0 and s(10**6) == 0.0
    assert s(-1) == 0.3
    assert linear_decay(0.6, 10)(0) == 0.6
    assert linear_decay(0.6, 10, floor=0.1)(10) == 0.1


@pytest.mark.parametrize(
    ("make", "old_state"),
    [
        (
            lambda: cosine_decay(0.32, 1000),
            {"kind": "cosine_decay", "rate": 0.15, "steps": 1000, "floor": 0.02},
        ),
        (lambda: linear_decay(0.3, 1000), {"kind": "linear_decay", "rate": 0.15, "steps": 1000}),
    ],
)
def test_a_state_saved_by_an_earlier_version_keeps_its_meaning(make, old_state: dict) -> None:
    """Earlier versions took p (cosine_decay(0.15, T) started at 0.32): their checkpoints
    resume the same schedule."""
    want = make()
    got = cosine_decay(0.5, 7) if old_state["kind"] == "cosine_decay" else linear_decay(0.5, 7)
    got.load_state_dict(old_state)
    assert [got(t) for t in PROBE_STEPS] == pytest.approx([want(t) for t in PROBE_STEPS])
    assert got.state_dict() == pytest.approx(want.state_dict())


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_rates_are_probabilities(name: str) -> None:
    s = SCHEDULES[name]()
    assert isinstance(s, Schedule)
    for t in PROBE_STEPS:
        r = s(t)
        assert isinstance(r, float)
        assert 0.0 <= r <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(0, 1),
    end=st.floats(0, 1),
    steps=st.integers(1, 10_000),
    t=st.integers(-100, 20_000),
    kind=st.sampled_from(["linear", "cosine"]),
)
def test_interpolating_schedules_stay_between_start_and_end(
    start: float, end: float, steps: int, t: int, kind: str
) -> None:
    s = linear(start, end, steps) if kind == "linear" else cosine(start, end, steps)
    lo, hi = min(start, end), max(start, end)
    assert lo - 1e-9 <= s(t) <= hi + 1e-9
    assert s(max(t, steps)) == end  # the endpoints exactly
    assert s(min(t, 0)) == start


# --------------------------------------------------------------------------------------------
# pickling and state


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_pickle_round_trip_gives_equal_values(name: str) -> None:
    s = SCHEDULES[name]()
    clone = pickle.loads(pickle.dumps(s))
    assert type(clone) is type(s)
    assert clone is not s
    assert [clone(t) for t in PROBE_STEPS] == [s(t) for t in PROBE_STEPS]
    assert clone.state_dict() == s.state_dict()


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_state_dict_round_trip(name: str) -> None:
    s = SCHEDULES[name]()
    state = s.state_dict()
    assert state["kind"] == s.kind
    # The state survives torch.save / torch.load with weights_only (plain Python values).
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    # A schedule of the same kind with other settings takes the saved ones.
    other = {
        "constant": lambda: constant(0.9),
        "linear": lambda: linear(0.9, 0.8, 7),
        "cosine": lambda: cosine(0.9, 0.8, 7),
        "step": lambda: step([0.9, 0.8], [3]),
        "cosine_decay": lambda: cosine_decay(0.4, 7, floor=0.1),
        "linear_decay": lambda: linear_decay(0.4, 7),
    }[name]()
    assert [other(t) for t in PROBE_STEPS] != [s(t) for t in PROBE_STEPS]
    other.load_state_dict(state)
    assert [other(t) for t in PROBE_STEPS] == [s(t) for t in PROBE_STEPS]
    assert other.state_dict() == s.state_dict()


def test_state_dict_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="cosine"):
        linear(0.1, 0.2, 10).load_state_dict(cosine(0.1, 0.2, 10).state_dict())


def test_repr_names_the_settings() -> None:
    assert repr(linear(0.1, 0.5, 100)) == "linear(start=0.1, end=0.5, steps=100)"


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("make", "exc", "shown"),
    [
        (lambda: constant(1.5), ValueError, "1.5"),
        (lambda: constant(-0.1), ValueError, "-0.1"),
        (lambda: constant(float("nan")), ValueError, "nan"),
        (lambda: constant("0.1"), TypeError, "'0.1'"),
        (lambda: constant(True), TypeError, "True"),
        (lambda: linear(0.1, 1.2, 10), ValueError, "1.2"),
        (lambda: linear(0.1, 0.2, 0), ValueError, "0"),
        (lambda: linear(0.1, 0.2, -5), ValueError, "-5"),
        (lambda: linear(0.1, 0.2, 2.5), ValueError, "2.5"),
        (lambda: cosine(0.1, 0.2, True), ValueError, "True"),
        (lambda: cosine(-1.0, 0.2, 10), ValueError, "-1.0"),
        (lambda: step([0.1, 0.2], [10, 20]), ValueError, "2 rates, 2 milestones"),
        (lambda: step([0.1, 0.2, 0.3], [20, 10]), ValueError, r"\[20, 10\]"),
        (lambda: step([0.1, 2.0], [10]), ValueError, "2.0"),
        (lambda: cosine_decay(0.15, 0), ValueError, "0"),
        (lambda: cosine_decay(1.5, 10), ValueError, "1.5"),
        (lambda: cosine_decay(0.15, 10, floor=2.0), ValueError, "2.0"),
        (lambda: cosine_decay(0.01, 10), ValueError, r"floor must be <= start \(0.02 > 0.01"),
        (lambda: linear_decay(0.15, 1.0), ValueError, "1.0"),
        (lambda: linear_decay(-0.15, 10), ValueError, "-0.15"),
        (lambda: linear_decay(0.1, 10, floor=0.2), ValueError, r"0.2 > 0.1"),
    ],
)
def test_bad_settings_raise_with_the_value(make, exc: type[Exception], shown: str) -> None:
    with pytest.raises(exc, match=shown):
        make()
