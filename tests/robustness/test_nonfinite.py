"""Non-finite values never poison dynamic state and are never silently absorbed.

Decisions, input by input:

* ``DifficultyTracker.update``: a non-finite loss (NaN, or +-inf from a -inf logit at the label)
  is ignored like a NaN one; the other losses of the batch still count.
* ``ReliabilityController.update``: a non-finite signal (a float, or entries of a tensor of
  per-position values) is ignored like NaN; ``gain``, ``target`` and ``max_delta`` must be finite
  numbers (a ``ValueError`` / ``TypeError`` naming the value otherwise).
* ``sample_mask(weights=...)``: on CPU, NaN, infinite or negative weights raise a ``ValueError``
  showing them; on other devices (where reading them would sync) such positions get weight 0
  and are never chosen.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwise.dynamic import DifficultyTracker, ReliabilityController, feed, reliability
from maskwise.functional import mask_tokens, mask_words, sample_mask

NON_FINITE = [math.nan, math.inf, -math.inf]

# --------------------------------------------------------------------------------------------
# DifficultyTracker


def test_an_infinite_loss_from_a_minus_inf_logit_is_ignored() -> None:
    logits = torch.zeros(4, 6)
    logits[1, 2] = -math.inf  # e.g. a vocabulary-masked logit at the label
    labels = torch.tensor([0, 2, 3, 4])
    r = reliability(logits, labels)
    assert math.isinf(float(r.loss[1]))
    t = DifficultyTracker(6, momentum=0.5)
    feed(None, t, reliability=r, keys=labels)
    assert torch.isfinite(t.loss).all()
    assert t.count.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]  # key 2's infinite loss: ignored
    w = t.weights(torch.arange(6))
    assert torch.isfinite(w).all() and (w > 0).all()


@pytest.mark.parametrize("bad", NON_FINITE)
def test_tracker_ignores_non_finite_losses(bad: float) -> None:
    t = DifficultyTracker(3, momentum=0.5)
    t.update(torch.tensor([0, 1, 1, 2]), torch.tensor([1.0, 2.0, bad, bad]))
    assert t.loss.tolist() == [1.0, 2.0, 0.0]
    assert t.count.tolist() == [1.0, 1.0, 0.0]
    t.update(torch.tensor([0, 0]), torch.tensor([bad, 3.0]))
    assert t.loss.tolist() == [2.0, 2.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(
    losses=st.lists(
        st.one_of(st.floats(0, 50), st.sampled_from(NON_FINITE)), min_size=1, max_size=30
    ),
    seed=st.integers(0, 2**16),
)
def test_tracker_state_and_weights_stay_finite(losses: list[float], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    t = DifficultyTracker(5, momentum=0.9)
    for _ in range(3):
        keys = torch.randint(-1, 6, (len(losses),), generator=g)
        t.update(keys, torch.tensor(losses))
    assert torch.isfinite(t.loss).all() and torch.isfinite(t.count).all()
    w = t.weights(torch.arange(5))
    assert torch.isfinite(w).all() and (w > 0).all()
    # The weights still drive sample_mask: a row of 5 positions, rate 0.4, exactly 2 masked.
    m = sample_mask(torch.ones(1, 5, dtype=torch.bool), 0.4, exact=True, weights=w[None])
    assert int(m.sum()) == 2


# --------------------------------------------------------------------------------------------
# sample_mask weights


@pytest.mark.parametrize("bad", [*NON_FINITE, -1.0])
@pytest.mark.parametrize("exact", [False, True])
def test_sample_mask_rejects_non_finite_or_negative_weights_on_cpu(bad: float, exact: bool) -> None:
    valid = torch.ones(2, 4, dtype=torch.bool)
    weights = torch.ones(2, 4)
    weights[1, 2] = bad
    with pytest.raises(ValueError, match=rf"weights.*{bad}"):
        sample_mask(valid, 0.5, exact=exact, weights=weights)
    # The maskers that take weights say the same.
    with pytest.raises(ValueError, match=rf"weights.*{bad}"):
        mask_tokens(torch.arange(8).view(2, 4), 0.5, exact=exact, weights=weights)
    with pytest.raises(ValueError, match=rf"weights.*{bad}"):
        mask_words(torch.arange(8).view(2, 4), 0.5, exact=exact, weights=weights)


def test_bad_weights_on_padding_are_still_refused() -> None:
    """A NaN is a bug upstream wherever it sits: refused even where valid is False."""
    valid = torch.tensor([[True, True, False]])
    with pytest.raises(ValueError, match="nan"):
        sample_mask(valid, 0.5, weights=torch.tensor([[1.0, 1.0, math.nan]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("exact", [False, True])
def test_sample_mask_never_chooses_bad_weights_on_cuda(exact: bool) -> None:
    valid = torch.ones(64, 8, dtype=torch.bool, device="cuda")
    weights = torch.ones(64, 8, device="cuda")
    weights[:, 3], weights[:, 5], weights[:, 6] = math.nan, math.inf, -1.0
    m = sample_mask(valid, 0.5, exact=exact, weights=weights)
    assert not m[:, [3, 5, 6]].any()
    assert m.any(1).all()  # the other positions are still masked


# --------------------------------------------------------------------------------------------
# ReliabilityController


def controller(**kwargs: Any) -> ReliabilityController:
    kwargs.setdefault("target", 0.5)
    kwargs.setdefault("gain", 0.5)
    kwargs.setdefault("momentum", 0.5)
    kwargs.setdefault("max_delta", 0.05)
    kwargs.setdefault("min_rate", 0.0)
    kwargs.setdefault("max_rate", 0.9)
    return ReliabilityController(0.3, **kwargs)


@pytest.mark.parametrize("bad", NON_FINITE)
@pytest.mark.parametrize("signal", ["accuracy", "loss"])
def test_a_non_finite_signal_is_ignored(bad: float, signal: str) -> None:
    c = controller(signal=signal)
    c.update(0.6)
    before = c.state_dict()
    assert c.update(bad) == before["rate"]
    assert c.update(torch.tensor(bad)) == before["rate"]
    assert c.state_dict() == before
    # Entries of a per-position tensor: the finite ones count, as with NaN entries.
    c.update(torch.tensor([0.75, bad, 0.75]))
    d = controller(signal=signal)
    d.update(0.6)
    d.update(0.75)
    assert c.state_dict() == d.state_dict()
    assert math.isfinite(c.smoothed)


@pytest.mark.parametrize("bad", NON_FINITE)
@pytest.mark.parametrize("signal", ["loss_gap", "accuracy_gap"])
def test_a_non_finite_gap_is_ignored(bad: float, signal: str) -> None:
    c = controller(signal=signal, target=0.0)
    c.update(0.5, 0.6)
    before = c.state_dict()
    c.update(bad, 0.6)
    c.update(0.5, bad)
    assert c.state_dict() == before


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_one_infinite_signal_does_not_saturate_the_controller(bad: float) -> None:
    c = controller(momentum=0.9)
    c.update(bad)
    rates = [c.update(0.5) for _ in range(5)]  # on target
    assert rates == [0.3] * 5


@pytest.mark.parametrize("value", [0.0, 0.2, 1.0, 1e300, math.inf, -math.inf, math.nan])
def test_gain_zero_never_moves_the_rate(value: float) -> None:
    c = controller(gain=0.0)
    for _ in range(3):
        assert c.update(value) == 0.3


@pytest.mark.parametrize(
    ("kwargs", "exc", "shown"),
    [
        ({"gain": math.nan}, ValueError, "gain.*nan"),
        ({"gain": math.inf}, ValueError, "gain.*inf"),
        ({"gain": "0.1"}, TypeError, "gain.*'0.1'"),
        ({"target": math.nan}, ValueError, "target.*nan"),
        ({"target": -math.inf}, ValueError, "target.*-inf"),
        ({"target": "high"}, TypeError, "target.*'high'"),
        ({"max_delta": math.nan}, ValueError, "max_delta.*nan"),
        ({"max_delta": math.inf}, ValueError, "max_delta.*inf"),
        ({"max_delta": -0.1}, ValueError, "max_delta.*-0.1"),
        ({"momentum": math.nan}, ValueError, "momentum.*nan"),
    ],
)
def test_non_finite_settings_are_rejected(kwargs: dict, exc: type[Exception], shown: str) -> None:
    with pytest.raises(exc, match=shown):
        controller(**kwargs)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1)),
        min_size=1,
        max_size=40,
    ),
    direction=st.sampled_from(["seed", "curriculum"]),
    signal=st.sampled_from(["accuracy", "loss"]),
)
def test_controller_state_stays_finite_on_any_input(
    values: list[float], direction: str, signal: str
) -> None:
    c = controller(direction=direction, signal=signal, max_delta=0.05)
    rate = c.rate
    for v in values:
        new = c.update(v)
        assert 0.0 <= new <= 0.9 and abs(new - rate) <= 0.05 + 1e-12
        rate = new
        assert c.updates == 0 or math.isfinite(c.smoothed)
    finite = [v for v in values if math.isfinite(v)]
    assert c.updates == len(finite)
