"""The reliability controller: a masking rate steered by how reliable the predictions are."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import torch

from maskwise._checks import check_probability

__all__ = [
    "CONTROLLER_DEFAULTS",
    "DIRECTIONS",
    "GAP_DEFAULTS",
    "SIGNALS",
    "STARTS",
    "ControllerDefaults",
    "ReliabilityController",
]

#: The signals a controller follows, and its directions.
SIGNALS = ("accuracy", "confidence", "loss", "loss_gap", "accuracy_gap", "heldout_gap")
DIRECTIONS = ("curriculum", "seed")
#: When a ``heldout_gap`` controller starts to steer: at once, or once the model overfits.
STARTS = ("now", "overfit")


@dataclasses.dataclass(frozen=True)
class ControllerDefaults:
    """The settings of a :class:`ReliabilityController` built without them: one set, used by
    the library and by ``maskwise run`` (:data:`CONTROLLER_DEFAULTS`).

    They are the settings of the measured runs in docs/RESULTS.md, chosen so that the loop is
    stable whatever the signal does:

    * ``direction="curriculum"`` (reliable predictions -> more masking). Masking lowers the
      reliability of the predictions it is measured on, so this direction is negative feedback
      and settles where the signal meets the target. The seed documents' rule (reliable -> less
      masking) is positive feedback on that signal: masked-token accuracy of MLM stays below
      0.5 for thousands of steps, so it raised the rate from 0.15 to its bound 0.9 within 15
      updates; on the digits ViT it ran to its bound and scored 73.1 % (83.3 % unmasked).
    * ``target=0.9``: the training-step accuracy (or confidence) to hold; 0.8 and 0.95 gave the
      same test accuracy within noise. Gap signals default to 0; ``"loss"`` needs a target.
    * ``gain=0.05``, ``max_delta=0.01``, ``momentum=0.9``: the smoothed signal lags about 10
      updates, in which the rate moves by at most 0.1; an error of 0.2 moves it by the full
      0.01 per update, smaller errors proportionally less, so noise in a batch's accuracy does
      not make the rate oscillate.
    * ``min_rate=0.1``: a floor. Without it the rate fell to 0 in the first, unreliable epochs
      and the model memorised the unmasked data (83.2 % instead of 87.3 % on the digits ViT);
      and a signal measured on the masked positions only (MLM, MAE) is never measured again at
      rate 0, so the rate could not rise again. Pass ``min_rate=0.0`` where masking may be
      switched off (input noise for sequence models).
    * ``max_rate=0.6``: the highest rate the measured runs held without losing accuracy (the
      ``loss_gap`` run on the digits ViT); more hides most of the input.
    * ``rate=0.1``: the suggested initial rate (the floor: masking grows as the model learns).
    """

    rate: float = 0.1
    signal: str = "accuracy"
    target: float | str = 0.9
    direction: str = "curriculum"
    gain: float = 0.05
    momentum: float = 0.9
    max_delta: float = 0.01
    min_rate: float = 0.1
    max_rate: float = 0.6
    start: str = "now"

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`ReliabilityController` (everything but ``rate``).

        >>> ReliabilityController(0.2, **CONTROLLER_DEFAULTS.kwargs()).direction
        'curriculum'
        """
        out = dataclasses.asdict(self)
        del out["rate"]
        return out


#: The defaults of :class:`ReliabilityController`'s arguments (see :class:`ControllerDefaults`):
#: the accuracy curriculum.
CONTROLLER_DEFAULTS = ControllerDefaults()

#: The settings of :meth:`ReliabilityController.default`, the library's default dynamic
#: controller and ``maskwise run``'s ``dynamic`` arm, chosen by the comparison on six tasks in
#: docs/RESULTS.md ("Choosing the default dynamic controller"): the held-out gap, waiting until the
#: held-out loss rises (``start="overfit"``: until then no masking), then holding the gap at its
#: value at the lowest held-out loss (``target="best"``), rate in [0, 0.5], the same loop
#: settings as :data:`CONTROLLER_DEFAULTS` (gain 0.05, momentum 0.9, at most 0.01 per update).
GAP_DEFAULTS = ControllerDefaults(
    rate=0.0,
    signal="heldout_gap",
    target="best",
    min_rate=0.0,
    max_rate=0.5,
    start="overfit",
)
_D = CONTROLLER_DEFAULTS
_DEFAULT_TARGETS = {
    "accuracy": _D.target,
    "confidence": _D.target,
    "loss_gap": 0.0,
    "accuracy_gap": 0.0,
    "heldout_gap": 0.0,
}


