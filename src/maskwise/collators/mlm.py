"""``MLMCollator``: padding + masked-language-model masking (token, whole word, span)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from maskwise import functional as F
from maskwise._checks import check_split, not_special
from maskwise.collators.base import MaskingCollator

__all__ = ["MLMCollator"]


class MLMCollator(MaskingCollator):
    """Pad a list of examples and mask them for masked language modelling.

    Masking unit: ``"token"`` (BERT), ``"word"`` (whole-word masking) or ``"span"`` (SpanBERT /
    BART lengths, :func:`maskwise.functional.mask_spans`). Special tokens, padding and positions
    flagged by a ``special_tokens_mask`` field are never masked. Masked tokens are corrupted by
    :func:`maskwise.functional.corrupt` (80/10/10 by default).

    Whole words come from what a fast tokenizer returns, whichever each example carries:

    * ``word_ids``: the encoding's word ids (``encoding.word_ids(i)``, ``None`` or -1 for
      tokens outside any word), or any integer word ids;
    * ``offset_mapping``: the character offsets of ``tokenizer(..., return_offsets_mapping=True)``
      (what ``transformers.DataCollatorForLanguageModeling(whole_word_mask=True)`` takes): a word
      is a run of tokens with no gap between them
      (:func:`maskwise.functional.word_ids_from_offsets`).

    Returns a dict with ``input_ids``, ``attention_mask`` and ``labels`` (-100 where not masked),
    plus any other per-token or scalar fields of the examples (``word_ids``,
    ``offset_mapping`` and ``special_tokens_mask`` are consumed, since models do not take them).
    Works as a ``DataLoader(collate_fn=...)`` and as a ``transformers.Trainer(data_collator=...)``.
    See the module docstring for randomness: by default the keyed mask of an example is drawn
    anew each time it is collated, so masks change every epoch without any callback.

    With ``Trainer``, keep the ``word_ids`` / ``offset_mapping`` and ``idx`` fields from being
    dropped before they reach the collator: ``TrainingArguments(remove_unused_columns=False)``
    (Trainer removes the fields the model's ``forward`` does not take). Without ``idx`` the
    masks fall back to per-worker streams (still new every batch); without word fields,
    ``unit="word"`` raises an error that says so.

    Args:
        mask_id: id of the mask token.
        pad_id: id used for padding.
        vocab_size: vocabulary size (for random replacements).
        special_ids: ids never masked nor drawn as random replacements.
        rate: fraction of maskable tokens (or words) to mask: a float, a schedule or a
            controller; settable later (``collator.rate = ...``).
        unit: ``"token"``, ``"word"`` or ``"span"``.
        replace_prob: probability that a masked token becomes ``mask_id``.
        random_prob: probability that it becomes a random token.
        exact: exact count per row instead of Bernoulli draws.
        mean_span_length, span_distribution, max_span_length: span settings for ``unit="span"``.
        pad_to_multiple_of: round the padded length up to a multiple of this.
        padding_side: ``"right"`` or ``"left"``.
        seed: seed of the masks (None: drawn from torch's global generator).
        index_key: example field holding its dataset index, for keyed masks (None disables).
        return_index: keep the index field in the batch (by default it is dropped, since models
            do not take it).
        redraw: ``"always"`` (default: a new keyed mask every time an example is collated) or
            ``"epoch"`` (the same keyed mask until :meth:`set_epoch`); see
            :class:`~maskwise.collators.MaskingCollator`.
        num_examples: dataset size, to size the per-example draw counters (default: a table of
            2**20); see :class:`~maskwise.collators.MaskingCollator`.

    >>> c = MLMCollator(mask_id=4, pad_id=0, vocab_size=100, special_ids=[0, 1, 2], rate=0.5,
    ...                 seed=0)
    >>> batch = c([[1, 10, 11, 12, 13, 2], [1, 20, 21, 2]])
    >>> sorted(batch), batch["input_ids"].shape
    (['attention_mask', 'input_ids', 'labels'], torch.Size([2, 6]))
    >>> bool((batch["labels"][batch["attention_mask"] == 0] == -100).all())
    True
    """

    def __init__(
        self,
        *,
        mask_id: int,
        pad_id: int,
        vocab_size: int,
        special_ids: Iterable[int] = (),
        rate: Any = 0.15,
        unit: str = "token",
        replace_prob: float = 0.8,
        random_prob: float = 0.1,
        exact: bool = False,
        mean_span_length: float = 3.0,
        span_distribution: str | Sequence[float] = "geometric",
        max_span_length: int = 10,
        pad_to_multiple_of: int | None = None,
        padding_side: str = "right",
        seed: int | None = None,
        index_key: str | None = "idx",
        return_index: bool = False,
        redraw: str = "always",
        num_examples: int | None = None,
    ) -> None:
        super().__init__(
            rate=rate,
            pad_id=pad_id,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            seed=seed,
            index_key=index_key,
            return_index=return_index,
            redraw=redraw,
            num_examples=num_examples,
        )
        if unit not in ("token", "word", "span"):
            raise ValueError(f"unit must be 'token', 'word' or 'span' ({unit!r} given).")
        if mask_id is None:
            raise ValueError("mask_id is required (None given): the tokenizer needs a mask token.")
        self.mask_id = int(mask_id)
        self.vocab_size = int(vocab_size)
        self.special_ids = tuple(sorted({int(i) for i in special_ids} | {self.pad_id}))
        self.unit = unit
        self.replace_prob, self.random_prob = check_split(replace_prob, random_prob)
        self.exact = exact
        self.mean_span_length = mean_span_length
        self.span_distribution = span_distribution
        self.max_span_length = max_span_length
        # Fail now, not in a worker, on bad span settings.
        F.span_length_pmf(span_distribution, mean_span_length, max_span_length)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> MLMCollator:
        """Build from a Hugging Face tokenizer: mask, pad and special ids, vocabulary size and
        padding side are read from it; ``kwargs`` go to the constructor."""
        if getattr(tokenizer, "mask_token_id", None) is None:
            raise ValueError(
                "The tokenizer has no mask token (mask_token_id is None); add one, e.g. "
                "tokenizer.add_special_tokens({'mask_token': '[MASK]'})."
            )
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                "The tokenizer has no pad token (pad_token_id is None); set tokenizer.pad_token."
            )
        kwargs.setdefault("padding_side", getattr(tokenizer, "padding_side", "right"))
        kwargs.setdefault("special_ids", list(tokenizer.all_special_ids))
        return cls(
            mask_id=tokenizer.mask_token_id,
            pad_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
            **kwargs,
        )

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self._pad(examples)
        generator = self._generator(batch)
        rate = self.rate
        ids = batch["input_ids"]
        valid = batch["attention_mask"].bool()
        not_special_ids = not_special(ids, self.special_ids)  # None only without special ids
        if not_special_ids is not None:
            valid &= not_special_ids
        special_mask = batch.pop("special_tokens_mask", None)
        if special_mask is not None:
            valid &= ~special_mask.bool()
        word_ids = batch.pop("word_ids", None)
        offsets = batch.pop("offset_mapping", None)
        if self.unit == "token":
            masked = F.sample_mask(valid, rate, exact=self.exact, generator=generator)
        elif self.unit == "word":
            if word_ids is None and offsets is not None:
                # Tokens that cannot be masked (special, padding) end a word.
                word_ids = F.word_ids_from_offsets(offsets, special_tokens_mask=~valid)
            if word_ids is None:
                raise ValueError(
                    "unit='word' needs 'word_ids' or 'offset_mapping' in every example: "
                    "tokenize with return_offsets_mapping=True, or store encoding.word_ids(i) "
                    "(maskwise.functional.word_ids_from_encoding). With transformers.Trainer, "
                    "also pass TrainingArguments(remove_unused_columns=False): Trainer drops "
                    "the fields its model's forward does not take."
                )
            word_ids = torch.where(valid, word_ids.long(), -1)
            masked = F.mask_words(word_ids, rate, exact=self.exact, generator=generator)
        else:
            masked = F.mask_spans(
                valid,
                rate,
                mean_length=self.mean_span_length,
                distribution=self.span_distribution,
                max_length=self.max_span_length,
                exact=self.exact,
                generator=generator,
            )
        batch["input_ids"], batch["labels"] = F.corrupt(
            ids,
            masked,
            mask_id=self.mask_id,
            vocab_size=self.vocab_size,
            replace_prob=self.replace_prob,
            random_prob=self.random_prob,
            special_ids=self.special_ids,
            generator=generator,
        )
        return self._finish(batch, batch["attention_mask"].sum(1))

    def __repr__(self) -> str:
        return (
            f"MLMCollator(unit={self.unit!r}, rate={self.rate}, mask_id={self.mask_id}, "
            f"replace_prob={self.replace_prob}, random_prob={self.random_prob}, seed={self.seed})"
        )
