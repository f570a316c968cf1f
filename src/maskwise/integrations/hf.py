"""Hugging Face ``transformers`` integration (needs the ``hf`` extra).

``Trainer`` calls ``set_epoch`` on its sampler and dataloader, never on the ``data_collator``, so
a maskwise collator would key its masks with epoch 0 forever and repeat them every epoch.
:class:`MaskwiseCallback` passes the epoch and the step on, feeds a controller from the logged
loss, and records the rate; :class:`MaskwiseTrainer` feeds the controller from every step's
logits instead::

    from maskwise.collators import MLMCollator
    from maskwise.dynamic import ReliabilityController
    from maskwise.integrations.hf import MaskwiseCallback, MaskwiseTrainer

    controller = ReliabilityController(0.15, signal="accuracy", target=0.5)
    collator = MLMCollator.from_tokenizer(tokenizer, rate=controller, seed=0)
    trainer = MaskwiseTrainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                              controller=controller, callbacks=[MaskwiseCallback(collator)])
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from maskwise.dynamic import feed, reliability

__all__ = ["MaskwiseCallback", "MaskwiseTrainer"]


class MaskwiseCallback(TrainerCallback):
    """Keep maskwise collators in step with ``Trainer``.

    * ``on_epoch_begin``: ``collator.set_epoch(epoch)`` (new keyed masks every epoch);
    * ``on_step_end``: ``collator.set_step(global_step)`` (schedule rates);
    * ``on_log``: with a ``controller`` whose signal is ``"loss"``, ``controller.update(loss)``;
      with a ``monitor``, records the rate and the logged loss; adds ``maskwise_rate`` to the
      logs.

    Args:
        collators: objects with ``set_epoch`` (and ``set_step``): ``MLMCollator``, ``T5Collator``.
        controller: optional controller fed from the logged training loss.
        monitor: optional :class:`~maskwise.monitor.MaskMonitor`.
    """

    def __init__(self, *collators: Any, controller: Any = None, monitor: Any = None) -> None:
        for c in collators:
            if not callable(getattr(c, "set_epoch", None)):
                raise TypeError(f"{type(c).__name__} has no set_epoch(epoch) method.")
        self.collators, self.controller, self.monitor = collators, controller, monitor

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # At the start of epoch k, state.epoch is k (a float; fractional only after a resume).
        epoch = int(state.epoch or 0.0)
        for c in self.collators:
            c.set_epoch(epoch)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for c in self.collators:
            if callable(getattr(c, "set_step", None)):
                c.set_step(int(state.global_step))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if logs is None or "loss" not in logs:
            return
        loss = float(logs["loss"])
        feed(self.controller, loss=loss)  # only a "loss" controller can use the logged loss
        rate = self._rate()
        if rate is not None:
            logs["maskwise_rate"] = rate
            # Trainer.log appended these logs to log_history before calling us: keep it there too.
            if state.log_history and state.log_history[-1].get("loss") == logs.get("loss"):
                state.log_history[-1]["maskwise_rate"] = rate
        if self.monitor is not None:
            self.monitor.record(int(state.global_step), rate=rate, loss=loss)

    def _rate(self) -> float | None:
        if self.controller is not None:
            return float(self.controller.rate)
        for c in self.collators:
            if hasattr(c, "rate"):
                return float(c.rate)
        return None


class MaskwiseTrainer(Trainer):
    """``Trainer`` that feeds a controller (and a difficulty tracker) from every training step's
    logits and labels, with no extra forward pass.

    Extra keyword arguments: ``controller`` (a ``ReliabilityController``), ``tracker`` (a
    ``DifficultyTracker`` keyed by the input token ids), ``monitor`` (a ``MaskMonitor``).
    """

    def __init__(
        self,
        *args: Any,
        controller: Any = None,
        tracker: Any = None,
        monitor: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.maskwise_controller, self.maskwise_tracker, self.maskwise_monitor = (
            controller,
            tracker,
            monitor,
        )
        self._attention: Any = None

    def compute_loss(  # type: ignore[override]
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        labels = inputs.get("labels")
        self._attention = inputs.get("attention_mask")
        logits = (
            getattr(outputs, "logits", None)
            if not isinstance(outputs, dict)
            else outputs.get("logits")
        )
        if (
            model.training
            and labels is not None
            and logits is not None
            and logits.shape[:-1] == labels.shape
        ):
            self._observe(logits, labels, inputs.get("input_ids"))
        return (loss, outputs) if return_outputs else loss

    def _observe(
        self, logits: torch.Tensor, labels: torch.Tensor, input_ids: torch.Tensor | None
    ) -> None:
        r = reliability(logits, labels)
        c = self.maskwise_controller
        # The label is the original token: the tracker keys difficulty by it.
        keys = (
            labels.clamp_min(0)
            if input_ids is not None and input_ids.shape == labels.shape
            else None
        )
        feed(c, self.maskwise_tracker, reliability=r, keys=keys)
        if self.maskwise_monitor is not None:
            rate = float(c.rate) if c is not None else None
            # The targets are the masked positions; keys: the original token there, else the input.
            keys = (
                labels
                if input_ids is None or input_ids.shape != labels.shape
                else torch.where(r.valid, labels, input_ids)
            )
            self.maskwise_monitor.record(
                int(self.state.global_step),
                rate=rate,
                mask=r.valid,
                valid=self._attention,
                reliability=r,
                keys=keys,
            )

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        c = self.maskwise_controller
        if c is not None and "loss" in logs:
            logs = {**logs, "maskwise_rate": float(c.rate)}  # reaches log_history and reporters
        super().log(logs, *args, **kwargs)
