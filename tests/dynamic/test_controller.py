"""ReliabilityController: the control law (step responses, bounds, rate limits, smoothing), a
closed loop around a simulated plant, the signals (accuracy, loss, gaps), NaN handling, state,
shared memory across processes, and ``sync()`` under ``torch.distributed`` (gloo, 2 ranks), where
DifficultyTracker.sync and the per-rank mask streams are checked too."""

from __future__ import annotations

import dataclasses
import io
import math
import statistics
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from maskwise.dynamic import (
    CONTROLLER_DEFAULTS,
    ControllerDefaults,
    DifficultyTracker,
    ReliabilityController,
)

STATE_KEYS = ("rate", "smoothed", "updates")


def controller(rate: float = 0.5, **kwargs: Any) -> ReliabilityController:
    kwargs.setdefault("target", 0.6)
    kwargs.setdefault("gain", 0.5)
    kwargs.setdefault("momentum", 0.5)
    kwargs.setdefault("max_delta", 0.05)
    kwargs.setdefault("min_rate", 0.1)
    kwargs.setdefault("max_rate", 0.8)
    return ReliabilityController(rate, **kwargs)


def feed(
    c: ReliabilityController, values: list[Any], val_values: list[Any] | None = None
) -> list[float]:
    if val_values is None:
        return [c.update(v) for v in values]
    return [c.update(v, w) for v, w in zip(values, val_values)]


def increments(rates: list[float]) -> list[float]:
    return [b - a for a, b in zip(rates, rates[1:])]


def sign_changes(xs: list[float]) -> int:
    return sum(1 for a, b in zip(xs, xs[1:]) if a * b < 0)


