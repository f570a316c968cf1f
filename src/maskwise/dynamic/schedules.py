"""Rate schedules: picklable callables ``schedule(step) -> rate`` with ``state_dict()``.

A schedule is a pure function of the step, so DataLoader workers that read the step from
shared memory compute the same rate as the training process.
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
        t = min(max(step, 0), self.steps) / self.steps
        return round(self.start + (self.end - self.start) * t, 12)


class cosine(Schedule):  # noqa: N801
    """From ``start`` to ``end`` over ``steps`` along half a cosine (slow, fast, slow).

    >>> s = cosine(0.4, 0.0, 100)
    >>> s(0), round(s(50), 6), s(100)
    (0.4, 0.2, 0.0)
    """

    kind = "cosine"

    def __init__(self, start: float, end: float, steps: int) -> None:
        self.start = check_probability("start", start)
        self.end = check_probability("end", end)
        self.steps = _check_steps(steps)

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.steps) / self.steps
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))


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


class cosine_decay(Schedule):  # noqa: N801
    """Masking-ratio decay for MLM (Yang et al., 2022): ``p_t = p (1 + cos(pi t / T)) + 0.02``,
    from ``2p + 0.02`` down to ``0.02`` at ``t = T`` (and after), clipped to [0, 1].

    >>> s = cosine_decay(0.15, 1000)
    >>> round(s(0), 4), round(s(500), 4), round(s(1000), 4)
    (0.32, 0.17, 0.02)
    """

    kind = "cosine_decay"

    def __init__(self, rate: float, steps: int, floor: float = 0.02) -> None:
        self.rate = check_probability("rate", rate)
        self.steps = _check_steps(steps)
        self.floor = check_probability("floor", floor)

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.steps) / self.steps
        return min(1.0, self.rate * (1.0 + math.cos(math.pi * t)) + self.floor)


class linear_decay(Schedule):  # noqa: N801
    """Masking-ratio decay for MLM (Yang et al., 2022): ``p_t = 2p (1 - t / T)``, clipped to
    [0, 1] (0 after ``T``).

    >>> s = linear_decay(0.15, 1000)
    >>> s(0), s(500), s(1000)
    (0.3, 0.15, 0.0)
    """

    kind = "linear_decay"

    def __init__(self, rate: float, steps: int) -> None:
        self.rate = check_probability("rate", rate)
        self.steps = _check_steps(steps)

    def __call__(self, step: int) -> float:
        t = min(max(step, 0), self.steps) / self.steps
        return min(1.0, round(2.0 * self.rate * (1.0 - t), 12))
