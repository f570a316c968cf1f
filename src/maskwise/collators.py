"""Collators for ``DataLoader`` and Hugging Face ``Trainer``: padding + masking in one call.

No ``transformers`` import is needed: ``from_tokenizer`` only reads attributes of the tokenizer.

Randomness and reproducibility
------------------------------
A collator owns a ``seed`` and draws its masks in one of two ways:

* **Keyed by example** (recommended): when every example carries its dataset index under
  ``index_key`` (``"idx"`` by default; wrap a dataset with :class:`IndexedDataset`, or use
  ``datasets.Dataset.map(..., with_indices=True)``), the masks of example ``i`` are a pure
  function of ``(seed, epoch, i)`` through :class:`maskwise.random.KeyedGenerator`. They do not
  depend on the batch the example lands in, on padding, on the number of DataLoader workers, on
  which worker runs it, or on where a run resumed.
* **Per-worker streams**: otherwise each batch draws from a ``torch.Generator`` seeded with
  ``(seed, epoch, rank, worker id, batches its worker drew before)``, where rank is the
  ``torch.distributed`` rank (0 without it) and the worker id is -1 in the main process. Workers
  and ranks never share a stream, runs with the same seed and number of workers draw the same
  masks, and re-created (non-persistent) workers do not repeat the previous epoch's masks. These
  masks do depend on the number of workers; only keyed masks do not. Use one collator object per
  DataLoader that runs at the same time (train and eval loaders one after the other are fine).

The rate may be a float, a schedule (``maskwise.dynamic.cosine(...)``, read at the step set by
:meth:`set_step`) or a ``ReliabilityController`` (its rate lives in shared memory, so updates in
the training process reach the workers).

The epoch comes from :meth:`set_epoch`: call it at the start of every epoch, as with
``DistributedSampler`` (``maskwise.integrations.hf.MaskwiseCallback`` does it for Hugging Face
``Trainer``, which does not). Without it keyed masks repeat every epoch, i.e. static masking.
The rate and epoch live in a small shared-memory tensor that every worker reads at each batch,
so ``collator.rate = r`` or ``collator.set_epoch(e)`` in the training process reaches DataLoader
workers, persistent ones included, from the next batch they collate; batches already prefetched
(``prefetch_factor`` per worker) keep the values they were made with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info

from maskwise import functional as F
from maskwise._checks import check_mean_length, check_split, not_special
from maskwise.dynamic.rates import check_rate_source, resolve_rate
from maskwise.random import KeyedGenerator, distributed_rank, hash_keys, seed_from_global

__all__ = ["IndexedDataset", "MLMCollator", "T5Collator", "pad_examples"]

# Padding values of the per-token fields a collator may meet; other per-token fields get 0.
_PAD_VALUES = {"attention_mask": 0, "word_ids": -1, "labels": -100, "special_tokens_mask": 1}
_MAX_WORKER_SLOTS = (
    256  # batch counters; worker ids beyond share a counter, their streams still differ by id
)


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so every example carries its index (for keyed masks).

    Dict examples get an extra ``key`` entry; any other example ``x`` becomes
    ``{"input_ids": x, key: i}``.

    >>> ds = IndexedDataset([[5, 6], [7]])
    >>> ds[1]
    {'input_ids': [7], 'idx': 1}
    """

    def __init__(self, dataset: Any, key: str = "idx") -> None:
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = self.dataset[i]
        if isinstance(x, Mapping):
            return {**x, self.key: i}
        return {"input_ids": x, self.key: i}


def _as_1d(value: Any, key: str) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if t.dim() != 1:
        raise ValueError(f"Field {key!r} of an example must be 1-D (shape {tuple(t.shape)} given).")
    return t