def noisy(mean: float, sd: float, n: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (mean + sd * torch.randn(n, generator=g, dtype=torch.float64)).tolist()


def same_state(a: ReliabilityController, b: ReliabilityController) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    for k in sa:
        x, y = sa[k], sb[k]
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y:
            return False
    return True


# --------------------------------------------------------------------------------------------
# the defaults: one named set


def test_defaults_are_one_named_set() -> None:
    d = CONTROLLER_DEFAULTS
    assert isinstance(d, ControllerDefaults)
    assert (d.signal, d.target, d.direction) == ("accuracy", 0.9, "curriculum")
    assert (d.gain, d.momentum, d.max_delta) == (0.05, 0.9, 0.01)
    assert (d.rate, d.min_rate, d.max_rate) == (0.1, 0.1, 0.6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.gain = 1.0  # type: ignore[misc]
    # A controller built without settings takes exactly these.
    c = ReliabilityController(d.rate)
    explicit = ReliabilityController(d.rate, **d.kwargs())
    assert c.state_dict() == pytest.approx(explicit.state_dict(), nan_ok=True)
    for name, value in d.kwargs().items():
        assert getattr(c, name) == value, name
    # Confidence shares the accuracy target; gaps default to 0.
    assert ReliabilityController(0.2, signal="confidence").target == 0.9
    assert ReliabilityController(0.2, signal="loss_gap").target == 0.0


def test_default_rate_bounds_are_explained_when_a_rate_is_outside() -> None:
    with pytest.raises(ValueError, match=r"\[0.1, 0.6\].*0.05 given.*min_rate"):
        ReliabilityController(0.05)
    assert ReliabilityController(0.05, min_rate=0.0).rate == 0.05


# --------------------------------------------------------------------------------------------
# the control law, literally


def test_docstring_law_literal() -> None:
    c = ReliabilityController(
        0.3, signal="accuracy", target=0.7, gain=0.5, momentum=0.0, max_delta=1.0
    )
    assert c.update(0.9) == pytest.approx(0.4)  # e = 0.2, d = 0.1, curriculum: rate + d
    assert c.update(0.5) == pytest.approx(0.3)  # e = -0.2
    # The seed rule, with smoothing: s_1 = x_1, s_t = m s_{t-1} + (1 - m) x_t.
    c = ReliabilityController(
        0.5, target=0.6, gain=0.5, momentum=0.75, max_delta=1.0, direction="seed"
    )
    assert math.isnan(c.smoothed) and c.updates == 0
    c.update(1.0)
    assert c.smoothed == pytest.approx(1.0) and c.rate == pytest.approx(0.5 - 0.5 * 0.4)
    c.update(0.2)
    assert c.smoothed == pytest.approx(0.75 * 1.0 + 0.25 * 0.2)  # 0.8
    assert c.rate == pytest.approx(0.3 - 0.5 * 0.2)
    assert c.updates == 2
    # The controller stands wherever a schedule can: c(step) is the current rate.
    assert c(0) == c(10**6) == c() == c.rate


def test_update_clips_the_change_to_max_delta_literal() -> None:
    c = ReliabilityController(
        0.5, target=0.6, gain=10.0, momentum=0.0, max_delta=0.05, direction="seed"
    )
    assert c.update(1.0) == pytest.approx(0.45)
    assert c.update(0.0) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("direction", "value", "bound"),
    [
        ("seed", 0.9, "min"),  # reliable -> less masking
        ("seed", 0.2, "max"),  # unreliable -> more masking
        ("curriculum", 0.9, "max"),  # reliable -> more masking
        ("curriculum", 0.2, "min"),  # unreliable -> less masking
    ],
)
def test_step_response_is_monotone_and_saturates(direction: str, value: float, bound: str) -> None:
    c = controller(0.45, direction=direction)
    rates = [c.rate] + feed(c, [value] * 40)
    steps = increments(rates)
    if bound == "min":
        assert all(d <= 1e-12 for d in steps)
        assert steps[0] < 0
    else:
        assert all(d >= -1e-12 for d in steps)
        assert steps[0] > 0
    assert all(0.1 <= r <= 0.8 for r in rates)
    assert all(abs(d) <= 0.05 + 1e-12 for d in steps)
    # Saturated: it ends exactly on the bound and stays there.
    end = 0.1 if bound == "min" else 0.8
    assert rates[-10:] == [end] * 10
    # 0.35 to travel at <= 0.05 per update: at least 7 updates before the bound is reached.
    first = next(i for i, r in enumerate(rates) if r == end)
    assert first >= 7


def test_rate_never_leaves_the_bounds_on_wild_input() -> None:
    c = ReliabilityController(
        0.3, target=0.5, gain=100.0, momentum=0.0, max_delta=1.0, min_rate=0.2, max_rate=0.4
    )
    for v in noisy(0.5, 5.0, 200, seed=0):
        r = c.update(v)
        assert 0.2 <= r <= 0.4
    assert {round(c.update(100.0), 12), round(c.update(-100.0), 12)} == {0.2, 0.4}


def test_per_update_change_is_at_most_max_delta_and_smoothing_damps_oscillation() -> None:
    target, n = 0.6, 200
    counts: dict[float, list[int]] = {}
    for momentum in (0.0, 0.9):
        counts[momentum] = []
        for seed in range(4):
            c = ReliabilityController(
                0.45,
                target=target,
                gain=0.1,
                momentum=momentum,
                max_delta=0.02,
                min_rate=0.0,
                max_rate=0.9,
            )
            rates = [c.rate] + feed(c, noisy(target, 0.1, n, seed))
            steps = increments(rates)
            assert max(abs(d) for d in steps) <= 0.02 + 1e-12
            assert all(0.0 <= r <= 0.9 for r in rates)
            counts[momentum].append(sign_changes(steps))
    # Noise centred on the target: unsmoothed, the rate flips direction about every other
    # update; smoothed (momentum 0.9) it rarely does.
    assert sum(counts[0.0]) / 4 > 0.35 * n
    assert all(k < 0.3 * n for k in counts[0.9])
    assert sum(counts[0.9]) < 0.5 * sum(counts[0.0])


def test_noisy_input_above_target_moves_one_way() -> None:
    """Noisy reliable input: the smoothed error keeps its sign, the rate does not oscillate."""
    for seed in range(3):
        c = controller(
            0.2, direction="curriculum", momentum=0.9, max_delta=0.01, min_rate=0.0, max_rate=0.9
        )
        rates = [c.rate] + feed(c, noisy(0.75, 0.1, 60, seed))
        steps = increments(rates)
        assert sign_changes(steps) <= 2
        assert rates[-1] > rates[0] + 0.3


# --------------------------------------------------------------------------------------------
# closed loop


def plant_loop(direction: str, rate: float, n: int = 400, seed: int = 0) -> list[float]:
    """Training accuracy falls with masking: acc = 0.9 - 0.8 * rate + noise. Target 0.6, so the
    rate where accuracy meets the target is 0.375."""
    g = torch.Generator().manual_seed(seed)
    c = ReliabilityController(
        rate,
        target=0.6,
        gain=0.5,
        momentum=0.8,
        max_delta=0.02,
        direction=direction,
        min_rate=0.0,
        max_rate=0.9,
    )
    rates = []
    for _ in range(n):
        acc = 0.9 - 0.8 * c.rate + 0.03 * float(torch.randn((), generator=g))
        rates.append(c.update(acc))
    return rates


@pytest.mark.parametrize("start", [0.05, 0.8])
@pytest.mark.parametrize("seed", [0, 1])
def test_closed_loop_curriculum_settles_where_accuracy_meets_target(
    start: float, seed: int
) -> None:
    rates = plant_loop("curriculum", start, seed=seed)
    tail = rates[-100:]
    assert abs(sum(tail) / len(tail) - 0.375) < 0.03
    assert max(tail) - min(tail) < 0.15
    assert all(0.0 <= r <= 0.9 for r in rates)


def test_closed_loop_seed_direction_runs_to_a_bound() -> None:
    """The seeds' rule on a plant that masking makes worse is positive feedback: below the
    equilibrium it runs to min_rate, above it to max_rate (why direction='curriculum' exists)."""
    assert plant_loop("seed", 0.2)[-20:] == [0.0] * 20
    assert [round(r, 12) for r in plant_loop("seed", 0.5)[-20:]] == [0.9] * 20


# --------------------------------------------------------------------------------------------
# signals


def test_loss_signal_needs_a_target() -> None:
    with pytest.raises(ValueError, match="target"):
        ReliabilityController(0.3, signal="loss")


def test_loss_signal_direction() -> None:
    # Loss above the target = unreliable: the seed rule masks more, curriculum masks less.
    seed = ReliabilityController(
        0.3, signal="loss", target=2.0, gain=0.1, momentum=0.0, max_delta=1.0, direction="seed"
    )
    assert seed.update(3.0) == pytest.approx(0.4)
    assert seed.update(1.0) == pytest.approx(0.3)  # loss below target: reliable, less masking
    cur = ReliabilityController(
        0.3,
        signal="loss",
        target=2.0,
        gain=0.1,
        momentum=0.0,
        max_delta=1.0,
        direction="curriculum",
    )
    assert cur.update(3.0) == pytest.approx(0.2)
    assert cur.update(1.0) == pytest.approx(0.3)
    # Falling loss (learning) with the seed rule: the rate rises while the loss is high, then falls.
    c = ReliabilityController(
        0.3, signal="loss", target=1.0, gain=0.1, momentum=0.5, max_delta=0.05, direction="seed"
    )
    rates = feed(c, [3.0] * 10 + [0.2] * 30)
    assert rates[9] > 0.3 and rates[-1] < rates[9]


def test_confidence_signal_behaves_like_accuracy() -> None:
    a = ReliabilityController(0.4, signal="accuracy", target=0.6, momentum=0.0)
    b = ReliabilityController(0.4, signal="confidence", target=0.6, momentum=0.0)
    assert feed(a, [0.9, 0.1, 0.7]) == feed(b, [0.9, 0.1, 0.7])


@pytest.mark.parametrize("signal", ["loss_gap", "accuracy_gap"])
def test_gap_signals_raise_the_rate_as_the_gap_grows(signal: str) -> None:
    def pair(gap: float) -> tuple[float, float]:
        # loss_gap = val - train; accuracy_gap = train - val
        return (1.0, 1.0 + gap) if signal == "loss_gap" else (0.8, 0.8 - gap)

    rises = []
    for gap in (0.05, 0.1, 0.2, 0.4):
        c = ReliabilityController(0.3, signal=signal, gain=0.2, momentum=0.0, max_delta=1.0)
        rises.append(c.update(*pair(gap)) - 0.3)
    assert all(r > 0 for r in rises)
    assert rises == sorted(rises) and rises[-1] > rises[0]
    # Literal: default target 0, delta = gain * gap.
    assert rises[2] == pytest.approx(0.2 * 0.2)
    # A growing gap keeps raising the rate; a negative gap (val better than train) lowers it.
    c = ReliabilityController(0.3, signal=signal, gain=0.2, momentum=0.5, max_delta=0.05)
    rates = [c.rate] + [c.update(*pair(g)) for g in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)]
    assert all(d >= 0 for d in increments(rates)) and rates[-1] > rates[0]
    c = ReliabilityController(0.3, signal=signal, gain=0.2, momentum=0.0, max_delta=1.0)
    assert c.update(*pair(-0.1)) < 0.3


