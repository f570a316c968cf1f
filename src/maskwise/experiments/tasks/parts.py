"""Small parts the experiment tasks hold and call (composition, not inheritance).

* :class:`TokenMasking`: ``[MASK]`` replacement (or unigram noising) of token ids whose first ids
  are special, and the difficulty tracker's keys (the vocabulary's token ids);
* :class:`Classifier`: batching, the training step and the evaluation of a classification task
  over in-memory splits, given how to run the model and how to mask its inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskwise.experiments.batching import Batches, eval_batches
from maskwise.experiments.data import Split
from maskwise.experiments.engine import StepOutput
from maskwise.experiments.items import fingerprint
from maskwise.experiments.tokenizers import IGNORE, MASK, NUM_SPECIALS, PAD
from maskwise.nn import DynamicMask, TokenMask

__all__ = ["Classifier", "TokenMasking"]

EVAL_BATCH = 512  # evaluation batch of the classification tasks


@dataclass(frozen=True)
class TokenMasking:
    """``[MASK]`` replacement of token ids, for every task over token ids; with ``unigram`` (the
    training tokens' counts, (vocab,)) the chosen tokens are replaced by draws from that unigram
    distribution instead (unigram noising, Xie et al. 2017).

    Ids below ``num_specials`` are special (padding, unknown, two markers, ``[MASK]``): never
    masked, never tracker keys. The difficulty tracker (dynamic variant) keys tokens by id, so
    the vocabulary size is its number of keys.

    Args:
        vocab: the vocabulary size (the tracker's number of keys).
        mask_id: the id that replaces masked tokens.
        num_specials: ids ``0 .. num_specials - 1`` are special.
        pad_id: the padding id (never masked).
        unigram: None (``[MASK]``), or the replacement weights of unigram noising.
    """

    vocab: int
    mask_id: int = MASK
    num_specials: int = NUM_SPECIALS
    pad_id: int = PAD
    unigram: torch.Tensor | None = None

    @staticmethod
    def counts(ids: torch.Tensor, vocab: int) -> torch.Tensor:
        """(vocab,) float counts of the ids in ``ids`` (any shape; negative ids ignored): the
        ``unigram`` weights of a training split."""
        flat = ids.flatten()
        return torch.bincount(flat[flat >= 0], minlength=vocab).float()

    def make_masker(self, rate: float, seed: int) -> TokenMask:
        specials = range(self.num_specials)
        if self.unigram is None:
            return TokenMask(rate, mask_id=self.mask_id, special_ids=specials, seed=seed)
        return TokenMask(
            rate,
            mask_id=self.mask_id,
            special_ids=specials,
            vocab_size=self.vocab,
            replace_prob=0.0,
            random_prob=1.0,
            random_weights=self.unigram,
            seed=seed,
        )

    def apply(self, masker: DynamicMask, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` (B, L) with a rate of the real tokens replaced by ``[MASK]``."""
        return masker(ids, attention_mask=ids != self.pad_id)[0]

    def input_keys(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tracker keys of the (unmasked) input tokens (B, L) and which of them count."""
        return ids, ids >= self.num_specials

    @staticmethod
    def target_keys(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tracker keys of the target tokens (B, L) (-100 where there is no target) and which
        of them count."""
        return labels.clamp_min(0), labels != IGNORE


def _call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _mask(masker: DynamicMask, x: torch.Tensor) -> torch.Tensor:
    return masker(x)[0]


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


class Classifier:
    """Batching, the training step and the evaluation of a classification task.

    Cross-entropy on ``logits (B, C)`` against ``labels (B,)``; metrics accuracy and loss (mean
    over the split). The difficulty-tracker keys come from the unmasked inputs.

    Args:
        splits: ``{"train", "dev", "test"}``, inputs (N, ...) tensors, labels (N,) int64.
        forward: ``forward(model, inputs) -> logits (B, C)`` (default ``model(inputs)``).
        apply_mask: ``apply_mask(masker, inputs) -> masked inputs`` (default
            ``masker(inputs)[0]``).
        masked_forward: ``masked_forward(model, masker, inputs) -> logits`` for maskers that act
            inside the model (token dropping after the patch embedding); default: the model on
            ``apply_mask(masker, inputs)``.
        keys_of: ``keys_of(inputs) -> (keys, key_valid)`` for the tracker, or None (no keys).
        prepare: applied to the inputs of every batch, training and evaluation (e.g. dropping
            padding columns); default: none.
        batch_size: the training batch size.
    """

    def __init__(
        self,
        splits: dict[str, Split],
        *,
        forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = _call,
        apply_mask: Callable[[DynamicMask, torch.Tensor], torch.Tensor] = _mask,
        masked_forward: Callable[[nn.Module, DynamicMask, torch.Tensor], torch.Tensor]
        | None = None,
        keys_of: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        prepare: Callable[[torch.Tensor], torch.Tensor] = _same,
        batch_size: int = 32,
    ) -> None:
        self.splits, self.forward, self.apply_mask = splits, forward, apply_mask
        self.masked_forward = masked_forward
        self.keys_of, self.prepare, self.batch_size = keys_of, prepare, batch_size

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def fetch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels of the items ``idx`` of ``split``."""
        s = self.splits[split]
        return self.prepare(s.tensor[idx]), s.labels[idx]

    def num_examples(self) -> int:
        """Training examples (the keys of a per-example tracker)."""
        return len(self.splits["train"])

    def train_batches(self, generator: torch.Generator) -> Batches:
        """Batches of ``(inputs, labels, example indices)``."""
        return Batches(
            len(self.splits["train"]),
            self.batch_size,
            generator,
            lambda i: (*self.fetch("train", i), i),
        )

    def train_step(
        self, model: nn.Module, masker: DynamicMask | None, batch: Any, device: torch.device
    ) -> StepOutput:
        x, y, *rest = batch  # (inputs, labels[, example indices])
        x, y = x.to(device), y.to(device)
        keys, key_valid = None, None
        examples = masker is not None and masker.per_sample
        context: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if masker is not None and examples:
            if not rest:
                raise ValueError("a per-example masker needs batches with example indices.")
            keys = rest[0].to(device)  # the tracker's keys: the examples
            context = masker.sample_keys(keys)
        elif masker is not None and masker.tracker is not None and self.keys_of is not None:
            keys, key_valid = self.keys_of(x)
        with context:
            if masker is not None and self.masked_forward is not None:
                logits = self.masked_forward(model, masker, x)  # (B, C)
            else:
                if masker is not None:
                    x = self.apply_mask(masker, x)
                logits = self.forward(model, x)  # (B, C)
        return StepOutput(
            F.cross_entropy(logits, y),
            logits.detach(),
            y,
            items=len(y),
            keys=keys,
            key_valid=key_valid,
            prediction=logits,
        )

    def batches(
        self, split: str, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``limit`` items (default all) of ``split`` in order, in evaluation batches."""
        n = len(self.splits[split])
        for idx in eval_batches(n if limit is None else min(n, limit), EVAL_BATCH):
            yield self.fetch(split, idx)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        """Accuracy and mean cross-entropy of ``model`` on (the first ``limit`` items of)
        ``split``."""
        n = len(self.splits[split]) if limit is None else min(len(self.splits[split]), limit)
        correct, loss = 0, 0.0
        for x, y in self.batches(split, limit):
            x, y = x.to(device), y.to(device)
            logits = self.forward(model, x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
        return {"accuracy": correct / n, "loss": loss / n}

    @torch.no_grad()
    def item_scores(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, Any]:
        """Whether each item of ``split`` (its first ``limit``) is classified right, 0/1
        (:mod:`maskwise.experiments.items`, kind ``"mean"``: their mean is the accuracy)."""
        right: list[int] = []
        for x, y in self.batches(split, limit):
            right += (self.forward(model, x.to(device)).argmax(-1) == y.to(device)).int().tolist()
        s = self.splits[split]
        items = fingerprint(s.tensor[: len(right)], s.labels[: len(right)])
        return {"kind": "mean", "items": items, "values": right}
