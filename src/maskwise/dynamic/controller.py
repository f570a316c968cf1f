"""The reliability controller: a masking rate steered by how reliable the predictions are."""

from __future__ import annotations

import math
from typing import Any

import torch

from maskwise._checks import check_probability

__all__ = ["ReliabilityController"]

_SIGNALS = ("accuracy", "confidence", "loss", "loss_gap", "accuracy_gap")
_DEFAULT_TARGETS = {"accuracy": 0.6, "confidence": 0.6, "loss_gap": 0.0, "accuracy_gap": 0.0}


def _as_float(value: Any) -> float:
    """Mean of a float or a tensor of per-position values (NaN entries ignored)."""
    if isinstance(value, torch.Tensor):
        v = value.detach().float()
        v = v[~v.isnan()]
        if v.numel() == 0:
            return math.nan
        return float(v.mean())  # one host read per update
    return float(value)


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
        d_t  = clip(gain * e_t, -max_delta, max_delta)
        rate = clip(rate - d_t, min_rate, max_rate)   direction="seed":  reliable -> less masking
        rate = clip(rate + d_t, min_rate, max_rate)   direction="curriculum": reliable -> more
        rate = clip(rate + d_t, min_rate, max_rate)   gap signals: a wider gap -> more masking

    It is an integral controller on a smoothed error: the rate moves while the smoothed signal is
    away from its target, by at most ``max_delta`` per update, and never leaves
    ``[min_rate, max_rate]``. With ``direction="curriculum"`` and a signal that masking makes
    worse (training accuracy), the loop is stable and settles where the signal meets the target;
    with ``direction="seed"`` (the seed documents' rule) the rate rises while predictions are
    unreliable and falls once they are reliable.

    The rate and the smoothed signal live in a small shared-memory tensor: a collator holding the
    controller reads the current rate in every DataLoader worker.

    Args:
        rate: initial rate.
        signal: ``"accuracy"``, ``"confidence"`` (mean max-softmax probability), ``"loss"``, or
            the generalisation signals ``"loss_gap"`` (validation loss - training loss) and
            ``"accuracy_gap"`` (training accuracy - validation accuracy), fed with
            ``update(train_value, val_value)``.
        target: the signal's set point (default 0.6 for accuracy / confidence, 0 for gaps;
            required for loss, whose scale depends on the task).
        gain: rate change per unit of error.
        min_rate, max_rate: bounds of the rate.
        direction: ``"seed"`` or ``"curriculum"`` (ignored by the gap signals).
        momentum: smoothing of the signal, in [0, 1).
        max_delta: largest rate change per update.

    >>> c = ReliabilityController(0.3, signal="accuracy", target=0.7, gain=0.5, momentum=0.0,
    ...                           max_delta=1.0)
    >>> round(c.update(0.9), 3)   # more reliable than the target: less masking
    0.2
    >>> round(c.update(torch.tensor([1.0, 0.0, 0.0, 1.0])), 3)   # accuracy 0.5: more masking
    0.3
    """

    def __init__(
        self,
        rate: float,
        *,
        signal: str = "accuracy",
        target: float | None = None,
        gain: float = 0.1,
        min_rate: float = 0.0,
        max_rate: float = 0.9,
        direction: str = "seed",
        momentum: float = 0.9,
        max_delta: float = 0.05,
    ) -> None:
        if signal not in _SIGNALS:
            raise ValueError(f"signal must be one of {_SIGNALS} ({signal!r} given).")
        if direction not in ("seed", "curriculum"):
            raise ValueError(f"direction must be 'seed' or 'curriculum' ({direction!r} given).")
        if target is None:
            if signal not in _DEFAULT_TARGETS:
                raise ValueError(
                    f"target is required for signal={signal!r} (its scale depends on the task)."
                )
            target = _DEFAULT_TARGETS[signal]
        self.min_rate = check_probability("min_rate", min_rate)
        self.max_rate = check_probability("max_rate", max_rate)
        if self.min_rate > self.max_rate:
            raise ValueError(f"min_rate must be <= max_rate ({min_rate} > {max_rate} given).")
        rate = check_probability("rate", rate)
        if not self.min_rate <= rate <= self.max_rate:
            raise ValueError(
                f"rate must lie in [min_rate, max_rate] = [{min_rate}, {max_rate}] ({rate} given)."
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) ({momentum} given).")
        if gain < 0 or max_delta <= 0:
            raise ValueError(f"gain must be >= 0 and max_delta > 0 ({gain}, {max_delta} given).")
        self.signal, self.target, self.gain = signal, float(target), float(gain)
        self.direction, self.momentum, self.max_delta = direction, float(momentum), float(max_delta)
        # [rate, smoothed signal, number of updates], shared with DataLoader workers.
        self._state = torch.tensor([rate, math.nan, 0.0], dtype=torch.float64).share_memory_()
        self._initial_rate = rate

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

    def __call__(self, step: int | None = None) -> float:
        """The current rate (so a controller can stand wherever a schedule can)."""
        return self.rate

    def update(self, value: Any, val_value: Any = None) -> float:
        """Feed the latest reliability (and, for gap signals, the validation figure); return the
        new rate. NaN values (e.g. a batch with no target) leave the state unchanged."""
        x = _as_float(value)
        if self.signal.endswith("_gap"):
            if val_value is None:
                raise ValueError(f"signal={self.signal!r} needs update(train_value, val_value).")
            v = _as_float(val_value)
            x = (v - x) if self.signal == "loss_gap" else (x - v)
        if math.isnan(x):
            return self.rate
        n = self.updates
        s = x if n == 0 else self.momentum * self.smoothed + (1.0 - self.momentum) * x
        if self.signal == "loss":
            error = self.target - s
        else:
            error = s - self.target
        delta = max(-self.max_delta, min(self.max_delta, self.gain * error))
        sign = 1.0 if (self.signal.endswith("_gap") or self.direction == "curriculum") else -1.0
        rate = min(self.max_rate, max(self.min_rate, self.rate + sign * delta))
        self._state.copy_(torch.tensor([rate, s, n + 1.0], dtype=torch.float64))
        return rate

    def state_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "smoothed": self.smoothed,
            "updates": self.updates,
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
        ):
            if key in state:
                setattr(self, key, state[key])
        self._state.copy_(
            torch.tensor([state["rate"], state["smoothed"], state["updates"]], dtype=torch.float64)
        )
        self._initial_rate = float(state.get("initial_rate", self._initial_rate))

    def reset(self) -> None:
        self._state.copy_(torch.tensor([self._initial_rate, math.nan, 0.0], dtype=torch.float64))

    def sync(self) -> None:
        """Average the rate and the smoothed signal over ``torch.distributed`` ranks (no-op when
        it is not initialised), so every rank masks at the same rate. Ranks that have not
        measured anything yet take the others' smoothed signal and do not dilute it."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        has = 1.0 if self.updates > 0 else 0.0
        smoothed = self.smoothed if has else 0.0
        t = torch.tensor([self.rate, smoothed * has, has, float(self.updates)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t[:3], op=dist.ReduceOp.SUM)
        dist.all_reduce(t[3:], op=dist.ReduceOp.MAX)
        t = t.cpu()
        world = dist.get_world_size()
        s = float(t[1] / t[2]) if t[2] > 0 else math.nan
        self._state.copy_(torch.tensor([float(t[0]) / world, s, float(t[3])], dtype=torch.float64))

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # the shared tensor pickles as a handle to the same memory

    def __repr__(self) -> str:
        return (
            f"ReliabilityController(rate={self.rate:.4f}, signal={self.signal!r}, "
            f"target={self.target}, gain={self.gain}, direction={self.direction!r}, "
            f"bounds=[{self.min_rate}, {self.max_rate}])"
        )
