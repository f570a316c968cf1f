"""Dynamic masking: rates that change with the step or with how reliable predictions are.

* schedules: :func:`constant`, :func:`linear`, :func:`cosine`, :func:`step`,
  :func:`cosine_decay`, :func:`linear_decay`: ``schedule(step) -> rate``;
* :class:`ReliabilityController`: ``update(reliability) -> rate``, with the defaults
  :data:`CONTROLLER_DEFAULTS` (the settings ``maskwise run`` uses);
* :class:`DifficultyTracker`: running loss per key -> sampling weights;
* :func:`reliability`: per-position loss, correctness, confidence from logits and labels;
* rate sources (:mod:`~maskwise.dynamic.rates`): a float, a schedule or a controller, read by
  :func:`resolve_rate`; :func:`feed` takes a training step's outputs to a controller and tracker.

Use them through :class:`maskwise.nn.DynamicMask`, the collators (``rate=`` a schedule or a
controller), or directly as the ``rate`` of any functional masker.
"""

from maskwise.dynamic.controller import (
    CONTROLLER_DEFAULTS,
    GAP_DEFAULTS,
    ControllerDefaults,
    ReliabilityController,
)
from maskwise.dynamic.feedback import GAP_SIGNALS, feed, signal_values
from maskwise.dynamic.rates import (
    Controller,
    RateSource,
    check_rate_source,
    controller_of,
    resolve_rate,
)
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
    "CONTROLLER_DEFAULTS",
    "GAP_DEFAULTS",
    "GAP_SIGNALS",
    "Controller",
    "ControllerDefaults",
    "DifficultyTracker",
    "RateSource",
    "Reliability",
    "ReliabilityController",
    "Schedule",
    "check_rate_source",
    "constant",
    "controller_of",
    "cosine",
    "cosine_decay",
    "feed",
    "linear",
    "linear_decay",
    "reliability",
    "resolve_rate",
    "signal_values",
    "step",
]