def _finite(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number, else an error naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number ({value!r} given).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number ({value} given).")
    return value


def _as_float(value: Any) -> float:
    """Mean of a float or a tensor of per-position values; non-finite entries (NaN where there
    is no target, +-inf) are ignored, and NaN is returned when nothing is left."""
    if isinstance(value, torch.Tensor):
        v = value.detach().float()
        v = v[v.isfinite()]
        if v.numel() == 0:
            return math.nan
        return float(v.mean())  # one host read per update
    x = float(value)
    return x if math.isfinite(x) else math.nan


class ReliabilityController:
    """A masking rate that follows the reliability of the model's latest predictions.

    Control law, for update ``t`` with measured value ``x_t`` (a float, or the mean of a tensor of
    per-position values):

    .. code-block:: text

        s_t  = x_1                                  (t = 1)
        s_t  = momentum * s_{t-1} + (1 - momentum) * x_t
        e_t  = s_t - target        for accuracy, confidence         (e > 0: more reliable)
        e_t  = target - s_t        for loss
        e_t  = s_t - target        for loss_gap / accuracy_gap      (e > 0: gap too wide)
        e_t  = s_t - target        for heldout_gap, x_t = 1 - train_loss / heldout_loss
        d_t  = clip(gain * e_t, -max_delta, max_delta)
        rate = clip(rate - d_t, min_rate, max_rate)   direction="seed":  reliable -> less masking
        rate = clip(rate + d_t, min_rate, max_rate)   direction="curriculum": reliable -> more
        rate = clip(rate + d_t, min_rate, max_rate)   gap signals: a wider gap -> more masking

    It is an integral controller on a smoothed error: the rate moves while the smoothed signal is
    away from its target, by at most ``max_delta`` per update, and never leaves
    ``[min_rate, max_rate]``. With ``direction="curriculum"`` (the default) and a signal that
    masking makes worse (training accuracy), the loop is stable and settles where the signal
    meets the target; with ``direction="seed"`` (the seed documents' rule) the rate rises while
    predictions are unreliable and falls once they are reliable, which runs to ``max_rate``
    when the signal is measured on the masked inputs themselves. The defaults and why they were
    chosen: :class:`ControllerDefaults`.

    ``signal="heldout_gap"`` steers the rate by the measured overfitting: the relative gap
    ``1 - train_loss / heldout_loss`` between the training step's own loss (on masked inputs,
    which the step has already computed: no extra pass) and the latest loss on held-out data
    (the *reference*, measured every so often on data the model does not train on and given
    with :meth:`set_reference`). While the model is still fitting, its training loss is at or
    above the held-out loss and the rate stays at ``min_rate``; once it starts to memorise, the
    gap opens and the rate rises until masking makes the training task as hard as held-out data
    (the gap back at ``target``). Masking raises the training loss within the same step, so the
    loop is negative feedback. It is scale-free (a ratio of losses), so one target fits
    classifiers, language models and translation.

    With ``start="overfit"`` a ``heldout_gap`` controller waits: the rate stays where it
    started, and the signal is not read, until a held-out loss given to :meth:`set_reference`
    is higher than the lowest one before it, the point where early stopping would see the
    model begin to overfit. From then on it steers as above. Until that point a run with
    ``rate=0`` trains exactly as one without masking, so selecting the best epoch on held-out
    data can only pick a later, masked epoch when that one is better.

    ``target="best"`` (``heldout_gap`` only) takes the set point from the data: the relative gap
    ``1 - mean training loss / held-out loss`` measured when the held-out loss was at its lowest
    so far (the training loss averaged over the updates since the reference before it). How
    much gap a model generalises best with depends on the task (in docs/RESULTS.md, the gap at
    the lowest dev loss was 0.15 for the BPE language model fed noised inputs and -0.35 for the
    digits ViT, whose epoch-averaged training loss was still above its dev loss): the gap at
    the best held-out loss is that task's own figure, and the controller masks just enough to
    keep the gap from widening past it. Before that gap is known the target is 0.

    Non-finite values are ignored like NaN ones: a NaN (a batch with no target) or infinite
    (a ``-inf`` logit at the label) signal leaves the state unchanged, and the non-finite
    entries of a tensor of per-position values are left out of its mean.

    The rate and the smoothed signal live in a small shared-memory tensor: a collator holding the
    controller reads the current rate in every DataLoader worker.

    Args:
        rate: initial rate, in ``[min_rate, max_rate]``.
        signal: ``"accuracy"``, ``"confidence"`` (mean max-softmax probability), ``"loss"``, or
            the generalisation signals ``"loss_gap"`` (validation loss - training loss) and
            ``"accuracy_gap"`` (training accuracy - validation accuracy), fed with
            ``update(train_value, val_value)``, and ``"heldout_gap"`` (``1 - training loss /
            held-out loss``), fed with the training step's loss after :meth:`set_reference`.
        target: the signal's set point, a finite number (default 0.9 for accuracy /
            confidence, 0 for gaps; required for loss, whose scale depends on the task), or for
            ``heldout_gap`` ``"best"``: the gap measured at the lowest held-out loss.
        gain: rate change per unit of error, finite and >= 0 (0: the rate never moves).
        min_rate, max_rate: bounds of the rate (default 0.1 and 0.6).
        direction: ``"curriculum"`` (default) or ``"seed"`` (ignored by the gap signals).
        momentum: smoothing of the signal, in [0, 1).
        max_delta: largest rate change per update, finite and > 0.
        start: ``"now"`` (default) or ``"overfit"``: a ``heldout_gap`` controller steers from
            its first reference, or only once a held-out loss has risen above the lowest one
            before it.

    >>> c = ReliabilityController(0.3, signal="accuracy", target=0.7, gain=0.5, momentum=0.0,
    ...                           max_delta=1.0)
    >>> round(c.update(0.9), 3)   # more reliable than the target: more masking
    0.4
    >>> round(c.update(torch.tensor([1.0, 0.0, 0.0, 1.0])), 3)   # accuracy 0.5: less masking
    0.3
    """

    def __init__(
        self,
        rate: float,
        *,
        signal: str = _D.signal,
        target: float | str | None = None,
        gain: float = _D.gain,
        min_rate: float = _D.min_rate,
        max_rate: float = _D.max_rate,
        direction: str = _D.direction,
        momentum: float = _D.momentum,
        max_delta: float = _D.max_delta,
        start: str = "now",
    ) -> None:
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS} ({signal!r} given).")
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS} ({start!r} given).")
        if start == "overfit" and signal != "heldout_gap":
            raise ValueError(
                f"start='overfit' reads held-out losses: it needs signal='heldout_gap' "
                f"({signal!r} given)."
            )
        if direction not in ("seed", "curriculum"):
            raise ValueError(f"direction must be 'seed' or 'curriculum' ({direction!r} given).")
        if target is None:
            if signal not in _DEFAULT_TARGETS:
                raise ValueError(
                    f"target is required for signal={signal!r} (its scale depends on the task)."
                )
            target = _DEFAULT_TARGETS[signal]
        if target == "best":
            if signal != "heldout_gap":
                raise ValueError(
                    f"target='best' is the gap at the lowest held-out loss: it needs "
                    f"signal='heldout_gap' ({signal!r} given)."
                )
        else:
            target = _finite("target", target)
        self.min_rate = check_probability("min_rate", min_rate)
        self.max_rate = check_probability("max_rate", max_rate)
        if self.min_rate > self.max_rate:
            raise ValueError(f"min_rate must be <= max_rate ({min_rate} > {max_rate} given).")
        rate = check_probability("rate", rate)
        if not self.min_rate <= rate <= self.max_rate:
            raise ValueError(
                f"rate must lie in [min_rate, max_rate] = [{self.min_rate}, {self.max_rate}] "
                f"({rate} given; pass min_rate / max_rate to widen the bounds)."
            )
        momentum = _finite("momentum", momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) ({momentum} given).")
        gain, max_delta = _finite("gain", gain), _finite("max_delta", max_delta)
        if gain < 0:
            raise ValueError(f"gain must be >= 0 ({gain} given).")
        if max_delta <= 0:
            raise ValueError(f"max_delta must be > 0 ({max_delta} given).")
        self.signal, self.target, self.gain = signal, target, gain
        self.direction, self.momentum, self.max_delta = direction, momentum, max_delta
        self.start = start
        # [rate, smoothed signal, number of updates, held-out reference, lowest reference,
        # started (0 / 1), training-loss sum and count since the last reference, the gap at the
        # lowest reference], shared with DataLoader workers.
        self._state = self._fresh_state(rate).share_memory_()
        self._initial_rate = rate

    def _fresh_state(self, rate: float) -> torch.Tensor:
        started = 1.0 if self.start == "now" else 0.0
        return torch.tensor(
            [rate, math.nan, 0.0, math.nan, math.nan, started, 0.0, 0.0, math.nan],
            dtype=torch.float64,
        )

    @classmethod
    def default(cls, **overrides: Any) -> ReliabilityController:
        """The library's default dynamic controller (:data:`GAP_DEFAULTS`; the ``dynamic`` arm
        of ``maskwise run``): no masking until the held-out loss rises above its lowest, then as
        much as keeps the gap ``1 - training loss / held-out loss`` where it was at the lowest
        held-out loss. Feed it the step's loss (``update(loss)``, ``DynamicMask.observe(loss=)``)
        and every held-out loss (``set_reference``; the Hugging Face and Lightning callbacks
        pass the evaluation loss). ``overrides``: any argument, ``rate`` included.

        >>> c = ReliabilityController.default()
        >>> (c.rate, c.signal, c.start, c.target)
        (0.0, 'heldout_gap', 'overfit', 'best')
        """
        settings = {**GAP_DEFAULTS.kwargs(), **overrides}
        rate = settings.pop("rate", GAP_DEFAULTS.rate)
        return cls(rate, **settings)

    # -- state ---------------------------------------------------------------------------------
    @property
    def rate(self) -> float:
        return float(self._state[0])

    @property
    def smoothed(self) -> float:
        """The smoothed signal (NaN before the first update)."""
        return float(self._state[1])

    @property
    def updates(self) -> int:
        return int(self._state[2])

    @property
    def reference(self) -> float:
        """The latest held-out figure of ``signal="heldout_gap"`` (NaN before the first)."""
        return float(self._state[3])

    @property
    def lowest_reference(self) -> float:
        """The lowest held-out figure given so far (NaN before the first)."""
        return float(self._state[4])

    @property
    def best_gap(self) -> float:
        """The gap ``1 - mean training loss / held-out loss`` when the held-out loss was lowest
        (NaN before it is measured): the set point of ``target="best"``."""
        return float(self._state[8])

    @property
    def set_point(self) -> float:
        """The target the signal is steered to: ``target``, or for ``target="best"`` the
        :attr:`best_gap` (0 until it is measured)."""
        if self.target == "best":
            gap = self.best_gap
            return gap if math.isfinite(gap) else 0.0
        return float(self.target)

    @property
    def started(self) -> bool:
        """Whether the controller steers the rate: always with ``start="now"``; with
        ``start="overfit"``, once a held-out loss has risen above the lowest before it."""
        return bool(self._state[5] > 0)

    def set_reference(self, value: Any) -> None:
        """Record the latest held-out loss (``signal="heldout_gap"``): a finite number > 0, or a
        tensor of per-item losses whose finite mean is taken. The following :meth:`update` calls
        compare the training loss with it. With ``start="overfit"``, the first value above the
        lowest one before it starts the controller."""
        if self.signal != "heldout_gap":
            raise ValueError(f"set_reference is for signal='heldout_gap' ({self.signal!r} given).")
        v = _as_float(value)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"the held-out loss must be finite and > 0 ({v} given).")
        lowest = self.lowest_reference
        if v > lowest:  # the held-out loss rose: the model has begun to overfit
            self._state[5] = 1.0
        total, count = float(self._state[6]), float(self._state[7])
        if not v > lowest and count > 0:  # a new lowest: the gap there is the best one
            self._state[8] = 1.0 - (total / count) / v
        self._state[3] = v
        self._state[4] = min(v, lowest) if math.isfinite(lowest) else v
        self._state[6:8] = 0.0

    def __call__(self, step: int | None = None) -> float:
        """The current rate (so a controller can stand wherever a schedule can)."""
        return self.rate

    def update(self, value: Any, val_value: Any = None) -> float:
        """Feed the latest reliability (and, for gap signals, the validation figure); return the
        new rate. Non-finite values (NaN: e.g. a batch with no target; +-inf) leave the state
        unchanged.

        For ``signal="heldout_gap"``, ``value`` is the training loss and ``val_value`` (optional)
        a new held-out loss, recorded as by :meth:`set_reference`. Before the first held-out
        loss, and with ``start="overfit"`` before the model overfits, the rate and the smoothed
        signal are left unchanged; the training loss is still added to the running sum that
        ``target="best"`` reads."""
        x = _as_float(value)
        if self.signal == "heldout_gap":
            if math.isfinite(x):  # the training losses since the last reference
                self._state[6] += x
                self._state[7] += 1.0
            if val_value is not None:
                self.set_reference(val_value)
            ref = self.reference
            x = 1.0 - x / ref if math.isfinite(ref) and self.started else math.nan
        elif self.signal.endswith("_gap"):
            if val_value is None:
                raise ValueError(f"signal={self.signal!r} needs update(train_value, val_value).")
            v = _as_float(val_value)
            x = (v - x) if self.signal == "loss_gap" else (x - v)
        if not math.isfinite(x):
            return self.rate
        n = self.updates
        s = x if n == 0 else self.momentum * self.smoothed + (1.0 - self.momentum) * x
        target = self.set_point
        error = target - s if self.signal == "loss" else s - target
        delta = max(-self.max_delta, min(self.max_delta, self.gain * error))
        sign = 1.0 if (self.signal.endswith("_gap") or self.direction == "curriculum") else -1.0
        rate = min(self.max_rate, max(self.min_rate, self.rate + sign * delta))
        self._state[:3] = torch.tensor([rate, s, n + 1.0], dtype=torch.float64)
        return rate

    def state_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "smoothed": self.smoothed,
            "updates": self.updates,
            "reference": self.reference if math.isfinite(self.reference) else None,
            "lowest_reference": (
                self.lowest_reference if math.isfinite(self.lowest_reference) else None
            ),
            "started": self.started,
            "start": self.start,
            "train_loss_sum": float(self._state[6]),
            "train_loss_count": float(self._state[7]),
            "best_gap": self.best_gap if math.isfinite(self.best_gap) else None,
            "signal": self.signal,
            "target": self.target,
            "gain": self.gain,
            "min_rate": self.min_rate,
            "max_rate": self.max_rate,
            "direction": self.direction,
            "momentum": self.momentum,
            "max_delta": self.max_delta,
            "initial_rate": self._initial_rate,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in (
            "signal",
            "target",
            "gain",
            "min_rate",
            "max_rate",
            "direction",
            "momentum",
            "max_delta",
            "start",
        ):
            if key in state:
                setattr(self, key, state[key])

        def figure(key: str) -> float:  # None: not measured yet (absent in older states)
            value = state.get(key)
            return math.nan if value is None else float(value)

        started = state.get("started", self.start == "now")
        self._state.copy_(
            torch.tensor(
                [
                    state["rate"],
                    state["smoothed"],
                    state["updates"],
                    figure("reference"),
                    figure("lowest_reference"),
                    1.0 if started else 0.0,
                    float(state.get("train_loss_sum", 0.0)),
                    float(state.get("train_loss_count", 0.0)),
                    figure("best_gap"),
                ],
                dtype=torch.float64,
            )
        )
        self._initial_rate = float(state.get("initial_rate", self._initial_rate))

    def reset(self) -> None:
        self._state.copy_(self._fresh_state(self._initial_rate))

    def sync(self) -> None:
        """Average the rate, the smoothed signal and the held-out reference over
        ``torch.distributed`` ranks (no-op when it is not initialised), so every rank masks at the
        same rate. Ranks that have not measured a signal (or a reference, or the best gap) yet
        take the others' and do not dilute them. The lowest reference is the lowest of any
        rank's, the controller has started on every rank once it has on one, and the training
        losses since the last reference are pooled (their sums and counts averaged, so their
        ratio is the mean over every rank's losses and later syncs count none twice)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        has = 1.0 if self.updates > 0 else 0.0
        has_ref = 1.0 if math.isfinite(self.reference) else 0.0
        has_gap = 1.0 if math.isfinite(self.best_gap) else 0.0
        t = torch.tensor(
            [
                self.rate,
                self.smoothed if has else 0.0,
                has,
                self.reference if has_ref else 0.0,
                has_ref,
                float(self._state[6]),
                float(self._state[7]),
                self.best_gap if has_gap else 0.0,
                has_gap,
                float(self.updates),
                float(self._state[5]),
                -self.lowest_reference if math.isfinite(self.lowest_reference) else -math.inf,
            ],
            dtype=torch.float64,
        )
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t[:9], op=dist.ReduceOp.SUM)
        dist.all_reduce(t[9:], op=dist.ReduceOp.MAX)
        t = t.cpu()
        world = dist.get_world_size()
        s = float(t[1] / t[2]) if t[2] > 0 else math.nan
        ref = float(t[3] / t[4]) if t[4] > 0 else math.nan
        gap = float(t[7] / t[8]) if t[8] > 0 else math.nan
        lowest = -float(t[11]) if math.isfinite(float(t[11])) else math.nan
        self._state.copy_(
            torch.tensor(
                [
                    float(t[0]) / world,
                    s,
                    float(t[9]),
                    ref,
                    lowest,
                    float(t[10]),
                    float(t[5]) / world,
                    float(t[6]) / world,
                    gap,
                ],
                dtype=torch.float64,
            )
        )

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # the shared tensor pickles as a handle to the same memory

    def __repr__(self) -> str:
        return (
            f"ReliabilityController(rate={self.rate:.4f}, signal={self.signal!r}, "
            f"target={self.target}, gain={self.gain}, direction={self.direction!r}, "
            f"bounds=[{self.min_rate}, {self.max_rate}]"
            + (f", start={self.start!r}, started={self.started})" if self.start != "now" else ")")
        )
