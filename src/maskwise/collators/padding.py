"""Padding a list of examples into batch tensors, and datasets that carry their index."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["IndexedDataset", "check_pad_to_multiple_of", "pad_examples", "right_to_left"]

# Padding values of the per-token fields a collator may meet; other per-token fields get 0.
# ``offset_mapping`` pads with (0, 0), the offsets of special tokens: padding is no word.
_PAD_VALUES = {"attention_mask": 0, "word_ids": -1, "labels": -100, "special_tokens_mask": 1}


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


def check_pad_to_multiple_of(value: Any) -> int | None:
    """``value`` if it is None or an int >= 1, else an error naming ``pad_to_multiple_of``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"pad_to_multiple_of must be an int >= 1 or None ({value!r} given).")
    if value < 1:
        raise ValueError(f"pad_to_multiple_of must be an int >= 1 or None ({value} given).")
    return int(value)


def _per_token(value: Any, key: str) -> torch.Tensor:
    """One example's per-token field as a tensor whose first dimension is the token."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        if key == "word_ids" and None in value:
            # ``BatchEncoding.word_ids(i)`` (and a datasets column built from it): None for
            # tokens outside any word.
            value = [-1 if w is None else w for w in value]
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(
                f"Cannot collate field {key!r}: its values are not numbers ({e}); remove it from "
                "the examples (e.g. dataset.remove_columns) or convert it to numbers."
            ) from None
    if t.dim() == 0:
        raise ValueError(f"Field {key!r} of an example must be a sequence (a scalar given).")
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
    fields, or bare ``input_ids``. Per-token fields, whose first dimension is as long as
    ``input_ids`` (``word_ids`` (L,), ``offset_mapping`` (L, 2), ...), are padded along it to
    (B, W, ...): ``input_ids`` with ``pad_id``, ``attention_mask`` 0, ``word_ids`` -1 (``None``
    entries, as ``BatchEncoding.word_ids()`` returns for special tokens, become -1 too),
    ``labels`` -100, ``special_tokens_mask`` 1, others (``offset_mapping``, ``token_type_ids``)
    0. Numeric scalars are stacked; anything else is an error naming the field. An
    ``attention_mask`` is created when absent.

    >>> examples = [{"input_ids": [8], "label": 1}, {"input_ids": [1, 2], "label": 0}]
    >>> b = pad_examples(examples, pad_id=0)
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist(), b["label"].tolist()
    ([[8, 0], [1, 2]], [[1, 0], [1, 1]], [1, 0])
    """
    if len(examples) == 0:
        raise ValueError("Cannot collate an empty batch (0 examples given).")
    multiple = check_pad_to_multiple_of(pad_to_multiple_of)
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left' ({padding_side!r} given).")
    rows = [dict(ex) if isinstance(ex, Mapping) else {"input_ids": ex} for ex in examples]
    keys = list(rows[0])
    if "input_ids" not in keys:
        raise ValueError(f"Examples must hold 'input_ids' (keys {keys} given).")
    for i, row in enumerate(rows):
        if set(row) != set(keys):
            raise ValueError(f"Example {i} has keys {sorted(row)}, example 0 has {sorted(keys)}.")
    ids = [_per_token(r["input_ids"], "input_ids") for r in rows]
    for t in ids:
        if t.dim() != 1:
            raise ValueError(f"input_ids of an example must be 1-D (shape {tuple(t.shape)} given).")
    lengths = [t.shape[0] for t in ids]
    width = max(lengths)
    if multiple is not None:
        width = -(-width // multiple) * multiple
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
            seqs = ids if key == "input_ids" else [_per_token(v, key) for v in values]
            for i, (s, n) in enumerate(zip(seqs, lengths)):
                if s.shape[0] != n or s.shape[1:] != seqs[0].shape[1:]:
                    raise ValueError(
                        f"Field {key!r} of example {i} has shape {tuple(s.shape)}; its input_ids "
                        f"have length {n} (and example 0's {key!r} shape "
                        f"{tuple(seqs[0].shape)})."
                    )
            dtype = seqs[0].dtype if seqs[0].numel() else torch.long
            if not (dtype.is_floating_point or dtype == torch.bool):
                dtype = torch.long
            fill = pad_id if key == "input_ids" else _PAD_VALUES.get(key, 0)
            out = torch.full((B, width, *seqs[0].shape[1:]), fill, dtype=dtype)
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


def right_to_left(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Right-padded rows of ``x`` (B, W, ...) with ``lengths`` real entries, made left-padded."""
    W = x.shape[1]
    index = (torch.arange(W, device=x.device) - (W - lengths.unsqueeze(1))) % W  # (B, W)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)
