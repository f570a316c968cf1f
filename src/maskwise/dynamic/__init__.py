"""Dynamic masking: rates that change with the step or with how reliable predictions are.

* schedules: :func:`constant`, :func:`linear`, :func:`cosine`, :func:`step`,
  :func:`cosine_decay`, :func:`linear_decay`: ``schedule(step) -> rate``;
* :class:`ReliabilityController`: ``update(reliability) -> rate``;
* :class:`DifficultyTracker`: running loss per key -> sampling weights;
* :func:`reliability`: per-position loss, correctness, confidence from logits and labels.

Use them through :class:`maskwise.nn.DynamicMask`, the collators (``rate=`` a schedule or a
controller), or directly as the ``rate`` of any functional masker.
"""

from maskwise.dynamic.controller import ReliabilityController
from maskwise.dynamic.reliability import Reliability, reliability
from maskwise.dynamic.schedules import (
    Schedule,
    constant,
    cosine,
    cosine_decay,
    linear,
    linear_decay,
    step,
)
from maskwise.dynamic.tracker import DifficultyTracker

__all__ = [
    "DifficultyTracker",
    "Reliability",
    "ReliabilityController",
    "Schedule",
    "constant",
    "cosine",
    "cosine_decay",
    "linear",
    "linear_decay",
    "reliability",
    "step",
]
