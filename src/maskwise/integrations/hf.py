"""Hugging Face ``transformers`` integration (needs the ``hf`` extra).

``Trainer`` calls ``set_epoch`` on its sampler and dataloader, never on the ``data_collator``, so
a maskwise collator would key its masks with epoch 0 forever and repeat them every epoch.
:class:`MaskwiseCallback` passes the epoch on::

    from maskwise.collators import MLMCollator
    from maskwise.integrations.hf import MaskwiseCallback

    collator = MLMCollator.from_tokenizer(tokenizer, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                      callbacks=[MaskwiseCallback(collator)])
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

__all__ = ["MaskwiseCallback"]


class MaskwiseCallback(TrainerCallback):
    """Keep maskwise collators in step with ``Trainer``: ``set_epoch`` at every epoch start.

    Args:
        collators: any objects with ``set_epoch(int)`` (``MLMCollator``, ``T5Collator``).
    """

    def __init__(self, *collators: Any) -> None:
        for c in collators:
            if not callable(getattr(c, "set_epoch", None)):
                raise TypeError(f"{type(c).__name__} has no set_epoch(epoch) method.")
        self.collators = collators

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # At the start of epoch k, state.epoch is k (a float; fractional only after a resume).
        epoch = int(state.epoch or 0.0)
        for c in self.collators:
            c.set_epoch(epoch)
