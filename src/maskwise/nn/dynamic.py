"""``DynamicMask``: any masking module with a rate from a float, a schedule or a controller."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from maskwise.dynamic.feedback import feed
from maskwise.dynamic.rates import check_rate_source, controller_of, resolve_rate
from maskwise.dynamic.reliability import reliability as compute_reliability
from maskwise.nn.base import MaskModule

__all__ = ["DynamicMask"]


class DynamicMask(nn.Module):
    """Make any maskwise masking module dynamic: its rate comes from a float, a schedule or a
    :class:`~maskwise.dynamic.ReliabilityController`, fed back by :meth:`observe`.

    ``forward(x, *args, **kwargs)`` sets ``masker.rate`` from the rate source, calls the masker
    and returns what it returns (``(x_masked, mask)``; a ``SpecAugmentResult`` for
    :class:`SpecAugment`; the masked input alone for a masker built with
    ``return_mask=False``); in eval the masker is the identity. With a
    :class:`~maskwise.dynamic.DifficultyTracker`, maskers that take ``weights`` (``TokenMask``)
    get per-key sampling weights (keys: ``keys=`` or, for integer inputs, the input itself).
    :meth:`observe` takes the step's logits and labels (or a precomputed
    :class:`~maskwise.dynamic.Reliability`): it updates the controller with the chosen signal
    and the tracker with the per-position losses. No extra forward pass, no hard-coded device.

    Args:
        masker: a :class:`MaskModule` (``TokenMask``, ``FeatureMask``, ``PatchMask``,
            ``BlockPatchMask``, ``Erase``, ``SpecAugment``, ``TimeSpanMask``).
        rate: a float, a schedule (``rate(step)``) or a controller.
        tracker: optional difficulty tracker (per-key sampling weights).
        temperature: the tracker's weight temperature (negative: hard keys masked less).
        monitor: optional :class:`~maskwise.monitor.MaskMonitor` fed at every training forward
            (the rate; the masked fraction over the positions the masker may mask, see
            :meth:`MaskModule.maskable`; per-class counts of the integer ``keys`` or input ids)
            and at every observe.
        per_sample: the tracker is keyed by *example* (``keys``: (B,) example ids, e.g. dataset
            indices) and sets a rate per sample instead of weighting positions:
            ``rate_b = clip(rate * w_b / mean(w), 0, 1)``, ``w`` the tracker's weights of the
            batch's examples, so the batch's mean rate stays the source's. With
            ``temperature < 0`` the examples the model already fits (memorised: a low running
            loss) are masked more. Needs a tracker and a masker that takes per-sample rates
            (``TokenMask``, ``FeatureMask``, ``PatchMask`` without ``drop``,
            ``TimeSpanMask``); the keys come as ``keys=`` or from :meth:`sample_keys`.

    The step (training forwards so far) is a buffer, saved in ``state_dict``.

    >>> from maskwise.dynamic import ReliabilityController
    >>> from maskwise.nn import TokenMask
    >>> dm = DynamicMask(TokenMask(0.3, mask_id=3, seed=0), ReliabilityController(0.3, target=0.5))
    >>> ids = torch.randint(4, 50, (8, 16))
    >>> noisy, mask = dm(ids)
    >>> logits, labels = torch.randn(8, 16, 50), ids.masked_fill(~mask, -100)
    >>> 0.0 <= dm.observe(logits, labels) <= 0.9
    True
    """

    def __init__(
        self,
        masker: MaskModule,
        rate: Any,
        *,
        tracker: Any = None,
        temperature: float = 1.0,
        monitor: Any = None,
        per_sample: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(masker, MaskModule):
            raise TypeError(
                f"masker must be a maskwise MaskModule ({type(masker).__name__} given)."
            )
        if per_sample and tracker is None:
            raise ValueError("per_sample=True sets rates from a tracker of examples: pass one.")
        if per_sample and not masker.takes_ranges:
            raise ValueError(
                f"per_sample=True needs a masker that takes a rate per sample "
                f"({type(masker).__name__} takes one rate per batch)."
            )
        self.per_sample = per_sample
        self._sample_keys: torch.Tensor | None = None
        self.masker = masker
        self.rate_source = check_rate_source(rate)
        self.tracker, self.temperature, self.monitor = tracker, temperature, monitor
        self.step: torch.Tensor
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        import inspect

        self._takes_weights = "weights" in inspect.signature(masker.forward).parameters

    @property
    def controller(self) -> Any:
        """The rate source when it is a controller (it can be fed back), else None."""
        return controller_of(self.rate_source)

    def current_rate(self) -> float:
        """The rate the next training forward uses (the step is read on the host only for a
        schedule or controller: a fixed rate costs no device sync)."""
        source = self.rate_source
        return resolve_rate(source, int(self.step) if callable(source) else 0)

    @contextlib.contextmanager
    def sample_keys(self, keys: torch.Tensor) -> Iterator[None]:
        """``per_sample=True``: the example ids (B,) of the forwards inside the block, for code
        that calls the masker without passing ``keys=`` (a model that applies it inside)."""
        previous, self._sample_keys = self._sample_keys, keys
        try:
            yield
        finally:
            self._sample_keys = previous

    def _sample_rates(self, rate: float, keys: torch.Tensor | None) -> torch.Tensor:
        """Per-sample rates (B,) from the tracker's weights of the examples ``keys``."""
        if keys is None:
            keys = self._sample_keys
        if keys is None or not isinstance(keys, torch.Tensor) or keys.dim() != 1:
            raise ValueError(
                "per_sample=True needs the batch's example ids: keys= a (B,) integer tensor, "
                "or the sample_keys(ids) context."
            )
        w = self.tracker.weights(keys, temperature=self.temperature).double()
        return (rate * w / w.mean()).clamp(0.0, 1.0)

    def forward(self, x: Any, *args: Any, keys: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if not self.training:
            return self.masker(x, *args, **kwargs)
        rate = self.current_rate()
        if self.per_sample:
            return self._forward_per_sample(rate, x, *args, keys=keys, **kwargs)
        self.masker.rate = rate
        k = keys if keys is not None else x  # integer keys: token ids, or those given
        if not isinstance(k, torch.Tensor) or k.dtype.is_floating_point:
            k = None
        if self.tracker is not None and self._takes_weights and "weights" not in kwargs:
            if k is not None:
                kwargs["weights"] = self.tracker.weights(k, temperature=self.temperature)
        if self.monitor is None:
            out = self.masker(x, *args, **kwargs)
        else:
            out = self._forward_monitored(rate, k, x, *args, **kwargs)
        self.step += 1
        return out

    def _forward_per_sample(
        self, rate: float, x: Any, *args: Any, keys: torch.Tensor | None, **kwargs: Any
    ) -> Any:
        """A training forward with a rate per sample (``per_sample=True``); the masker's
        ``rate`` is set back to the batch's rate afterwards (a float in its state)."""
        self.masker.rate = self._sample_rates(rate, keys) if rate > 0 else 0.0
        try:
            if self.monitor is None:
                out = self.masker(x, *args, **kwargs)
            else:
                out = self._forward_monitored(rate, None, x, *args, **kwargs)
        finally:
            self.masker.rate = rate
        self.step += 1
        return out

    def _forward_monitored(
        self, rate: float, keys: torch.Tensor | None, x: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """The masker's forward, recording the rate, the masked fraction over the positions it
        may mask (the mask is taken even from a masker built with ``return_mask=False``) and,
        with integer ``keys`` of the mask's shape, the per-class counts."""
        plain = not self.masker.return_mask
        self.masker.return_mask = True
        try:
            out = self.masker(x, *args, **kwargs)
        finally:
            self.masker.return_mask = not plain
        # Maskers return (x, mask), or a result with a .mask (SpecAugmentResult).
        mask = getattr(out, "mask", None)
        if mask is None and isinstance(out, tuple) and len(out) == 2:
            mask = out[1]
        valid = self.masker.maskable(x, *args, **kwargs)
        if keys is not None and (mask is None or keys.shape != mask.shape):
            keys = None
        self.monitor.record(int(self.step), rate=rate, mask=mask, valid=valid, keys=keys)
        return out[0] if plain and isinstance(out, tuple) else out

    def observe(
        self,
        logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        reliability: Any = None,
        loss: Any = None,
        losses: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
        key_valid: torch.Tensor | None = None,
        ignore_index: int = -100,
    ) -> float:
        """Feed back the reliability of the latest predictions; returns the rate to come.

        Updates the controller with its signal and the tracker with the per-position losses at
        ``keys`` (see :func:`maskwise.dynamic.feed`: ``keys`` may have one more trailing
        dimension than ``labels``, sharing each example's loss among its keys; ``key_valid``
        marks the keys that count). ``loss`` is the step's training loss (a float or 0-d
        tensor), all a ``"heldout_gap"`` controller needs: the per-position reliability (a
        ``log_softmax`` over the logits) is then computed only when the tracker or the monitor
        reads it. ``losses``, the step's per-position cross-entropy, spares that
        ``log_softmax`` when the reliability is needed (:func:`~maskwise.dynamic.reliability`).
        """
        if reliability is None and loss is None and (logits is None or labels is None):
            raise ValueError("observe needs logits and labels, reliability= or loss=.")
        r = feed(
            self.controller,
            self.tracker,
            logits=logits,
            labels=labels,
            reliability=reliability,
            loss=loss,
            losses=losses,
            keys=keys,
            key_valid=key_valid,
            ignore_index=ignore_index,
        )
        if self.monitor is not None:
            if r is None and logits is not None and labels is not None:
                r = compute_reliability(logits, labels, ignore_index=ignore_index, losses=losses)
            self.monitor.record(int(self.step), rate=self.current_rate(), reliability=r)
        return self.current_rate()

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate_source!r}, tracker={self.tracker is not None}, step={int(self.step)}"
        )