@pytest.mark.parametrize("signal", ["loss_gap", "accuracy_gap"])
def test_gap_signals_ignore_direction_and_need_val_value(signal: str) -> None:
    a = ReliabilityController(0.3, signal=signal, direction="seed")
    b = ReliabilityController(0.3, signal=signal, direction="curriculum")
    assert feed(a, [1.0, 0.5], [1.3, 0.9]) == feed(b, [1.0, 0.5], [1.3, 0.9])
    with pytest.raises(ValueError, match="val_value"):
        a.update(0.5)


def heldout(rate: float = 0.0, **kwargs: Any) -> ReliabilityController:
    kwargs.setdefault("min_rate", 0.0)
    kwargs.setdefault("momentum", 0.0)
    kwargs.setdefault("max_delta", 1.0)
    return ReliabilityController(rate, signal="heldout_gap", **kwargs)


def test_heldout_gap_law_literal() -> None:
    c = heldout(0.0, gain=0.5)
    assert c.target == 0.0 and math.isnan(c.reference)
    # No held-out loss yet: nothing to compare with, the state is left unchanged.
    assert c.update(1.0) == 0.0 and c.updates == 0
    c.set_reference(2.0)
    assert c.reference == 2.0
    assert c.update(1.0) == pytest.approx(0.25)  # gap 1 - 1/2 = 0.5; rate += 0.5 * 0.5
    assert c.update(2.5) == pytest.approx(0.125)  # gap 1 - 2.5/2 = -0.25: less masking
    assert c.update(0.5, 1.0) == pytest.approx(0.375)  # a new reference with the update
    assert c.reference == 1.0
    # direction does not apply: a wider gap always means more masking.
    a, b = heldout(0.2, gain=0.5, direction="seed"), heldout(0.2, gain=0.5)
    for x in (a, b):
        x.set_reference(torch.tensor([1.0, 3.0, float("nan")]))  # the finite mean: 2.0
    assert a.update(1.0) == b.update(1.0) == pytest.approx(0.45)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_heldout_reference_must_be_a_positive_loss(value: float) -> None:
    c = heldout(0.0)
    with pytest.raises(ValueError, match="held-out loss"):
        c.set_reference(value)
    assert math.isnan(c.reference)
    with pytest.raises(ValueError, match="heldout_gap"):
        controller(0.5).set_reference(1.0)