def pad_examples(
    examples: Sequence[Any],
    *,
    pad_id: int,
    pad_to_multiple_of: int | None = None,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Stack examples into padded tensors.

    ``examples`` are dicts holding ``input_ids`` (list, tuple or 1-D tensor) and optionally other
    fields, or bare ``input_ids``. Fields as long as ``input_ids`` are padded (``input_ids`` with
    ``pad_id``, ``attention_mask`` 0, ``word_ids`` -1, ``labels`` -100, ``special_tokens_mask`` 1,
    others 0); numeric scalars are stacked; anything else is an error naming the field. An
    ``attention_mask`` is created when absent.

    >>> b = pad_examples([{"input_ids": [8], "label": 1}, {"input_ids": [1, 2], "label": 0}], pad_id=0)
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist(), b["label"].tolist()
    ([[8, 0], [1, 2]], [[1, 0], [1, 1]], [1, 0])
    """
    if len(examples) == 0:
        raise ValueError("Cannot collate an empty batch (0 examples given).")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left' ({padding_side!r} given).")
    rows = [dict(ex) if isinstance(ex, Mapping) else {"input_ids": ex} for ex in examples]
    keys = list(rows[0])
    if "input_ids" not in keys:
        raise ValueError(f"Examples must hold 'input_ids' (keys {keys} given).")
    for i, row in enumerate(rows):
        if set(row) != set(keys):
            raise ValueError(f"Example {i} has keys {sorted(row)}, example 0 has {sorted(keys)}.")
    ids = [_as_1d(r["input_ids"], "input_ids") for r in rows]
    lengths = [t.shape[0] for t in ids]
    width = max(lengths)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    B = len(rows)
    batch: dict[str, torch.Tensor] = {}
    if "attention_mask" not in keys:
        keys.append("attention_mask")
        for r, n in zip(rows, lengths):
            r["attention_mask"] = torch.ones(n, dtype=torch.long)
    for key in keys:
        values = [r[key] for r in rows]
        first = values[0]
        if (
            key == "input_ids"
            or isinstance(first, (list, tuple, torch.Tensor))
            and (not isinstance(first, torch.Tensor) or first.dim() > 0)
        ):
            seqs = ids if key == "input_ids" else [_as_1d(v, key) for v in values]
            for i, (s, n) in enumerate(zip(seqs, lengths)):
                if s.shape[0] != n:
                    raise ValueError(
                        f"Field {key!r} of example {i} has length {s.shape[0]}, its input_ids {n}."
                    )
            dtype = seqs[0].dtype if seqs[0].numel() else torch.long
            if not (dtype.is_floating_point or dtype == torch.bool):
                dtype = torch.long
            fill = pad_id if key == "input_ids" else _PAD_VALUES.get(key, 0)
            out = torch.full((B, width), fill, dtype=dtype)
            for i, (s, n) in enumerate(zip(seqs, lengths)):
                if padding_side == "right":
                    out[i, :n] = s
                else:
                    out[i, width - n :] = s
            batch[key] = out
        elif isinstance(first, (bool, int, float)) or (
            isinstance(first, torch.Tensor) and first.dim() == 0
        ):
            batch[key] = torch.as_tensor(
                [v.item() if isinstance(v, torch.Tensor) else v for v in values]
            )
        else:
            raise TypeError(
                f"Cannot collate field {key!r} of type {type(first).__name__}; remove it from the "
                "examples (e.g. dataset.remove_columns) or convert it to numbers."
            )
    return batch


def _right_to_left(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Turn right-padded rows of ``x`` (B, W) with ``lengths`` real entries into left-padded ones."""
    W = x.shape[1]
    index = (torch.arange(W) - (W - lengths.unsqueeze(1))) % W  # (B, W)
    return x.gather(1, index)


class _SharedState:
    """State every DataLoader worker reads at each batch: rate, epoch and batches per worker.

    Lives in shared memory, so writes in the training process are seen by forked or spawned
    workers, persistent ones included.
    """

    def __init__(self, rate: float) -> None:
        self.values = torch.tensor(
            [rate, 0.0, 0.0], dtype=torch.float64
        ).share_memory_()  # rate, epoch, step
        # batches[0]: main process; batches[w + 1]: DataLoader worker w. Each slot has one writer.
        self.batches = torch.zeros(_MAX_WORKER_SLOTS + 1, dtype=torch.long).share_memory_()


class _MaskingCollator:
    """Padding, seeding and shared state common to the collators."""

    def __init__(
        self,
        *,
        rate: Any,
        pad_id: int,
        pad_to_multiple_of: int | None,
        padding_side: str,
        seed: int | None,
        index_key: str | None,
        return_index: bool,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left' ({padding_side!r} given).")
        self._source: Any = None  # a schedule or controller giving the rate, if any
        self._state = _SharedState(0.0)
        self.rate = rate
        self.pad_id = int(pad_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side
        self.seed = seed_from_global() if seed is None else int(seed)
        self.index_key = index_key
        self.return_index = return_index

    # The rate and epoch are properties over shared memory so workers see every change.
    @property
    def rate(self) -> float:
        """The current rate: the shared float, or the schedule at the shared step, or the
        controller's shared rate (read in whichever process collates)."""
        source = self._source
        if source is None:
            return float(self._state.values[0])
        return resolve_rate(source, int(self._state.values[2]))

    @rate.setter
    def rate(self, value: Any) -> None:
        """A rate source: a float, a schedule (``rate(step)``, stepped by :meth:`set_step`) or a
        controller."""
        value = check_rate_source(value)
        if callable(value):
            self._source = value
        else:
            self._source = None
            self._state.values[0] = value

    @property
    def step(self) -> int:
        return int(self._state.values[2])

    def set_step(self, step: int) -> None:
        """Set the training step a schedule rate is read at (shared with the workers)."""
        self._state.values[2] = float(int(step))

    @property
    def epoch(self) -> int:
        return int(self._state.values[1])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that keys the masks (call at the start of every epoch)."""
        self._state.values[1] = float(int(epoch))

    def _generator(self, batch: dict[str, torch.Tensor]) -> torch.Generator | KeyedGenerator:
        epoch = self.epoch
        if self.index_key is not None and self.index_key in batch:
            idx = batch[self.index_key].long()
            return KeyedGenerator(hash_keys(self.seed, epoch, idx))
        info = get_worker_info()
        worker = -1 if info is None else info.id
        slot = 0 if info is None else 1 + info.id % _MAX_WORKER_SLOTS
        # A fresh generator per batch, seeded by how many batches this slot drew before: the
        # stream is a function of (seed, epoch, rank, worker, counter), so re-created workers
        # never replay old masks and a collator restored from state_dict continues exactly.
        done = int(self._state.batches[slot])
        self._state.batches[slot] += 1
        key = hash_keys(self.seed, epoch, distributed_rank(), worker, done)
        return torch.Generator().manual_seed(int(key) & (2**63 - 1))

    def _pad(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        # Always right-padded while masking: a token's position in its row then does not depend
        # on the batch width, which keyed masks need. Left padding is applied at the end.
        return pad_examples(
            examples,
            pad_id=self.pad_id,
            pad_to_multiple_of=self.pad_to_multiple_of,
            padding_side="right",
        )

    def _finish(
        self,
        batch: dict[str, torch.Tensor],
        lengths: torch.Tensor,
        keys: Iterable[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Drop the index unless asked for; move right padding to the left for ``keys``
        (default: every (B, W) field)."""
        if self.index_key is not None and not self.return_index:
            batch.pop(self.index_key, None)
        if self.padding_side == "left":
            for key in list(batch) if keys is None else keys:
                value = batch[key]
                if value.dim() == 2 and value.shape[1] > 0:
                    batch[key] = _right_to_left(value, lengths)
        return batch

    def state_dict(self) -> dict[str, Any]:
        source = self._source
        return {
            "seed": self.seed,
            "rate": self.rate,
            "epoch": self.epoch,
            "step": self.step,
            "batches": self._state.batches.clone(),
            "rate_source": source.state_dict() if hasattr(source, "state_dict") else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seed = int(state["seed"])
        if self._source is None:
            self.rate = float(state["rate"])
        elif state.get("rate_source") is not None and hasattr(self._source, "load_state_dict"):
            self._source.load_state_dict(state["rate_source"])
        self.set_epoch(int(state["epoch"]))
        self.set_step(int(state.get("step", 0)))
        self._state.batches.copy_(state["batches"])


class MLMCollator(_MaskingCollator):
    """Pad a list of examples and mask them for masked language modelling.

    Masking unit: ``"token"`` (BERT), ``"word"`` (whole-word masking; needs ``word_ids`` in each
    example, see :func:`maskwise.functional.word_ids_from_encoding`) or ``"span"`` (SpanBERT /
    BART lengths, :func:`maskwise.functional.mask_spans`). Special tokens, padding and positions
    flagged by a ``special_tokens_mask`` field are never masked. Masked tokens are corrupted by
    :func:`maskwise.functional.corrupt` (80/10/10 by default).

    Returns a dict with ``input_ids``, ``attention_mask`` and ``labels`` (-100 where not masked),
    plus any other per-token or scalar fields of the examples (``word_ids`` and
    ``special_tokens_mask`` are consumed). Works as a ``DataLoader(collate_fn=...)`` and as a
    ``transformers.Trainer(data_collator=...)``. See the module docstring for randomness.

    With ``Trainer``, keep the ``word_ids`` and ``idx`` fields from being dropped before they
    reach the collator: ``TrainingArguments(remove_unused_columns=False)`` (Trainer removes
    columns the model's ``forward`` does not take). Without ``idx`` the masks fall back to
    per-worker streams; without ``word_ids``, ``unit="word"`` raises an error.

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

    >>> c = MLMCollator(mask_id=4, pad_id=0, vocab_size=100, special_ids=[0, 1, 2], rate=0.5, seed=0)
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
        valid = batch["attention_mask"].bool() & not_special(ids, self.special_ids)  # type: ignore[operator]
        special_mask = batch.pop("special_tokens_mask", None)
        if special_mask is not None:
            valid &= ~special_mask.bool()
        word_ids = batch.pop("word_ids", None)
        if self.unit == "token":
            masked = F.sample_mask(valid, rate, exact=self.exact, generator=generator)
        elif self.unit == "word":
            if word_ids is None:
                raise ValueError(
                    "unit='word' needs 'word_ids' in every example; build them with "
                    "maskwise.functional.word_ids_from_encoding or word_ids_from_offsets."
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


class T5Collator(_MaskingCollator):
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
