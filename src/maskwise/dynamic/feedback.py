"""Feedback: the one path from a training step's outputs to a controller and a tracker.

``DynamicMask.observe``, ``MaskwiseTrainer``, ``MaskwiseCallback``, the Lightning callback and
the experiments engine all call :func:`feed`, so a controller's signal is read the same way
everywhere:

* ``"accuracy"`` / ``"confidence"`` / ``"loss"``: the per-position values of
  :func:`~maskwise.dynamic.reliability` (NaN where there is no target, which the controller
  ignores); ``"loss"`` falls back on a scalar ``loss`` when there are no logits;
* ``"loss_gap"`` / ``"accuracy_gap"``: not fed here (they need a validation figure: call
  ``controller.update(train_value, val_value)`` where it is measured);
* ``"heldout_gap"``: the step's scalar ``loss`` (else the mean per-position loss); the rate
  moves once the controller has a held-out reference (``controller.set_reference``); nothing
  is computed from the logits when ``loss`` is given;
* the tracker gets the per-position losses at ``keys``; when ``keys`` has one more trailing
  dimension than the losses (per-example losses, per-token keys), each example's loss is shared
  by its keys; when it has fewer (per-example keys (B,), per-position losses (B, L)), each key
  gets its example's mean loss over the positions with a target.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from maskwise.dynamic.reliability import Reliability
from maskwise.dynamic.reliability import reliability as compute_reliability

__all__ = ["GAP_SIGNALS", "SIGNAL_FIELDS", "feed", "signal_values"]

#: Reliability field read for each per-position signal.
SIGNAL_FIELDS = {"accuracy": "correct", "confidence": "confidence", "loss": "loss"}
#: Signals fed with ``update(train_value, val_value)`` where the validation figure is measured.
GAP_SIGNALS = ("loss_gap", "accuracy_gap")


def signal_values(r: Reliability, signal: str) -> torch.Tensor:
    """Per-position float values of ``signal`` with NaN where ``r`` has no target.

    >>> r = Reliability(torch.tensor([0.5, 0.0]), torch.tensor([True, False]),
    ...                 torch.tensor([0.9, 0.3]), torch.tensor([True, False]))
    >>> signal_values(r, "accuracy").tolist()
    [1.0, nan]
    """
    if signal not in SIGNAL_FIELDS:
        raise ValueError(f"signal must be one of {tuple(SIGNAL_FIELDS)} ({signal!r} given).")
    values = getattr(r, SIGNAL_FIELDS[signal]).float()
    return torch.where(r.valid, values, float("nan"))


def feed(
    controller: Any = None,
    tracker: Any = None,
    *,
    logits: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    reliability: Reliability | None = None,
    loss: Any = None,
    losses: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
    key_valid: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> Reliability | None:
    """Feed one training step's outputs to ``controller`` and ``tracker`` (either may be None).

    Args:
        controller: a :class:`~maskwise.dynamic.ReliabilityController` (or anything with
            ``signal`` and ``update``), or None.
        tracker: a :class:`~maskwise.dynamic.DifficultyTracker`, or None.
        logits, labels: the step's outputs (..., C) and targets (...); used to compute the
            reliability when ``reliability`` is not given and something needs it.
        reliability: a precomputed :class:`~maskwise.dynamic.Reliability`.
        loss: the step's scalar loss (a float or 0-d tensor), for a ``"heldout_gap"``
            controller, and for a ``"loss"`` controller when there are no logits.
        losses: the step's per-position cross-entropy (the shape of ``labels``): the
            reliability is then computed without a ``log_softmax`` (see
            :func:`~maskwise.dynamic.reliability`).
        keys: integer tracker keys: the shape of the labels, with one more trailing dimension
            (per-token keys of per-example losses), or a leading part of it (per-example keys
            of per-position losses).
        key_valid: bool, the shape of ``keys``: which keys count (default: all).
        ignore_index: label value without a target.

    Returns:
        The reliability used (None when nothing needed it), e.g. for a monitor.

    >>> from maskwise.dynamic import ReliabilityController
    >>> c = ReliabilityController(0.3, target=0.5, gain=0.2, momentum=0.0, max_delta=1.0)
    >>> logits = torch.tensor([[4.0, 0.0], [4.0, 0.0]])
    >>> _ = feed(c, logits=logits, labels=torch.tensor([0, -100]))   # accuracy 1.0 on 1 target
    >>> round(c.rate, 6)   # reliable: more masking (curriculum), 0.3 + 0.2 * (1.0 - 0.5)
    0.4
    """
    signal = getattr(controller, "signal", None) if controller is not None else None
    per_position = signal in SIGNAL_FIELDS
    heldout = signal == "heldout_gap"  # fed before its first reference too (target="best")
    needs = (
        per_position
        or (tracker is not None and keys is not None)
        or (heldout and loss is None and reliability is None)
    )
    r = reliability
    if r is None and needs and logits is not None and labels is not None:
        r = compute_reliability(logits, labels, ignore_index=ignore_index, losses=losses)
    if per_position and controller is not None:
        if r is not None:
            controller.update(signal_values(r, str(signal)))
        elif signal == "loss" and loss is not None:
            value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            if math.isfinite(value):
                controller.update(value)
    if heldout and controller is not None:
        if loss is not None:
            controller.update(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        elif r is not None:
            controller.update(r.mean()["loss"])
    if tracker is not None and keys is not None and r is not None:
        losses, valid = r.loss, r.valid
        if keys.dim() == losses.dim() + 1:  # per-example losses shared by the example's keys
            losses = losses.unsqueeze(-1).expand_as(keys)
            valid = valid.unsqueeze(-1).expand_as(keys)
        elif keys.dim() < losses.dim() and keys.shape == losses.shape[: keys.dim()]:
            # per-example keys, per-position losses: each example's mean over its targets
            dims = tuple(range(keys.dim(), losses.dim()))
            n = valid.sum(dims)
            losses = (losses * valid).sum(dims) / n.clamp_min(1)
            valid = n > 0
        if key_valid is not None:
            valid = valid & key_valid.to(valid.device)
        tracker.update(keys, losses, valid=valid)
    return r
