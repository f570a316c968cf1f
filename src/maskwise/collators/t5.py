"""``T5Collator``: padding + T5 span corruption into sentinel inputs and targets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from maskwise import functional as F
from maskwise._checks import check_mean_length, not_special
from maskwise.collators.base import MaskingCollator

__all__ = ["T5Collator"]


class T5Collator(MaskingCollator):
    """Pad examples and apply T5 span corruption for encoder-decoder models.

    Spans come from :func:`maskwise.functional.mask_spans` (``exact=True``, T5's arithmetic, by
    default) and are rewritten by :func:`maskwise.functional.t5_corrupt`. Returns
    ``input_ids``, ``attention_mask`` and ``labels`` (targets, padded with -100); Hugging Face
    seq2seq models build ``decoder_input_ids`` from ``labels``.

    Args:
        sentinel_ids: ids of ``<extra_id_0>``, ``<extra_id_1>``, ...
        eos_id: end-of-sequence id (appended to targets, and to inputs that lack it).
        pad_id: padding id.
        special_ids: ids never masked (``eos_id`` and ``pad_id`` always are).
        rate: noise density; settable later (``collator.rate``).
        mean_span_length: mean noise span length.
        exact: T5's exact counts (default) or random lengths (see ``mask_spans``).
        padding_side: side of the encoder inputs' padding; ``labels`` are always right-padded.
        pad_to_multiple_of, seed, index_key: as in :class:`MLMCollator`.

    >>> c = T5Collator(sentinel_ids=list(range(99, 89, -1)), eos_id=1, pad_id=0, seed=0)
    >>> b = c([list(range(10, 30)), list(range(40, 50))])
    >>> sorted(b), int(b["labels"][0, -1]) in (1, -100)
    (['attention_mask', 'input_ids', 'labels'], True)
    """

    def __init__(
        self,
        *,
        sentinel_ids: Sequence[int],
        eos_id: int,
        pad_id: int,
        special_ids: Iterable[int] = (),
        rate: Any = 0.15,
        mean_span_length: float = 3.0,
        exact: bool = True,
        pad_to_multiple_of: int | None = None,
        padding_side: str = "right",
        seed: int | None = None,
        index_key: str | None = "idx",
        return_index: bool = False,
    ) -> None:
        super().__init__(
            rate=rate,
            pad_id=pad_id,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            seed=seed,
            index_key=index_key,
            return_index=return_index,
        )
        self.sentinel_ids = [int(i) for i in sentinel_ids]
        if not self.sentinel_ids:
            raise ValueError("sentinel_ids must not be empty.")
        self.eos_id = int(eos_id)
        self.special_ids = tuple(sorted({int(i) for i in special_ids} | {self.eos_id, self.pad_id}))
        check_mean_length(mean_span_length)
        self.mean_span_length = float(mean_span_length)
        self.exact = exact

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> T5Collator:
        """Build from a T5-style tokenizer: ``<extra_id_N>`` sentinels, EOS, pad, special ids."""
        if "sentinel_ids" not in kwargs:
            sentinels: list[int] = []
            unk = getattr(tokenizer, "unk_token_id", None)
            while True:
                tid = tokenizer.convert_tokens_to_ids(f"<extra_id_{len(sentinels)}>")
                if tid is None or tid == unk:
                    break
                sentinels.append(int(tid))
            if not sentinels:
                raise ValueError(
                    "The tokenizer has no <extra_id_N> sentinel tokens; pass sentinel_ids=..."
                )
            kwargs["sentinel_ids"] = sentinels
        for name in ("eos_token_id", "pad_token_id"):
            if getattr(tokenizer, name, None) is None:
                raise ValueError(
                    f"The tokenizer has no {name.replace('_id', '')} ({name} is None)."
                )
        kwargs.setdefault("special_ids", list(tokenizer.all_special_ids))
        kwargs.setdefault("padding_side", getattr(tokenizer, "padding_side", "right"))
        return cls(eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, **kwargs)

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self._pad(examples)
        generator = self._generator(batch)
        ids = batch["input_ids"]
        attention = batch["attention_mask"]
        valid = attention.bool() & not_special(ids, self.special_ids)  # type: ignore[operator]
        masked = F.mask_spans(
            valid,
            self.rate,
            mean_length=self.mean_span_length,
            exact=self.exact,
            generator=generator,
        )
        inputs, targets, in_len, tgt_len = F.t5_corrupt_with_lengths(
            ids,
            masked,
            sentinel_ids=self.sentinel_ids,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            attention_mask=attention,
        )
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            inputs = torch.nn.functional.pad(inputs, (0, -inputs.shape[1] % m), value=self.pad_id)
            targets = torch.nn.functional.pad(
                targets, (0, -targets.shape[1] % m), value=self.pad_id
            )
        pos_in = torch.arange(inputs.shape[1])
        pos_tgt = torch.arange(targets.shape[1])
        out = {
            "input_ids": inputs,
            "attention_mask": (pos_in < in_len.unsqueeze(1)).long(),
            "labels": targets.masked_fill(pos_tgt >= tgt_len.unsqueeze(1), -100),
        }
        if self.index_key is not None and self.index_key in batch:
            out[self.index_key] = batch[self.index_key]  # dropped by _finish unless return_index
        # Encoder inputs follow padding_side; labels stay right-padded, as decoders expect.
        return self._finish(out, in_len, keys=("input_ids", "attention_mask"))

    def __repr__(self) -> str:
        return (
            f"T5Collator(rate={self.rate}, mean_span_length={self.mean_span_length}, "
            f"sentinels={len(self.sentinel_ids)}, seed={self.seed})"
        )