@pytest.mark.parametrize("base", [0.6, 1.2])
def test_heldout_gap_closed_loop_masks_only_what_closes_the_gap(base: float) -> None:
    """Plant: masking at rate r raises the training loss to base + 2 r (noise sd 0.05); the
    held-out loss is 1.0. A memorising model (base 0.6) is masked until its training loss meets
    the held-out loss (r = 0.2); a model still fitting (base 1.2 > 1.0) is never masked."""
    c = ReliabilityController(0.0, signal="heldout_gap", min_rate=0.0, max_rate=0.6, gain=0.05)
    c.set_reference(1.0)
    g = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(3000):
        train = base + 2 * c.rate + 0.05 * float(torch.randn((), generator=g))
        rates.append(c.update(train))
    late = sum(rates[-1000:]) / 1000
    if base < 1.0:
        assert late == pytest.approx(0.2, abs=0.02)
    else:
        assert max(rates) == 0.0


def test_heldout_reference_is_state() -> None:
    a = heldout(0.1, gain=0.2, momentum=0.5)
    a.set_reference(1.5)
    feed(a, [1.0, 0.9, 1.2])
    state = a.state_dict()
    assert state["reference"] == 1.5
    b = heldout(0.3)
    b.load_state_dict(state)
    assert same_state(a, b) and feed(a, [0.8, 1.0]) == feed(b, [0.8, 1.0])
    # A state saved before the reference existed loads as "not measured yet".
    del state["reference"]
    b.load_state_dict(state)
    assert math.isnan(b.reference)
    assert b.update(0.5) == state["rate"] and b.updates == state["updates"]  # no update
    a.reset()
    assert math.isnan(a.reference) and a.state_dict()["reference"] is None


def test_start_overfit_waits_for_the_heldout_loss_to_rise_literal() -> None:
    c = heldout(0.0, gain=0.5, start="overfit")
    assert not c.started and math.isnan(c.lowest_reference)
    for ref in (3.0, 2.0, 2.0):  # falling, then level: still fitting, never steered
        c.set_reference(ref)
        assert c.update(0.5) == 0.0 and c.updates == 0 and not c.started
    assert c.lowest_reference == 2.0
    c.set_reference(2.5)  # above the lowest before it: the model has begun to overfit
    assert c.started and c.lowest_reference == 2.0 and c.reference == 2.5
    assert c.update(0.5) == pytest.approx(0.4)  # gap 1 - 0.5/2.5 = 0.8; rate += 0.5 * 0.8
    c.set_reference(1.0)  # a later, lower held-out loss does not stop it
    assert c.started and c.lowest_reference == 1.0
    assert c.update(1.5) == pytest.approx(0.15)  # gap 1 - 1.5/1 = -0.5: rate -= 0.25
    # start="now" (the default) steers from the first reference, as before.
    d = heldout(0.0, gain=0.5)
    d.set_reference(2.5)
    assert d.started and d.update(0.5) == pytest.approx(0.4)


def test_start_overfit_is_state_and_resets() -> None:
    a = heldout(0.0, gain=0.5, start="overfit")
    a.set_reference(2.0)
    state = a.state_dict()
    assert (state["start"], state["started"], state["lowest_reference"]) == ("overfit", False, 2.0)
    b = heldout(0.0, gain=0.5)  # start="now": the loaded state says otherwise
    b.load_state_dict(state)
    assert b.start == "overfit" and not b.started and b.lowest_reference == 2.0
    for x in (a, b):
        x.set_reference(2.2)
    assert a.started and b.started and a.update(1.1) == b.update(1.1) == pytest.approx(0.25)
    a.reset()
    assert not a.started and math.isnan(a.lowest_reference) and a.rate == 0.0
    assert "started=False" in repr(a)
    # A state saved before `start` existed keeps the old behaviour: steering from the start.
    old = heldout(0.0).state_dict()
    for key in ("start", "started", "lowest_reference"):
        del old[key]
    c = heldout(0.0)
    c.load_state_dict(old)
    assert c.started and math.isnan(c.lowest_reference)


