"""Lightning integration (needs the ``lightning`` extra).

:class:`MaskwiseLightningCallback` keeps collators, a controller and a monitor in step with a
``lightning.Trainer``: a few lines in user code::

    callback = MaskwiseLightningCallback(collator, controller=controller, monitor=monitor)
    trainer = lightning.Trainer(callbacks=[callback])

The ``LightningModule``'s ``training_step`` returns the loss, which feeds a controller whose
signal is ``"loss"`` or ``"heldout_gap"``; to steer the controller by accuracy or confidence
instead, return a dict ``{"loss": loss, "logits": logits, "labels": labels}`` (the callback
warns once when its controller gets nothing it can use). A ``"heldout_gap"`` controller takes
its held-out loss from the logged validation metric ``reference_key`` (default ``"val_loss"``)
at the end of every validation epoch.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from lightning.pytorch.callbacks import Callback

from maskwise.dynamic import feed, reliability
from maskwise.dynamic.feedback import SIGNAL_FIELDS

__all__ = ["MaskwiseLightningCallback"]


class MaskwiseLightningCallback(Callback):
    """Epoch and step to the collators; loss or logits to the controller; rate to the logger.

    Args:
        collators: objects with ``set_epoch`` / ``set_step`` (``MLMCollator``, ``T5Collator``).
        controller: optional ``ReliabilityController``.
        monitor: optional ``MaskMonitor``.
        reference_key: the logged validation loss a ``"heldout_gap"`` controller compares the
            training loss with (``self.log("val_loss", loss)`` in ``validation_step``).
    """

    def __init__(
        self,
        *collators: Any,
        controller: Any = None,
        monitor: Any = None,
        reference_key: str = "val_loss",
    ) -> None:
        super().__init__()
        self.collators, self.controller, self.monitor = collators, controller, monitor
        self.reference_key = reference_key
        self._warned_unfed = self._warned_no_reference = False

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        for c in self.collators:
            c.set_epoch(int(trainer.current_epoch))

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = int(trainer.global_step)
        for c in self.collators:
            if callable(getattr(c, "set_step", None)):
                c.set_step(step)
        c = self.controller
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        logits = labels = None
        if isinstance(outputs, dict) and "logits" in outputs and "labels" in outputs:
            logits, labels = outputs["logits"], outputs["labels"]
        if c is not None and not self._warned_unfed:
            self._check_fed(c, has_logits=logits is not None, has_loss=loss is not None)
        r = feed(c, logits=logits, labels=labels, loss=loss)
        if r is None and logits is not None and labels is not None and self.monitor is not None:
            r = reliability(logits, labels)
        rate = (
            float(c.rate)
            if c is not None
            else (float(self.collators[0].rate) if self.collators else None)
        )
        if rate is not None:
            pl_module.log("maskwise_rate", rate, on_step=True, prog_bar=False)
        if self.monitor is not None:
            self.monitor.record(
                step, rate=rate, reliability=r, loss=loss if loss is not None else math.nan
            )

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        c = self.controller
        if getattr(c, "signal", None) != "heldout_gap" or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.reference_key)
        if value is None:
            if self._warned_no_reference:
                return
            self._warned_no_reference = True
            warnings.warn(
                f"MaskwiseLightningCallback: no logged {self.reference_key!r} after validation, "
                "so the 'heldout_gap' controller has no held-out loss: log it in "
                "validation_step or pass reference_key.",
                UserWarning,
                stacklevel=2,
            )
            return
        value = float(value)
        if math.isfinite(value) and value > 0:
            c.set_reference(value)

    def _check_fed(self, controller: Any, *, has_logits: bool, has_loss: bool) -> None:
        """Warn once when this step gives ``controller`` nothing its signal can use."""
        signal = getattr(controller, "signal", None)
        if signal in ("loss", "heldout_gap") and (has_logits or has_loss):
            return
        if signal in SIGNAL_FIELDS and has_logits:
            return
        self._warned_unfed = True
        if signal in SIGNAL_FIELDS:
            need = (
                "training_step must return {'loss': loss, 'logits': logits, 'labels': labels}"
                if signal != "loss"
                else "training_step must return the loss (or logits and labels)"
            )
        else:
            need = "call controller.update(train_value, val_value) where you measure them"
        warnings.warn(
            f"MaskwiseLightningCallback: the controller (signal={signal!r}) gets nothing it can "
            f"use from this training step, so its rate does not move: {need}.",
            UserWarning,
            stacklevel=2,
        )
