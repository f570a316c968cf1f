"""``T5Collator``: padding + T5 span corruption into sentinel inputs and targets."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from maskwise import functional as F
from maskwise._checks import check_mean_length, not_special
from maskwise.collators.base import MaskingCollator
from maskwise.dynamic.rates import controller_of

__all__ = ["T5Collator"]


def _check_sentinels(sentinel_ids: Sequence[int], *, pad_id: int, eos_id: int) -> list[int]:
    """The sentinel ids as a list, if they are usable: non-empty, distinct, >= 0, and neither
    the padding nor the EOS id (a target would end, or be cut, at a sentinel)."""
    ids = [int(i) for i in sentinel_ids]
    if not ids:
        raise ValueError("sentinel_ids must not be empty.")
    negative = [i for i in ids if i < 0]
    if negative:
        raise ValueError(f"sentinel_ids must be >= 0 ({negative[:5]} given).")
    for name, value in (("pad_id", pad_id), ("eos_id", eos_id)):
        if value in ids:
            raise ValueError(
                f"sentinel_ids must not contain {name}={value} (found at position "
                f"{ids.index(value)})."
            )
    repeated = sorted(i for i, count in collections.Counter(ids).items() if count > 1)
    if repeated:
        raise ValueError(f"sentinel_ids must be distinct (repeated: {repeated[:5]}).")
    return ids


def _max_spans(n: int, low: float, high: float, mean_length: float, exact: bool) -> int:
    """The most spans ``mask_spans`` gives a row of ``n`` maskable tokens at a rate in
    ``[low, high]`` (``exact=True``: T5's arithmetic, exactly as ``mask_spans`` computes it;
    ``exact=False``: the mean count, ``n * rate / mean span length``)."""
    if not exact:
        mu = float((F.span_length_pmf("geometric", mean_length, 10) * torch.arange(1, 11)).sum())
        return round(n * high / mu)
    ends = torch.round(torch.tensor([low, high], dtype=torch.float64) * n).long()
    n_noise = torch.arange(int(ends[0]), int(ends[1]) + 1)  # every count a rate in range gives
    n_spans = torch.round(n_noise.double() / mean_length).long().clamp_min(1)
    n_spans = torch.minimum(torch.minimum(n_spans, n_noise), n - n_noise + 1)
    return int(n_spans.max())


class T5Collator(MaskingCollator):
    """Pad examples and apply T5 span corruption for encoder-decoder models.

    Spans come from :func:`maskwise.functional.mask_spans` (``exact=True``, T5's arithmetic, by
    default) and are rewritten by :func:`maskwise.functional.t5_corrupt`. Returns
    ``input_ids``, ``attention_mask`` and ``labels`` (targets, padded with -100); Hugging Face
    seq2seq models build ``decoder_input_ids`` from ``labels``.

    Every span takes one sentinel, so the sentinels must outnumber the spans of the longest row.
    With ``max_length`` (from the tokenizer's ``model_max_length`` in :meth:`from_tokenizer`)
    that is checked when the collator is built, and whenever the rate is set: T5's arithmetic
    gives a row of ``n`` tokens ``min(max(1, round(round(rate * n) / mean_span_length)),
    round(rate * n), n - round(rate * n) + 1)`` spans, at most for the longest row and, with a
    controller, over its ``[min_rate, max_rate]``; with ``exact=False`` the span count is random
    and its mean is checked. A batch with more spans than sentinels (a row longer than
    ``max_length``, a schedule's rate, an unlucky draw) is an error naming the settings to change.

    Args:
        sentinel_ids: ids of ``<extra_id_0>``, ``<extra_id_1>``, ...: distinct, >= 0, and none
            of them ``pad_id`` or ``eos_id``.
        eos_id: end-of-sequence id (appended to targets, and to inputs that lack it).
        pad_id: padding id.
        special_ids: ids never masked (``eos_id`` and ``pad_id`` always are).
        rate: noise density: a float, a schedule or a controller; settable later
            (``collator.rate``).
        mean_span_length: mean noise span length.
        exact: T5's exact counts (default) or random lengths (see ``mask_spans``).
        max_length: the longest example (in tokens) the collator will see, to check the sentinel
            budget when it is built; None: checked at every batch only.
        padding_side: side of the encoder inputs' padding; ``labels`` are always right-padded.
        pad_to_multiple_of, seed, index_key, return_index, redraw, num_examples: as in
            :class:`MLMCollator`.

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
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str = "right",
        seed: int | None = None,
        index_key: str | None = "idx",
        return_index: bool = False,
        redraw: str = "always",
        num_examples: int | None = None,
    ) -> None:
        # Settings first: the rate setter (in the base constructor) checks the sentinel budget.
        self.eos_id = int(eos_id)
        self.sentinel_ids = _check_sentinels(sentinel_ids, pad_id=int(pad_id), eos_id=self.eos_id)
        check_mean_length(mean_span_length)
        self.mean_span_length = float(mean_span_length)
        if not isinstance(exact, bool):
            raise TypeError(f"exact must be a bool ({exact!r} given).")
        self.exact = exact
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"max_length must be an int >= 1 or None ({max_length!r} given).")
        self.max_length = max_length
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
        self.special_ids = tuple(sorted({int(i) for i in special_ids} | {self.eos_id, self.pad_id}))

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
        longest = getattr(tokenizer, "model_max_length", None)
        # transformers sets model_max_length to int(1e30) when the model has no limit.
        if isinstance(longest, int) and 0 < longest < 10**9:
            kwargs.setdefault("max_length", longest)
        return cls(eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, **kwargs)

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self._pad(examples)
        generator = self._generator(batch)
        ids = batch["input_ids"]
        attention = batch["attention_mask"]
        valid = attention.bool() & not_special(ids, self.special_ids)  # type: ignore[operator]
        rate = self.rate
        masked = F.mask_spans(
            valid, rate, mean_length=self.mean_span_length, exact=self.exact, generator=generator
        )
        self._check_spans(masked, valid, rate)
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

    # -- the sentinel budget -------------------------------------------------------------------
    def _check_rate(self, value: Any) -> None:
        """The worst case of a new rate source against the sentinels, when ``max_length`` is
        known: a float, or a controller over its ``[min_rate, max_rate]`` (a schedule's range is
        unknown: its batches are checked as they come)."""
        if self.max_length is None:
            return
        if not callable(value):
            low = high = float(value)
            what = f"rate {high}"
        elif controller_of(value) is not None and hasattr(value, "max_rate"):
            low, high = float(getattr(value, "min_rate", 0.0)), float(value.max_rate)
            what = f"a rate up to the controller's max_rate={high}"
        else:
            return
        n = self.max_length
        worst = _max_spans(n, low, high, self.mean_span_length, self.exact)
        if worst > len(self.sentinel_ids):
            expected = "" if self.exact else " on average (exact=False)"
            raise ValueError(
                f"T5Collator: a row of max_length={n} tokens at {what} "
                f"(mean_span_length={self.mean_span_length}) has {worst} spans{expected}, but "
                f"there are {len(self.sentinel_ids)} sentinel_ids, one per span: pass at least "
                f"{worst} sentinel ids, a lower rate or a larger mean_span_length."
            )

    def _check_spans(self, masked: torch.Tensor, valid: torch.Tensor, rate: float) -> None:
        """An error naming the settings when a row of this batch has more spans than sentinels
        (t5_corrupt would only say that it has)."""
        prev = torch.nn.functional.pad(masked, (1, 0))[:, :-1]
        spans = (masked & ~prev).sum(1)  # (B,)
        worst = int(spans.max()) if spans.numel() else 0
        if worst > len(self.sentinel_ids):
            n = int(valid.sum(1)[spans.argmax()])
            raise ValueError(
                f"T5Collator: a row of {n} maskable tokens at rate {rate} "
                f"(mean_span_length={self.mean_span_length}) has {worst} spans, but there are "
                f"{len(self.sentinel_ids)} sentinel_ids, one per span: pass more sentinel ids, "
                "a lower rate or a larger mean_span_length, and max_length=<longest example> "
                "to have this checked when the collator is built."
            )

    def __repr__(self) -> str:
        return (
            f"T5Collator(rate={self.rate}, mean_span_length={self.mean_span_length}, "
            f"sentinels={len(self.sentinel_ids)}, seed={self.seed})"
        )
