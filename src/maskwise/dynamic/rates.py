"""Rate sources: the one notion of "where a masker's rate comes from".

A *rate source* is one of

* a float in [0, 1]: a fixed rate;
* a schedule: a callable ``schedule(step) -> rate`` (:mod:`maskwise.dynamic.schedules`, or any
  picklable function of the step);
* a controller: a :class:`~maskwise.dynamic.ReliabilityController` (also callable: it returns
  its current rate whatever the step, and it has ``update``).

Every place that takes a rate which may change during training (``DynamicMask``, the
collators, :func:`~maskwise.attention.drop_keys`) validates it with :func:`check_rate_source`
and reads it with :func:`resolve_rate`; :func:`controller_of` tells whether it can be fed back.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias, runtime_checkable

from maskwise._checks import check_probability

__all__ = ["Controller", "RateSource", "check_rate_source", "controller_of", "resolve_rate"]


@runtime_checkable
class Controller(Protocol):
    """What a rate source needs to be fed back: a ``signal`` name, ``update`` and ``rate``."""

    signal: str

    @property
    def rate(self) -> float: ...

    def update(self, value: Any, val_value: Any = None) -> float: ...

    def __call__(self, step: int | None = None) -> float: ...


#: A fixed rate, a schedule ``(step) -> rate`` or a controller.
RateSource: TypeAlias = float | Callable[[int], float]


def check_rate_source(value: Any, name: str = "rate") -> RateSource:
    """``value`` if it is a rate source, else a ``TypeError`` / ``ValueError`` naming it.

    >>> check_rate_source(0.15)
    0.15
    >>> check_rate_source(1.5)
    Traceback (most recent call last):
    ...
    ValueError: The value of rate must be between 0.0 and 1.0 (1.5 given).
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return check_probability(name, float(value))
    if callable(value):
        return value
    raise TypeError(
        f"{name} must be a float, a schedule or a controller "
        f"({type(value).__name__} {value!r} given)."
    )


def resolve_rate(source: RateSource, step: int = 0) -> float:
    """The rate of ``source`` at training ``step``: the float itself, the schedule at ``step``,
    or the controller's current rate.

    >>> from maskwise.dynamic import linear
    >>> resolve_rate(0.2), resolve_rate(linear(0.0, 0.4, 10), 5)
    (0.2, 0.2)
    """
    if callable(source):
        return float(source(step))
    return float(source)


def controller_of(source: Any) -> Controller | None:
    """``source`` when it can be fed back (it has ``update``), else None."""
    return source if callable(getattr(source, "update", None)) else None
