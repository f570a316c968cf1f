"""Lightning integration (needs the ``lightning`` extra).

:class:`MaskwiseLightningCallback` keeps collators, a controller and a monitor in step with a
``lightning.Trainer``: a few lines in user code::

    callback = MaskwiseLightningCallback(collator, controller=controller, monitor=monitor)
    trainer = lightning.Trainer(callbacks=[callback])

The ``LightningModule``'s ``training_step`` returns the loss; to steer the controller by
accuracy or confidence instead, return a dict
``{"loss": loss, "logits": logits, "labels": labels}``.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch.callbacks import Callback

from maskwise.dynamic import feed, reliability

__all__ = ["MaskwiseLightningCallback"]


class MaskwiseLightningCallback(Callback):
    """Epoch and step to the collators; loss or logits to the controller; rate to the logger.

    Args:
        collators: objects with ``set_epoch`` / ``set_step`` (``MLMCollator``, ``T5Collator``).
        controller: optional ``ReliabilityController``.
        monitor: optional ``MaskMonitor``.
    """

    def __init__(self, *collators: Any, controller: Any = None, monitor: Any = None) -> None:
        super().__init__()
        self.collators, self.controller, self.monitor = collators, controller, monitor

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
