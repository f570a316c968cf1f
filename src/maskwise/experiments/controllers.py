"""The dynamic variant's controller settings: :class:`ControllerConfig` (a task's own), the named
controllers of :data:`CONTROLLERS` that change it (``--masking dynamic:NAME``) and
:data:`DEFAULT_CONTROLLER`, the plain ``dynamic`` arm's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maskwise.dynamic import CONTROLLER_DEFAULTS, GAP_DEFAULTS, ReliabilityController

__all__ = ["CONTROLLERS", "DEFAULT_CONTROLLER", "ControllerConfig"]

#: Named controllers of the dynamic variant, each a change to the task's
#: :class:`ControllerConfig` (the arm ``dynamic NAME``; ``--masking dynamic:NAME``); the plain
#: ``dynamic`` arm is :data:`DEFAULT_CONTROLLER` (``hold``).
#: ``accuracy`` is the task's own controller unchanged: the accuracy curriculum with the task's
#: target and bounds (the ``dynamic`` arm before issue 16).
#: ``seed`` is the seed documents' literal rule, reliable predictions -> less masking, with the
#: task's signal, target and bounds.
#: ``gap`` steers the rate by the measured overfitting (``signal="heldout_gap"``): the training
#: step's own loss against the dev loss of the latest epoch end (every ``reference_every``
#: steps on the first ``reference_size`` dev items when set), from rate 0: no masking while the
#: model is still fitting, then as much as makes the training loss meet the held-out one.
#: ``overfit`` is ``gap`` that waits (``start="overfit"``): no masking, so the same training as
#: the unmasked arm, until an epoch's dev loss is higher than the lowest before it (where early
#: stopping sees the model begin to overfit), then steered by the gap as ``gap`` is.
#: ``hold`` is ``overfit`` with ``target="best"``: from that point it holds the gap where it was
#: at the lowest dev loss (the task's own healthy gap) instead of closing it.
#: ``easy`` keeps the task's controller and flips its tracker's weights (``temperature=-1``):
#: the tokens the model already predicts reliably (low running loss per token id) are masked
#: more, the hard ones less (tasks with token keys: text, language modeling, translation,
#: summarization; elsewhere it equals ``dynamic``). ``examples`` keys the tracker by training
#: example instead and gives each sample its own rate, higher for the examples the model already
#: fits (a low running loss: memorised) and lower for the rest, the batch's mean rate the
#: controller's (tasks whose masker takes per-sample rates: text classification).
#: The held-out gap controllers set every setting of the loop (none is the task's): one
#: setting for every task, the library's :data:`~maskwise.dynamic.GAP_DEFAULTS`.
_HELDOUT: dict[str, Any] = {
    "signal": GAP_DEFAULTS.signal,
    "initial_rate": GAP_DEFAULTS.rate,
    "min_rate": GAP_DEFAULTS.min_rate,
    "max_rate": GAP_DEFAULTS.max_rate,
    "gain": GAP_DEFAULTS.gain,
    "momentum": GAP_DEFAULTS.momentum,
    "max_delta": GAP_DEFAULTS.max_delta,
}
CONTROLLERS: dict[str, dict[str, Any]] = {
    "accuracy": {},
    "seed": {"direction": "seed"},
    "easy": {"temperature": -1.0},
    "examples": {"per_example": True, "temperature": -1.0},
    "gap": {**_HELDOUT, "target": 0.0},
    "overfit": {**_HELDOUT, "start": "overfit", "target": 0.0},
    "hold": {**_HELDOUT, "start": GAP_DEFAULTS.start, "target": GAP_DEFAULTS.target},
}
#: The named controller of the plain ``dynamic`` arm (``--masking dynamic``).
DEFAULT_CONTROLLER = "hold"


@dataclass
class ControllerConfig:
    """Settings of the dynamic variant's :class:`~maskwise.dynamic.ReliabilityController`: a
    task's own (``task.controller``), which the named controllers of :data:`CONTROLLERS` change
    (the plain ``dynamic`` arm: ``hold``, whose settings are all its own).

    The task's own setting (the arm ``dynamic accuracy``) steers the rate by the accuracy of the
    training step's own predictions (on masked inputs, the logits it already has) in the
    ``curriculum`` direction: while the model
    predicts its training batches more reliably than ``target``, the rate rises, so the training
    task stays hard and memorising the training set stops paying; when predictions fall below
    the target the rate falls. ``direction="seed"`` is the seed documents' rule (reliable ->
    less masking); ``signal="loss_gap"`` feeds the dev-minus-train loss once per epoch instead;
    ``signal="heldout_gap"`` compares every training step's loss with the held-out (dev) loss
    measured at each epoch end, or every ``reference_every`` steps on the first
    ``reference_size`` dev items (the test split is never read during training).

    Every default is the library's (:data:`maskwise.dynamic.CONTROLLER_DEFAULTS`): the defaults
    of ``ReliabilityController``'s arguments; tasks override what their signal needs (sequence
    tasks: a lower accuracy target and ``min_rate=0``).
    """

    signal: str = CONTROLLER_DEFAULTS.signal
    target: float | str = CONTROLLER_DEFAULTS.target
    direction: str = CONTROLLER_DEFAULTS.direction
    initial_rate: float = CONTROLLER_DEFAULTS.rate
    min_rate: float = CONTROLLER_DEFAULTS.min_rate
    max_rate: float = CONTROLLER_DEFAULTS.max_rate
    gain: float = CONTROLLER_DEFAULTS.gain
    momentum: float = CONTROLLER_DEFAULTS.momentum
    max_delta: float = CONTROLLER_DEFAULTS.max_delta
    tracker: bool = True
    temperature: float = 1.0
    reference_every: int | None = None
    reference_size: int = 256
    per_example: bool = False
    start: str = "now"

    def build(self) -> ReliabilityController:
        return ReliabilityController(
            self.initial_rate,
            signal=self.signal,
            target=self.target,
            gain=self.gain,
            min_rate=self.min_rate,
            max_rate=self.max_rate,
            direction=self.direction,
            momentum=self.momentum,
            max_delta=self.max_delta,
            start=self.start,
        )