def test_target_best_holds_the_gap_of_the_lowest_heldout_loss_literal() -> None:
    c = heldout(0.0, gain=0.5, start="overfit", target="best")
    assert math.isnan(c.best_gap) and c.set_point == 0.0
    assert c.update(2.0) == 0.0 and c.update(1.0) == 0.0  # no reference: counted, no move
    c.set_reference(3.0)  # the lowest so far: gap 1 - mean(2, 1) / 3 = 0.5
    assert c.best_gap == pytest.approx(0.5)
    c.update(1.2)
    c.set_reference(2.0)  # a new lowest: 1 - 1.2 / 2 = 0.4
    assert c.best_gap == pytest.approx(0.4) and c.set_point == pytest.approx(0.4)
    c.update(0.5)
    c.set_reference(2.5)  # higher: started; the best gap stays the lowest's
    assert c.started and c.best_gap == pytest.approx(0.4)
    assert c.update(1.0) == pytest.approx(0.1)  # gap 1 - 1/2.5 = 0.6 > 0.4: rate += 0.5 * 0.2
    assert c.update(2.0) == 0.0  # gap 0.2 < 0.4: less masking, down to min_rate
    state = c.state_dict()
    assert state["target"] == "best" and state["best_gap"] == pytest.approx(0.4)
    d = heldout(0.0, start="overfit")
    d.load_state_dict(state)
    assert d.target == "best" and d.set_point == pytest.approx(0.4)
    assert d.update(0.5) == c.update(0.5)
    with pytest.raises(ValueError, match="target='best'.*'accuracy'"):
        ReliabilityController(0.1, target="best")
    with pytest.raises(TypeError, match="target must be a finite number"):
        heldout(0.0, target="worst")


def test_the_default_controller_is_the_gap_defaults_and_takes_overrides() -> None:
    c = ReliabilityController.default()
    assert (c.rate, c.signal, c.target, c.start) == (0.0, "heldout_gap", "best", "overfit")
    assert (c.min_rate, c.max_rate, c.gain, c.momentum, c.max_delta) == (
        0.0,
        0.5,
        CONTROLLER_DEFAULTS.gain,
        CONTROLLER_DEFAULTS.momentum,
        CONTROLLER_DEFAULTS.max_delta,
    )
    d = ReliabilityController.default(rate=0.1, min_rate=0.1, max_rate=0.3)
    assert (d.rate, d.min_rate, d.max_rate, d.target) == (0.1, 0.1, 0.3, "best")
    # The constructor's own defaults stay the accuracy curriculum (SPEC.md).
    assert ReliabilityController(0.2).signal == "accuracy"


def test_start_overfit_needs_the_heldout_signal() -> None:
    with pytest.raises(ValueError, match="heldout_gap.*'accuracy'"):
        ReliabilityController(0.1, start="overfit")
    with pytest.raises(ValueError, match="start must be one of.*'later'"):
        heldout(0.0, start="later")


# --------------------------------------------------------------------------------------------
# tensor inputs and NaN


def test_tensor_inputs_are_averaged_ignoring_nan() -> None:
    nan = float("nan")
    a = ReliabilityController(0.5, momentum=0.0, max_delta=1.0)
    b = ReliabilityController(0.5, momentum=0.0, max_delta=1.0)
    ra = a.update(torch.tensor([[1.0, nan, 0.0], [1.0, nan, nan]]))
    rb = b.update(2.0 / 3.0)
    assert a.smoothed == pytest.approx(2.0 / 3.0)
    assert ra == pytest.approx(rb)
    # bool and integer tensors (per-token correctness) count as 0 / 1.
    c = ReliabilityController(0.5, momentum=0.0)
    c.update(torch.tensor([True, False, True, True]))
    assert c.smoothed == pytest.approx(0.75)
    # Gap signals average each side.
    g = ReliabilityController(0.3, signal="loss_gap", momentum=0.0)
    g.update(torch.tensor([1.0, nan, 3.0]), torch.tensor([nan, 2.5]))
    assert g.smoothed == pytest.approx(0.5)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        torch.tensor([float("nan"), float("nan")]),
        torch.tensor([]),
        torch.full((2, 3), float("nan")),
    ],
    ids=["float", "tensor", "empty", "2d"],
)
def test_nan_only_update_leaves_the_state_unchanged(value: Any) -> None:
    c = controller(0.4)
    fresh = controller(0.4)
    assert c.update(value) == 0.4
    assert same_state(c, fresh) and c.updates == 0
    c.update(0.9)
    before = c.state_dict()
    assert c.update(value) == before["rate"]
    assert c.state_dict() == before


def test_nan_gap_update_leaves_the_state_unchanged() -> None:
    c = ReliabilityController(0.3, signal="accuracy_gap")
    c.update(0.9, 0.7)
    before = c.state_dict()
    c.update(0.9, float("nan"))
    assert c.state_dict() == before


# --------------------------------------------------------------------------------------------
# state


def test_state_dict_round_trip_continues_identically() -> None:
    values = noisy(0.6, 0.2, 30, seed=3)
    a = controller(0.3, direction="curriculum", momentum=0.7)
    feed(a, values[:10])
    state = a.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    b = ReliabilityController(0.1, signal="loss", target=5.0)  # other settings, other state
    b.load_state_dict(state)
    assert same_state(a, b)
    assert (b.signal, b.direction, b.momentum, b.updates) == ("accuracy", "curriculum", 0.7, 10)
    assert feed(a, values[10:]) == feed(b, values[10:])
    assert same_state(a, b)
    # The state dict is a snapshot, not a view of the shared tensor.
    assert state["updates"] == 10 and a.updates == 30


def test_reset_and_repr() -> None:
    c = controller(0.4)
    feed(c, [0.9, 0.9])
    c.reset()
    assert same_state(c, controller(0.4))
    assert "ReliabilityController(rate=0.4000" in repr(c)


