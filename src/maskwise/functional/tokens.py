"""Token-level text masking: tokens, whole words, BERT corruption, causal-LM labels."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from typing import Any

import torch

from maskwise._checks import (
    check_long,
    check_probability,
    check_split,
    not_special,
    valid_from_attention_mask,
)
from maskwise.functional.select import Rate, draws_on_host, per_sample_rates, sample_mask
from maskwise.random import KeyedGenerator, integers, uniform

__all__ = [
    "corrupt",
    "lm_labels",
    "mask_tokens",
    "mask_words",
    "word_ids_from_encoding",
    "word_ids_from_offsets",
    "word_starts",
]

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    rate: Rate,
    *,
    special_ids: Iterable[int] | torch.Tensor = (),
    attention_mask: torch.Tensor | None = None,
    exact: bool = False,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | KeyedGenerator | None = None,
) -> torch.Tensor:
    """Choose tokens to mask, never special tokens nor padding.

    Padding is found from ``attention_mask`` (1 = real token); without one, put the pad id in
    ``special_ids``. Selection is :func:`sample_mask` over the remaining positions.

    Args:
        input_ids: integer (B, L).
        rate: float in [0, 1], (B,) tensor, or a range ``(low, high)`` (a rate per row).
        special_ids: ids never masked ([CLS], [SEP], <s>, pad, ...).
        attention_mask: optional (B, L), 1 = real token, 0 = padding.
        exact: exactly ``round(rate * n_valid)`` tokens per row instead of Bernoulli draws.
        weights: optional non-negative float (B, L) sampling weights.
        generator: random source (see :mod:`maskwise.random`).

    Returns:
        bool (B, L), True = masked.

    >>> ids = torch.tensor([[101, 7, 8, 9, 102, 0]])
    >>> m = mask_tokens(ids, 1.0, special_ids=[0, 101, 102])
    >>> m.int().tolist()
    [[0, 1, 1, 1, 0, 0]]
    """
    check_long("input_ids", input_ids)
    valid = not_special(input_ids, special_ids)
    if attention_mask is not None or valid is None:
        real = valid_from_attention_mask(attention_mask, input_ids.shape, input_ids.device)
        valid = real if valid is None else valid & real
    return sample_mask(valid, rate, exact=exact, weights=weights, generator=generator)


def word_starts(word_ids: torch.Tensor) -> torch.Tensor:
    """Bool (B, L): True where a word begins.

    A word is a maximal run of consecutive positions sharing one non-negative id, so ids that
    restart for the second sentence of a pair, or repeat after a special token, still give
    distinct words.

    >>> word_starts(torch.tensor([[-1, 0, 0, 1, -1, 0, 0, -1]])).int().tolist()
    [[0, 1, 0, 1, 0, 1, 0, 0]]
    """
    check_long("word_ids", word_ids)
    return _word_starts(word_ids, word_ids >= 0)


def _word_starts(word_ids: torch.Tensor, is_word: torch.Tensor) -> torch.Tensor:
    starts = torch.empty_like(is_word)
    starts[:, :1] = is_word[:, :1]
    torch.ne(word_ids[:, 1:], word_ids[:, :-1], out=starts[:, 1:])
    return starts.logical_and_(is_word)


def mask_words(
    word_ids: torch.Tensor,
    rate: Rate,
    *,
    exact: bool = False,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | KeyedGenerator | None = None,
) -> torch.Tensor:
    """Whole-word masking for any tokenizer: all tokens of a chosen word, or none.

    Each word is chosen with probability ``rate`` (or exactly ``round(rate * n_words)`` words per
    row with ``exact=True``); every token of a chosen word is masked. Words are the runs described
    in :func:`word_starts`. O(B * L) time and memory (plus one sort of (B, L) with ``exact``).

    Args:
        word_ids: integer (B, L): word index of each token, -1 for tokens in no word (special
            tokens, padding). Build it with :func:`word_ids_from_encoding` or
            :func:`word_ids_from_offsets`.
        rate: fraction of words to mask: float in [0, 1], (B,) tensor, or a range
            ``(low, high)`` (a rate per row).
        exact: exact word count per row.
        weights: optional non-negative float (B, L) per-token weights; a word's weight is the mean
            over its tokens.
        generator: random source.

    Returns:
        bool (B, L), True = masked.

    >>> wid = torch.tensor([[-1, 0, 0, 0, 1, 2, 2, -1]])
    >>> g = torch.Generator().manual_seed(3)
    >>> m = mask_words(wid, 0.34, exact=True, generator=g)  # round(0.34 * 3) = 1 word
    >>> m.int().tolist() in ([[0, 1, 1, 1, 0, 0, 0, 0]], [[0, 0, 0, 0, 1, 0, 0, 0]],
    ...                      [[0, 0, 0, 0, 0, 1, 1, 0]])
    True
    """
    check_long("word_ids", word_ids)
    B, L = word_ids.shape
    device = word_ids.device
    rate = per_sample_rates(rate, B, device=device, generator=generator)
    is_word = word_ids >= 0
    starts = _word_starts(word_ids, is_word)
    # Word slots are 1-based: slot w + 1 holds word w, slot 0 collects tokens before the first word.
    slot = starts.cumsum(1)  # (B, L) int64
    if not exact and weights is None and not isinstance(rate, torch.Tensor):
        # Hot path: one draw per slot, no count needed.
        p = check_probability("rate", rate)
        chosen = uniform((B, L + 1), generator=generator, device=device) < p  # (B, L + 1)
        return chosen.gather(1, slot).logical_and_(is_word)
    n_words = slot[:, -1:] if L else torch.zeros(B, 1, dtype=torch.long, device=device)
    pos = torch.arange(L + 1, device=device)
    slot_valid = (pos >= 1) & (pos <= n_words)  # (B, L + 1)
    word_weights = None
    if weights is not None:
        if not isinstance(weights, torch.Tensor) or weights.shape != word_ids.shape:
            raise ValueError(
                f"weights must have the shape of word_ids {tuple(word_ids.shape)} "
                f"({tuple(getattr(weights, 'shape', ()))} given)."
            )
        tok_w = torch.where(is_word, weights.to(torch.float32), 0.0)
        total = torch.zeros(B, L + 1, device=device).scatter_add_(1, slot, tok_w)
        count = torch.zeros(B, L + 1, device=device).scatter_add_(1, slot, is_word.float())
        word_weights = total / count.clamp_min(1.0)
    chosen = sample_mask(slot_valid, rate, exact=exact, weights=word_weights, generator=generator)
    return chosen.gather(1, slot) & is_word


def word_ids_from_encoding(encoding: Any) -> torch.Tensor:
    """Word ids from a Hugging Face ``BatchEncoding`` made by a fast tokenizer.

    Reads ``encoding.word_ids(i)`` for every row, with -1 where it is None (special tokens,
    padding). Rows of unequal length are padded with -1. Returns (B, L) for a batched encoding
    and (L,) for a single text. This is host-side preprocessing, one Python pass per row.
    """
    encodings = getattr(encoding, "encodings", None)
    if encodings is None:
        raise TypeError(
            "word_ids_from_encoding needs a BatchEncoding from a fast tokenizer "
            f"(a {type(encoding).__name__} without .encodings given); use "
            "word_ids_from_offsets with return_offsets_mapping=True otherwise."
        )
    rows = [[-1 if w is None else int(w) for w in e.word_ids] for e in encodings]
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    ids = encoding["input_ids"] if "input_ids" in encoding else None
    single = ids is not None and (
        (isinstance(ids, torch.Tensor) and ids.dim() == 1)
        or (isinstance(ids, list) and (len(ids) == 0 or not isinstance(ids[0], list)))
    )
    return out[0] if single else out


def word_ids_from_offsets(
    offset_mapping: torch.Tensor, *, special_tokens_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Word ids from character offsets: a word is a run of tokens with no gap between them.

    A token starts a new word when its start offset differs from the previous token's end, or
    the previous token is special or empty. Tokens with ``start == end`` (special tokens,
    padding) or flagged in ``special_tokens_mask`` get -1. Works for WordPiece, byte-level BPE
    and SentencePiece alike, as long as the tokenizer reports offsets into the original text.

    Args:
        offset_mapping: integer (B, L, 2) of (start, end) character offsets.
        special_tokens_mask: optional (B, L), 1 for special tokens.

    Returns:
        int64 (B, L).

    >>> offsets = torch.tensor(
    ...     [[[0, 0], [0, 3], [3, 5], [6, 9], [0, 0]]]  # [CLS] un ##fit for [SEP]
    ... )
    >>> word_ids_from_offsets(offsets).tolist()
    [[-1, 0, 0, 1, -1]]
    """
    offsets = torch.as_tensor(offset_mapping)
    if offsets.dim() != 3 or offsets.shape[-1] != 2:
        raise ValueError(
            f"offset_mapping must have shape (B, L, 2) ({tuple(offsets.shape)} given)."
        )
    start, end = offsets[..., 0].long(), offsets[..., 1].long()
    is_tok = end > start
    if special_tokens_mask is not None:
        is_tok = is_tok & ~torch.as_tensor(special_tokens_mask, device=offsets.device).bool()
    prev_end = torch.nn.functional.pad(end, (1, 0), value=-1)[:, :-1]
    prev_tok = torch.nn.functional.pad(is_tok, (1, 0), value=False)[:, :-1]
    new_word = is_tok & ((start != prev_end) | ~prev_tok)
    ids = new_word.long().cumsum(1) - 1
    return torch.where(is_tok, ids, -1)


