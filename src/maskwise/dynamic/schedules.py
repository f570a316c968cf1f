"""Rate schedules: picklable callables ``schedule(step) -> rate`` with ``state_dict()``.

A schedule is a pure function of the step, so DataLoader workers that read the step from
shared memory compute the same rate as the training process. Every schedule returns its
endpoints exactly: ``start`` at step 0 and before, ``end`` at ``steps`` and after.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from maskwise._checks import check_probability

__all__ = [
    "Schedule",
    "constant",
    "cosine",
    "cosine_decay",
    "linear",
    "linear_decay",
    "step",
]


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int ({steps!r} given).")
    return steps


def _progress(step: int, steps: int) -> float | None:
    """``step / steps`` strictly inside (0, 1), or None at an endpoint (step <= 0 or >= steps),
    where a schedule returns its endpoint itself rather than a float computed from it."""
    if step <= 0 or step >= steps:
        return None
    return step / steps


def _lerp(start: float, end: float, t: float | None, step: int) -> float:
    """``start`` -> ``end`` linearly in ``t``; the endpoints exactly."""
    if t is None:
        return start if step <= 0 else end
    return round(start + (end - start) * t, 12)


def _half_cosine(start: float, end: float, t: float | None, step: int) -> float:
    """``start`` -> ``end`` along half a cosine in ``t``; the endpoints exactly."""
    if t is None:
        return start if step <= 0 else end
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


class Schedule:
    """Base class: ``__call__(step) -> rate`` in [0, 1]; settings in ``state_dict()``."""

    kind = "schedule"

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(
                f"State of a {state.get('kind')!r} schedule given to a {self.kind!r} one."
            )
        for k, v in state.items():
            if k != "kind":
                setattr(self, k, v)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{self.kind}({args})"


class constant(Schedule):  # noqa: N801 - lower case: used like a function, as in SPEC.md
    """The same rate at every step.

    >>> constant(0.15)(10_000)
    0.15
    """

    kind = "constant"

    def __init__(self, rate: float) -> None:
        self.rate = check_probability("rate", rate)

    def __call__(self, step: int) -> float:
        return self.rate


class linear(Schedule):  # noqa: N801
    """From ``start`` at step 0 to ``end`` at step ``steps``, linearly; ``end`` after.

    >>> s = linear(0.1, 0.5, 100)
    >>> s(0), s(50), s(100), s(1000)
    (0.1, 0.3, 0.5, 0.5)
    """

    kind = "linear"

    def __init__(self, start: float, end: float, steps: int) -> None:
        self.start = check_probability("start", start)
        self.end = check_probability("end", end)
        self.steps = _check_steps(steps)

    def __call__(self, step: int) -> float:
        return _lerp(self.start, self.end, _progress(step, self.steps), step)


class cosine(Schedule):  # noqa: N801
    """From ``start`` to ``end`` over ``steps`` along half a cosine (slow, fast, slow).

    >>> s = cosine(0.4, 0.0, 100)
    >>> s(0), round(s(50), 6), s(100)
    (0.4, 0.2, 0.0)
    >>> cosine(0.1, 0.7, 3)(0)   # endpoints are exact (0.1 + 0.6 would not be)
    0.1
    """

    kind = "cosine"

    def __init__(self, start: float, end: float, steps: int) -> None:
        self.start = check_probability("start", start)
        self.end = check_probability("end", end)
        self.steps = _check_steps(steps)

    def __call__(self, step: int) -> float:
        return _half_cosine(self.start, self.end, _progress(step, self.steps), step)


class step(Schedule):  # noqa: N801
    """Piecewise constant: ``rates[i]`` from ``milestones[i - 1]`` (inclusive) on.

    >>> s = step([0.1, 0.2, 0.3], [100, 200])
    >>> s(0), s(99), s(100), s(250)
    (0.1, 0.1, 0.2, 0.3)
    """

    kind = "step"

    def __init__(self, rates: Sequence[float], milestones: Sequence[int]) -> None:
        rates = [check_probability("rate", r) for r in rates]
        milestones = [int(m) for m in milestones]
        if len(rates) != len(milestones) + 1:
            raise ValueError(
                f"step needs one more rate than milestones "
                f"({len(rates)} rates, {len(milestones)} milestones given)."
            )
        if milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing ({milestones} given).")
        self.rates, self.milestones = rates, milestones

    def __call__(self, step: int) -> float:
        return self.rates[bisect.bisect_right(self.milestones, step)]


def _load_decay(state: dict[str, Any]) -> dict[str, Any]:
    """A decay's state saved when it took ``rate`` = p (starting at ``2 p + floor``), in
    today's terms (the same schedule while that start is <= 1)."""
    state = dict(state)
    if "rate" in state and "start" not in state:
        p = float(state.pop("rate"))
        state.setdefault("floor", 0.0)
        state["start"] = min(1.0, 2.0 * p + float(state["floor"]))
    return state


class cosine_decay(Schedule):  # noqa: N801
    """Masking-ratio decay for MLM: ``start`` at step 0 down to ``floor`` at ``steps`` (and
    after) along half a cosine, ``p_t = floor + (start - floor) (1 + cos(pi t / T)) / 2``.

    Yang et al. (2022) write their cosine decay as ``p (1 + cos(pi t / T)) + 0.02`` with
    ``p = 0.15``: that is ``cosine_decay(2 * p + 0.02, T) = cosine_decay(0.32, T)``. (Earlier
    versions took that ``p``, so ``cosine_decay(0.3, T)`` started at 0.62; a state dict saved
    by them loads with its meaning kept.) ``cosine_decay(start, T, floor=f)`` is
    ``cosine(start, f, T)``.

    >>> s = cosine_decay(0.32, 1000)
    >>> s(0), round(s(500), 4), s(1000)
    (0.32, 0.17, 0.02)
    """

    kind = "cosine_decay"

    def __init__(self, start: float, steps: int, floor: float = 0.02) -> None:
        self.start = check_probability("start", start)
        self.steps = _check_steps(steps)
        self.floor = check_probability("floor", floor)
        if self.floor > self.start:
            raise ValueError(
                f"floor must be <= start ({floor} > {start} given); a rising schedule is "
                f"linear(start, end, steps) or cosine(start, end, steps)."
            )

    def __call__(self, step: int) -> float:
        return _half_cosine(self.start, self.floor, _progress(step, self.steps), step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(_load_decay(state))


class linear_decay(Schedule):  # noqa: N801
    """Masking-ratio decay for MLM: ``start`` at step 0 down to ``floor`` at ``steps`` (and
    after), linearly.

    Yang et al. (2022) write their linear decay as ``2p (1 - t / T)`` with ``p = 0.15``: that is
    ``linear_decay(2 * p, T) = linear_decay(0.3, T)``. (Earlier versions took that ``p``; a
    state dict saved by them loads with its meaning kept.) ``linear_decay(start, T,
    floor=f)`` is ``linear(start, f, T)``.

    >>> s = linear_decay(0.3, 1000)
    >>> s(0), s(500), s(1000)
    (0.3, 0.15, 0.0)
    """

    kind = "linear_decay"

    def __init__(self, start: float, steps: int, floor: float = 0.0) -> None:
        self.start = check_probability("start", start)
        self.steps = _check_steps(steps)
        self.floor = check_probability("floor", floor)
        if self.floor > self.start:
            raise ValueError(
                f"floor must be <= start ({floor} > {start} given); a rising schedule is "
                f"linear(start, end, steps) or cosine(start, end, steps)."
            )

    def __call__(self, step: int) -> float:
        return _lerp(self.start, self.floor, _progress(step, self.steps), step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(_load_decay(state))