@pytest.mark.parametrize(
    ("kwargs", "exc", "shown"),
    [
        ({"signal": "f1"}, ValueError, "'f1'"),
        ({"direction": "up"}, ValueError, "'up'"),
        ({"min_rate": 0.5, "max_rate": 0.4}, ValueError, "0.5 > 0.4"),
        ({"rate": 0.95}, ValueError, "0.95"),
        ({"rate": 1.5}, ValueError, "1.5"),
        ({"max_rate": 1.2}, ValueError, "1.2"),
        ({"momentum": 1.0}, ValueError, "1.0"),
        ({"momentum": -0.1}, ValueError, "-0.1"),
        ({"gain": -1.0}, ValueError, "-1.0"),
        ({"max_delta": 0.0}, ValueError, "0.0"),
    ],
)
def test_bad_settings_raise_with_the_value(kwargs: dict, exc: type[Exception], shown: str) -> None:
    kwargs = dict(kwargs)
    rate = kwargs.pop("rate", 0.3)
    with pytest.raises(exc, match=shown):
        ReliabilityController(rate, **kwargs)


# --------------------------------------------------------------------------------------------
# shared memory across processes


def _child(c: ReliabilityController, go: Any, done: Any, queue: Any) -> None:
    go.wait(30)
    queue.put(c.rate)  # the rate the parent set after this process was forked
    c.update(0.0)  # momentum 0, unreliable: the seed rule masks more
    done.set()


def test_shared_rate_is_seen_by_a_forked_process() -> None:
    ctx = mp.get_context("fork")
    c = ReliabilityController(
        0.3, target=0.5, gain=1.0, momentum=0.0, max_delta=1.0, direction="seed", max_rate=0.9
    )
    go, done, queue = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_child, args=(c, go, done, queue))
    p.start()
    try:
        c.update(0.6)  # after the fork: 0.3 - 0.1
        assert c.rate == pytest.approx(0.2)
        go.set()
        assert queue.get(timeout=30) == pytest.approx(0.2)
        assert done.wait(30)
    finally:
        p.join(30)
    assert p.exitcode == 0
    # ... and the child's update is seen here: 0.2 + 0.5.
    assert c.rate == pytest.approx(0.7)
    assert c.updates == 2 and c.smoothed == 0.0