def corrupt(
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    *,
    mask_id: int | None,
    vocab_size: int | None,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    special_ids: Iterable[int] | torch.Tensor = (),
    random_weights: torch.Tensor | None = None,
    generator: torch.Generator | KeyedGenerator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a mask BERT-style: ``[MASK]`` / random token / unchanged, and build the labels.

    Each masked position independently becomes ``mask_id`` with probability ``replace_prob``, a
    random id with probability ``random_prob``, and stays as it is otherwise (80/10/10 by
    default). Random ids are uniform over ``[0, vocab_size)`` minus ``special_ids`` and
    ``mask_id``, so a random replacement is never a special token; with ``random_weights`` they
    are drawn in proportion to the weights instead (token frequencies: unigram noising, Xie et
    al. 2017). ``input_ids`` is not modified.

    Args:
        input_ids: integer tensor (B, ...).
        masked: bool tensor of the same shape, True = masked (e.g. from :func:`mask_tokens`).
        mask_id: id of the mask token; required when ``replace_prob > 0``. An id in
            ``[0, vocab_size)`` that fits the dtype of ``input_ids``; it may be one of
            ``special_ids`` (Hugging Face tokenizers list the mask token among theirs).
        vocab_size: size of the vocabulary; required when ``random_prob > 0``.
        replace_prob: probability that a masked token becomes ``mask_id``.
        random_prob: probability that a masked token becomes a random token.
        special_ids: ids never drawn as random replacements.
        random_weights: optional (vocab_size,) non-negative weights of the random replacements
            (e.g. the training set's token counts); special ids and ``mask_id`` get none.
        generator: random source.

    Returns:
        ``(corrupted_ids, labels)``: ``corrupted_ids`` has the dtype of ``input_ids``; ``labels``
        is int64, the original id where masked and -100 elsewhere.

    >>> ids = torch.tensor([[5, 6, 7, 8]])
    >>> masked = torch.tensor([[False, True, True, False]])
    >>> x, y = corrupt(ids, masked, mask_id=4, vocab_size=10, replace_prob=1.0, random_prob=0.0)
    >>> x.tolist(), y.tolist()
    ([[5, 4, 4, 8]], [[-100, 6, 7, -100]])
    >>> unigram = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    >>> corrupt(ids, masked, mask_id=4, vocab_size=10, replace_prob=0.0, random_prob=1.0,
    ...         random_weights=unigram)[0].tolist()
    [[5, 9, 9, 8]]
    """
    check_long("input_ids", input_ids, dim=None)
    if not isinstance(masked, torch.Tensor) or masked.dtype != torch.bool:
        raise TypeError(
            f"masked must be a bool tensor ({getattr(masked, 'dtype', type(masked))} given)."
        )
    if masked.shape != input_ids.shape:
        raise ValueError(
            f"masked must have the shape of input_ids {tuple(input_ids.shape)} "
            f"({tuple(masked.shape)} given)."
        )
    replace_prob, random_prob = check_split(replace_prob, random_prob)
    if random_weights is not None and random_prob == 0:
        raise ValueError("random_weights weight the random replacements: random_prob must be > 0.")
    if replace_prob > 0 and mask_id is None:
        raise ValueError("mask_id is required when replace_prob > 0 (None given).")
    if mask_id is not None:
        _check_mask_id(mask_id, vocab_size, input_ids.dtype)
    device = input_ids.device
    allowed = None
    if random_prob > 0:
        if vocab_size is None or int(vocab_size) <= 0:
            raise ValueError(
                f"vocab_size must be a positive int when random_prob > 0 ({vocab_size!r} given)."
            )
        values = special_ids.tolist() if isinstance(special_ids, torch.Tensor) else special_ids
        excluded = {int(i) for i in values}
        if mask_id is not None:
            excluded.add(int(mask_id))
        if (
            not input_ids.is_floating_point()
            and int(vocab_size) - 1 > torch.iinfo(input_ids.dtype).max
        ):
            raise ValueError(
                f"vocab_size={vocab_size} does not fit input_ids of dtype {input_ids.dtype} "
                f"(max {torch.iinfo(input_ids.dtype).max}); use int64 ids."
            )
        allowed = _allowed_ids(int(vocab_size), tuple(sorted(excluded)), str(device))
        if allowed.numel() == 0:
            raise ValueError(
                f"No id is left to draw random replacements from: vocab_size={vocab_size} and "
                f"{len(excluded)} special ids."
            )
        cdf = None if random_weights is None else _cdf(random_weights, allowed, int(vocab_size))

    labels = torch.where(masked, input_ids.long(), IGNORE_INDEX)
    if replace_prob == 1.0:  # every masked token becomes [MASK]: nothing to draw
        return input_ids.masked_fill(masked, int(mask_id)), labels  # type: ignore[arg-type]
    if replace_prob == 0.0 and random_prob == 0.0:
        return input_ids.clone(), labels
    out = input_ids.clone()
    # On the CPU with a torch.Generator only the masked positions draw their 80/10/10 outcome,
    # and only those that get a random id draw one (row-major order): 15 % and 1.5 % of the
    # draws. Keyed generators and GPUs draw one per position (see draws_on_host).
    if draws_on_host(generator, device):
        at = masked.nonzero(as_tuple=True)
        u = uniform((at[0].numel(),), generator=generator, device=device)
        if replace_prob > 0:
            out[tuple(i[u < replace_prob] for i in at)] = int(mask_id)  # type: ignore[arg-type]
        if allowed is not None:
            pick = (u >= replace_prob).logical_and_(u < replace_prob + random_prob)
            at = tuple(i[pick] for i in at)
            out[at] = _random_ids(allowed, cdf, (at[0].numel(),), generator).to(out.dtype)
        return out, labels
    u = uniform(input_ids.shape, generator=generator, device=device)
    if replace_prob > 0:
        out.masked_fill_(masked.logical_and(u < replace_prob), int(mask_id))  # type: ignore[arg-type]
    if allowed is not None:
        is_random = (u >= replace_prob).logical_and_(u < replace_prob + random_prob)
        random_ids = _random_ids(allowed, cdf, input_ids.shape, generator)
        out = torch.where(is_random.logical_and_(masked), random_ids.to(out.dtype), out)
    return out, labels


def _random_ids(
    allowed: torch.Tensor,
    cdf: torch.Tensor | None,
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | KeyedGenerator | None,
) -> torch.Tensor:
    """Random replacement ids of ``shape``: uniform over ``allowed``, or by the ``cdf`` of
    their weights (inverse CDF)."""
    device = allowed.device
    if cdf is None:
        r = integers(shape, allowed.numel(), generator=generator, device=device)
    else:
        v = uniform(shape, generator=generator, device=device, dtype=cdf.dtype)
        r = torch.searchsorted(cdf, v * cdf[-1], right=True).clamp_max(cdf.numel() - 1)
    return allowed.index_select(0, r.reshape(-1)).view(r.shape)  # the r-th allowed id


def _check_mask_id(mask_id: int, vocab_size: int | None, dtype: torch.dtype) -> None:
    """``mask_id`` must be an id: an int >= 0, below ``vocab_size`` when it is known, that
    ``dtype`` can hold."""
    if isinstance(mask_id, bool):
        raise TypeError(f"mask_id must be an int ({mask_id!r} given).")
    try:
        mask_id = operator.index(mask_id)  # an int, a NumPy int, a 0-d integer tensor
    except TypeError:
        raise TypeError(f"mask_id must be an int ({mask_id!r} given).") from None
    if mask_id < 0:
        raise ValueError(f"mask_id must be a token id >= 0 ({mask_id} given).")
    if vocab_size is not None and mask_id >= vocab_size:
        raise ValueError(
            f"mask_id must be a token id in [0, vocab_size) = [0, {vocab_size}) ({mask_id} given)."
        )
    if not dtype.is_floating_point and mask_id > torch.iinfo(dtype).max:
        raise ValueError(
            f"mask_id={mask_id} does not fit input_ids of dtype {dtype} "
            f"(max {torch.iinfo(dtype).max})."
        )


def _float(device: torch.device) -> torch.dtype:
    """float64 for the inverse CDF of unigram draws, float32 where the device has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _cdf(weights: torch.Tensor, allowed: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The float64 (MPS: float32) cumulative sum of ``weights`` over the ``allowed`` ids
    (checked: a 1-D tensor of ``vocab_size`` finite, non-negative values, some weight on an
    allowed id)."""
    if not isinstance(weights, torch.Tensor) or weights.shape != (vocab_size,):
        raise ValueError(
            f"random_weights must be a tensor of shape ({vocab_size},) "
            f"({tuple(getattr(weights, 'shape', ())) or type(weights).__name__} given)."
        )
    w = weights.to(device=allowed.device, dtype=_float(allowed.device)).index_select(0, allowed)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("random_weights must be finite and non-negative.")
    cdf = w.cumsum(0)
    if float(cdf[-1]) <= 0:
        raise ValueError("random_weights put no weight on an id that may be drawn.")
    return cdf


@functools.lru_cache(maxsize=32)
def _allowed_ids(vocab_size: int, excluded: tuple[int, ...], device: str) -> torch.Tensor:
    """Ascending int64 ids of ``[0, vocab_size)`` minus ``excluded`` (cached: built once per
    setup).
    """
    keep = torch.ones(vocab_size, dtype=torch.bool)
    ex = [i for i in excluded if 0 <= i < vocab_size]
    if ex:
        keep[torch.tensor(ex)] = False
    return keep.nonzero().squeeze(1).to(device)


def lm_labels(
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    prompt_mask: torch.Tensor | None = None,
    prompt_lengths: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Labels for causal language modelling, aligned with ``input_ids``.

    Padding (from ``attention_mask``, never from the pad id) and prompt positions get
    ``ignore_index``; every other position, a real EOS included even when pad_id == eos_id, is a
    target. The labels are aligned with the inputs as Hugging Face causal LMs expect (the model
    shifts them); for a model that does not shift, use ``labels[:, 1:]`` against
    ``logits[:, :-1]``.

    Args:
        input_ids: integer (B, L).
        attention_mask: optional (B, L), 1 = real token.
        prompt_mask: optional bool (B, L), True = prompt (not a target).
        prompt_lengths: optional integer (B,) >= 0 (checked on CPU): the first
            ``prompt_lengths[b]`` real tokens of row ``b`` are the prompt (counted from the first
            real token, so left padding works; a length beyond the row makes it all prompt).
        ignore_index: label value for ignored positions.

    Returns:
        int64 (B, L).

    >>> ids = torch.tensor([[11, 12, 13, 2, 2]])   # pad_id == eos_id == 2
    >>> am = torch.tensor([[1, 1, 1, 1, 0]])
    >>> lm_labels(ids, attention_mask=am, prompt_lengths=torch.tensor([1])).tolist()
    [[-100, 12, 13, 2, -100]]
    """
    check_long("input_ids", input_ids)
    real = valid_from_attention_mask(attention_mask, input_ids.shape, input_ids.device)
    ignore = ~real
    if prompt_mask is not None:
        if not isinstance(prompt_mask, torch.Tensor) or prompt_mask.dtype != torch.bool:
            raise TypeError(
                f"prompt_mask must be a bool tensor "
                f"({getattr(prompt_mask, 'dtype', type(prompt_mask))} given)."
            )
        if prompt_mask.shape != input_ids.shape:
            raise ValueError(
                f"prompt_mask must have shape {tuple(input_ids.shape)} "
                f"({tuple(prompt_mask.shape)} given)."
            )
        ignore = ignore | prompt_mask.to(input_ids.device)
    if prompt_lengths is not None:
        check_long("prompt_lengths", prompt_lengths, dim=1)
        if prompt_lengths.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"prompt_lengths must have shape (B,) = ({input_ids.shape[0]},) "
                f"({tuple(prompt_lengths.shape)} given)."
            )
        if prompt_lengths.device.type == "cpu" and bool((prompt_lengths < 0).any()):
            raise ValueError(f"prompt_lengths must be >= 0 ({prompt_lengths.tolist()[:16]} given).")
        real_pos = real.long().cumsum(1) - 1  # index among real tokens
        ignore = ignore | (real & (real_pos < prompt_lengths.to(input_ids.device).unsqueeze(1)))
    return input_ids.long().masked_fill(ignore, ignore_index)