def test_sync_is_a_no_op_without_distributed() -> None:
    assert not dist.is_initialized()
    c = controller(0.4)
    feed(c, [0.9, 0.8])
    before = c.state_dict()
    c.sync()
    assert c.state_dict() == before
    t = DifficultyTracker(3, momentum=0.5)
    t.update(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    loss, count = t.loss.clone(), t.count.clone()
    t.sync()
    assert torch.equal(t.loss, loss) and torch.equal(t.count, count)


# --------------------------------------------------------------------------------------------
# torch.distributed (gloo, 2 ranks)

RANK_VALUES = {0: [0.9, 0.8, 0.9], 1: [0.2, 0.3, 0.1]}
TRACKER_UPDATES = {
    0: (torch.tensor([0, 1, 1]), torch.tensor([1.0, 2.0, 4.0])),
    1: (torch.tensor([1, 2, 2, 3]), torch.tensor([6.0, 3.0, 5.0, 7.0])),
}
DIST_IDS = torch.arange(10, 60).repeat(4, 1)  # (4, 50), every row alike


def _dist_controller() -> ReliabilityController:
    return ReliabilityController(0.5, target=0.6, gain=0.5, momentum=0.5, max_delta=0.1)


def _dist_tracker() -> DifficultyTracker:
    return DifficultyTracker(5, momentum=0.5)


#: Controllers run through a synced, checkpointed trajectory on every rank: the constructor's
#: defaults (the accuracy curriculum, "default"), the held-out gap controller, and the library
#: default ``ReliabilityController.default()`` ("overfit": it waits for overfitting, then holds
#: the best gap; the ranks see their held-out losses rise at different steps).
TRAJECTORY_STEPS, RESUME_AT = 24, 10


def _trajectory_controller(name: str) -> ReliabilityController:
    if name == "default":
        return ReliabilityController(CONTROLLER_DEFAULTS.rate, **CONTROLLER_DEFAULTS.kwargs())
    if name == "overfit":  # the library default (hold): waits, then holds the best gap
        return ReliabilityController.default()
    return ReliabilityController(0.0, signal="heldout_gap", min_rate=0.0, max_rate=0.5)


#: Held-out losses of the ``overfit`` trajectory every 5 steps, per rank: rank 0's rises above
#: the lowest of both ranks (1.1, rank 1's at step 5) at step 10, rank 1's only at step 15.
OVERFIT_REFERENCES = {0: [1.3, 1.2, 1.25, 1.4, 1.5], 1: [1.2, 1.1, 1.0, 1.05, 1.1]}


def _trajectory_inputs(name: str, rank: int, step: int) -> tuple[float, float | None]:
    """(signal value, new held-out reference or None) of ``rank`` at ``step``: the ranks see
    different batches, so different values."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    u = float(torch.rand((), generator=g))
    if name == "default":
        return (0.97 if rank == 0 else 0.85) + 0.05 * u, None
    reference = (1.0 + 0.2 * rank) if step % 5 == 0 else None
    if name == "overfit":
        reference = OVERFIT_REFERENCES[rank][step // 5] if step % 5 == 0 else None
    return 0.6 + 0.2 * rank + 0.1 * u, reference


def _trajectory(name: str, rank: int, resume: bool) -> list[float]:
    """The rates of ``TRAJECTORY_STEPS`` updates, each followed by ``sync()``; with ``resume``,
    the controller is checkpointed after ``RESUME_AT`` steps and a fresh one continues from the
    saved state."""
    c, rates = _trajectory_controller(name), []
    for step in range(TRAJECTORY_STEPS):
        if resume and step == RESUME_AT:
            buffer = io.BytesIO()
            torch.save(c.state_dict(), buffer)
            buffer.seek(0)
            c = _trajectory_controller(name)
            c.load_state_dict(torch.load(buffer, weights_only=True))
        value, reference = _trajectory_inputs(name, rank, step)
        if reference is not None:
            c.set_reference(reference)
        c.update(value)
        c.sync()
        rates.append(c.rate)
    return rates


def _gloo_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from maskwise.collators import IndexedDataset, MLMCollator
    from maskwise.nn import TokenMask

    out = Path(out_dir)
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
        )
        res: dict[str, Any] = {}
        # Controllers: equal numbers of updates with different values.
        c = _dist_controller()
        feed(c, RANK_VALUES[rank])
        res["controller_before"] = c.state_dict()
        c.sync()
        res["controller_after"] = c.state_dict()
        # Only rank 0 has measured anything yet.
        c2 = _dist_controller()
        if rank == 0:
            c2.update(0.9)
        c2.sync()
        res["controller_one_rank"] = c2.state_dict()
        # The default and the gap controller: synced every step, with and without a resume.
        for name in ("default", "gap", "overfit"):
            res[f"trajectory_{name}"] = _trajectory(name, rank, resume=False)
            res[f"trajectory_{name}_resumed"] = _trajectory(name, rank, resume=True)
        # Trackers: overlapping keys.
        t = _dist_tracker()
        t.update(*TRACKER_UPDATES[rank])
        res["tracker_before"] = (t.loss.clone(), t.count.clone())
        t.sync()
        res["tracker_after"] = (t.loss.clone(), t.count.clone())
        # Masks: one seed everywhere; module and stream masks differ by rank, keyed ones do not.
        tm = TokenMask(0.5, mask_id=3, seed=0)
        res["token_mask"] = tm(DIST_IDS)[1]
        examples = [ids.tolist() for ids in DIST_IDS]
        stream = MLMCollator(mask_id=3, pad_id=0, vocab_size=100, rate=0.5, seed=0, index_key=None)
        res["stream_labels"] = stream(examples)["labels"]
        keyed = MLMCollator(mask_id=3, pad_id=0, vocab_size=100, rate=0.5, seed=0, redraw="epoch")
        res["keyed_labels"] = keyed(list(IndexedDataset(examples)))["labels"]
        # Checks inside the ranks: identical controller and tracker state everywhere.
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (res["controller_after"], res["tracker_after"]))
        assert gathered[0][0] == gathered[1][0], gathered
        assert all(torch.equal(a, b) for a, b in zip(gathered[0][1], gathered[1][1]))
        torch.save(res, out / f"rank{rank}.pt")
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    tmp = tmp_path_factory.mktemp("gloo")
    error: BaseException | None = None
    try:
        mp.spawn(_gloo_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    except BaseException as e:  # the rank's traceback is in its .err file
        error = e
    errors = {p.name: p.read_text() for p in sorted(tmp.glob("rank*.err"))}
    assert not errors and error is None, (error, errors)
    return {r: torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)}


def test_sync_averages_controllers_across_ranks(gloo_results: dict[int, dict[str, Any]]) -> None:
    before = [gloo_results[r]["controller_before"] for r in (0, 1)]
    after = [gloo_results[r]["controller_after"] for r in (0, 1)]
    # Different measurements: different states before the sync.
    assert before[1]["rate"] < 0.5 < before[0]["rate"]  # curriculum: reliable -> more
    # Identical after, equal to the mean of the ranks' states.
    assert after[0] == after[1]
    assert after[0]["rate"] == pytest.approx((before[0]["rate"] + before[1]["rate"]) / 2)
    assert after[0]["smoothed"] == pytest.approx(
        (before[0]["smoothed"] + before[1]["smoothed"]) / 2
    )
    # What the same updates give in this process (the law does not depend on distribution).
    for r in (0, 1):
        local = _dist_controller()
        feed(local, RANK_VALUES[r])
        assert local.state_dict() == before[r]


def test_sync_with_a_rank_that_has_not_measured_yet(
    gloo_results: dict[int, dict[str, Any]],
) -> None:
    s0, s1 = (gloo_results[r]["controller_one_rank"] for r in (0, 1))
    # Every rank masks at the same rate ...
    assert s0["rate"] == s1["rate"]
    # ... and holds the same smoothed signal: the one measurement made (0.9), not 0.9 / 2.
    assert s0["smoothed"] == s1["smoothed"] == pytest.approx(0.9)


def test_tracker_sync_is_a_count_weighted_merge(gloo_results: dict[int, dict[str, Any]]) -> None:
    (l0, c0), (l1, c1) = (gloo_results[r]["tracker_before"] for r in (0, 1))
    for r in (0, 1):  # same updates in this process: same pre-sync state
        t = _dist_tracker()
        t.update(*TRACKER_UPDATES[r])
        assert torch.allclose(t.loss, gloo_results[r]["tracker_before"][0])
    loss0, count0 = gloo_results[0]["tracker_after"]
    loss1, count1 = gloo_results[1]["tracker_after"]
    assert torch.equal(loss0, loss1) and torch.equal(count0, count1)
    assert count0.tolist() == [1.0, 3.0, 2.0, 1.0, 0.0]
    # key 0: rank 0 only (1.0); key 1: rank 0 ema 3.0 (2 obs) with rank 1 ema 6.0 (1 obs);
    # key 2: rank 1 only (4.0); key 3: rank 1 only (7.0); key 4: unseen (0).
    assert torch.allclose(loss0, torch.tensor([1.0, (3.0 * 2 + 6.0 * 1) / 3, 4.0, 7.0, 0.0]))
    assert torch.allclose(loss0, (l0 * c0 + l1 * c1) / (c0 + c1).clamp_min(1))


def test_masks_differ_by_rank_with_one_seed(gloo_results: dict[int, dict[str, Any]]) -> None:
    r0, r1 = gloo_results[0], gloo_results[1]
    for key in ("token_mask", "stream_labels"):
        assert r0[key].shape == r1[key].shape
        assert not torch.equal(r0[key], r1[key]), key
    # Rank 0 draws what a single process draws with that seed.
    from maskwise.nn import TokenMask

    assert torch.equal(r0["token_mask"], TokenMask(0.5, mask_id=3, seed=0)(DIST_IDS)[1])
    # Keyed masks are a pure function of (seed, epoch, example index): the same on every rank.
    assert torch.equal(r0["keyed_labels"], r1["keyed_labels"])


def _simulated_sync_trajectory(name: str, world: int = 2) -> list[float]:
    """The synced trajectory computed in one process: one controller per rank, their states
    averaged after every update as ``sync()`` documents (rate, smoothed signal and reference
    averaged over the ranks that have them; updates: the largest; the lowest reference: the
    lowest; started once any rank has; the training-loss sums and counts: averaged;
    the best gap: averaged over the ranks that have it)."""
    cs = [_trajectory_controller(name) for _ in range(world)]
    rates = []
    for step in range(TRAJECTORY_STEPS):
        for rank, c in enumerate(cs):
            value, reference = _trajectory_inputs(name, rank, step)
            if reference is not None:
                c.set_reference(reference)
            c.update(value)
        states = [c.state_dict() for c in cs]
        refs = [st["reference"] for st in states if st["reference"] is not None]
        lows = [st["lowest_reference"] for st in states if st["lowest_reference"] is not None]
        gaps = [st["best_gap"] for st in states if st["best_gap"] is not None]
        merged = dict(
            states[0],
            rate=sum(st["rate"] for st in states) / world,
            smoothed=statistics.fmean(st["smoothed"] for st in states if st["updates"] > 0)
            if any(st["updates"] > 0 for st in states)
            else math.nan,
            reference=sum(refs) / len(refs) if refs else None,
            updates=max(st["updates"] for st in states),
            lowest_reference=min(lows) if lows else None,
            started=any(st["started"] for st in states),
            train_loss_sum=sum(st["train_loss_sum"] for st in states) / world,
            train_loss_count=sum(st["train_loss_count"] for st in states) / world,
            best_gap=sum(gaps) / len(gaps) if gaps else None,
        )
        for c in cs:
            c.load_state_dict(merged)
        rates.append(cs[0].rate)
    return rates


@pytest.mark.parametrize("name", ["default", "gap", "overfit"])
def test_synced_controller_resumes_with_the_same_rates(
    gloo_results: dict[int, dict[str, Any]], name: str
) -> None:
    runs = [gloo_results[r][f"trajectory_{name}"] for r in (0, 1)]
    resumed = [gloo_results[r][f"trajectory_{name}_resumed"] for r in (0, 1)]
    assert runs[0] == runs[1]  # every rank masks at the same rate, every step
    assert resumed[0] == runs[0] and resumed[1] == runs[1]  # a checkpoint changes nothing
    assert runs[0] == pytest.approx(_simulated_sync_trajectory(name), abs=1e-12)
    assert len(set(runs[0])) > 5  # the rates moved: the trajectory tests something
    if name == "overfit":  # no masking until a held-out loss rose (rank 0's, at step 10)
        assert runs[0][:10] == [0.0] * 10 and runs[0][10] > 0.0
