"""Shared test cases: every attention spec and several compositions, each paired with its naive
reference from ``tests/reference/attention.py``.

A case is built for given lengths ``(Q, KV)``: ``case(Q, KV) -> (spec, reference)`` with the
reference a bool (B or 1, 1, Q, KV) tensor, True = may attend. Per-sample data (lengths, document
ids) are derived from ``Q`` and ``KV`` so that every case is valid for every shape used (KV >= 7),
and include the awkward rows: zero lengths, empty documents, all-padding rows, left padding and
holes in an HF mask.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from maskwise import attention as A
from tests.reference import attention as R

Case = Callable[[int, int], tuple[A.AttentionSpec, torch.Tensor]]


# -- per-sample data (B = 3 for every per-sample spec, so they compose) ------------------------
def pad_lengths(KV: int) -> torch.Tensor:
    return torch.tensor([KV, (2 * KV) // 3, 0])  # full row, right padded, all padding


def hf_mask(KV: int) -> torch.Tensor:
    j = torch.arange(KV)
    right = j < KV - 3
    left = j >= 4
    holes = j % 5 != 2
    return torch.stack([right, left, holes]).long()  # 1 = real, as Hugging Face


def doc_lengths(KV: int) -> list[list[int]]:
    # row 0: three documents then 2 padding; row 1: an empty document first, then padding;
    # row 2: nothing at all (all padding)
    return [[KV // 3, 1, KV - KV // 3 - 3], [0, KV // 2, 0], []]


def doc_ids(KV: int) -> torch.Tensor:
    # the same documents as ids with gaps in the numbering (ids need not be 0, 1, 2, ...)
    ids = torch.tensor(R.doc_ids(doc_lengths(KV), KV))
    return torch.where(ids >= 0, ids * 7 + 2, -1)


def prefix(KV: int) -> torch.Tensor:
    return torch.tensor([0, 3, KV])


def cross_lengths(Q: int, KV: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([Q, Q // 2, 0]), torch.tensor([KV, 0, KV // 2 + 1])


# -- mask_mod wrappers ---------------------------------------------------------------------------
def every_third(b, h, q_idx, kv_idx):
    return (q_idx - kv_idx) % 3 == 0


_MM_LENS = torch.tensor([5, 0, 11])


def first_keys(b, h, q_idx, kv_idx):
    return kv_idx < _MM_LENS.to(kv_idx.device)[b]


# -- the cases -----------------------------------------------------------------------------------
def _leaf_cases() -> dict[str, Case]:
    return {
        "full": lambda Q, KV: (A.full(), R.full(Q, KV)),
        "causal": lambda Q, KV: (A.causal(), R.causal(Q, KV)),
        "sliding_window1": lambda Q, KV: (A.sliding_window(1), R.sliding_window(1, Q, KV)),
        "sliding_window3": lambda Q, KV: (A.sliding_window(3), R.sliding_window(3, Q, KV)),
        "sliding_window16": lambda Q, KV: (A.sliding_window(16), R.sliding_window(16, Q, KV)),
        "chunked1": lambda Q, KV: (A.chunked(1), R.chunked(1, Q, KV)),
        "chunked5": lambda Q, KV: (A.chunked(5), R.chunked(5, Q, KV)),
        "chunked16": lambda Q, KV: (A.chunked(16), R.chunked(16, Q, KV)),
        "padding_lengths": lambda Q, KV: (
            A.padding(pad_lengths(KV)),
            R.padding(pad_lengths(KV), Q, KV),
        ),
        "padding_hf": lambda Q, KV: (A.padding(hf_mask(KV)), R.padding(hf_mask(KV), Q, KV)),
        "prefix_lm": lambda Q, KV: (A.prefix_lm(prefix(KV)), R.prefix_lm(prefix(KV), Q, KV)),
        "documents_lengths": lambda Q, KV: (
            A.documents(doc_lengths(KV)),
            R.documents(doc_lengths(KV), Q, KV),
        ),
        "documents_ids": lambda Q, KV: (A.documents(doc_ids(KV)), R.documents(doc_ids(KV), Q, KV)),
        "cross": lambda Q, KV: (
            A.cross(*cross_lengths(Q, KV)),
            R.cross(*cross_lengths(Q, KV), Q, KV),
        ),
        "mask_mod": lambda Q, KV: (
            A.mask_mod(every_third),
            R.by_rule(1, Q, KV, lambda b, i, j: (i - j) % 3 == 0),
        ),
        "mask_mod_batched": lambda Q, KV: (
            A.mask_mod(first_keys, batch=3),
            R.by_rule(3, Q, KV, lambda b, i, j: j < int(_MM_LENS[b])),
        ),
    }


def _composed_cases() -> dict[str, Case]:
    return {
        "causal&documents_lengths": lambda Q, KV: (
            A.causal() & A.documents(doc_lengths(KV)),
            R.causal(Q, KV) & R.documents(doc_lengths(KV), Q, KV),
        ),
        "documents_ids&causal": lambda Q, KV: (
            A.documents(doc_ids(KV)) & A.causal(),
            R.documents(doc_ids(KV), Q, KV) & R.causal(Q, KV),
        ),
        "sliding_window5&padding_lengths": lambda Q, KV: (
            A.sliding_window(5) & A.padding(pad_lengths(KV)),
            R.sliding_window(5, Q, KV) & R.padding(pad_lengths(KV), Q, KV),
        ),
        "sliding_window4&padding_hf": lambda Q, KV: (
            A.sliding_window(4) & A.padding(hf_mask(KV)),
            R.sliding_window(4, Q, KV) & R.padding(hf_mask(KV), Q, KV),
        ),
        "causal&padding_lengths": lambda Q, KV: (
            A.causal() & A.padding(pad_lengths(KV)),
            R.causal(Q, KV) & R.padding(pad_lengths(KV), Q, KV),
        ),
        "causal&padding_hf": lambda Q, KV: (
            A.causal() & A.padding(hf_mask(KV)),
            R.causal(Q, KV) & R.padding(hf_mask(KV), Q, KV),
        ),
        "prefix_lm&padding_lengths": lambda Q, KV: (
            A.prefix_lm(prefix(KV)) & A.padding(pad_lengths(KV)),
            R.prefix_lm(prefix(KV), Q, KV) & R.padding(pad_lengths(KV), Q, KV),
        ),
        "causal|chunked8": lambda Q, KV: (
            A.causal() | A.chunked(8),
            R.causal(Q, KV) | R.chunked(8, Q, KV),
        ),
        "chunked6&causal": lambda Q, KV: (
            A.chunked(6) & A.causal(),
            R.chunked(6, Q, KV) & R.causal(Q, KV),
        ),
        "mask_mod&causal": lambda Q, KV: (
            A.mask_mod(every_third) & A.causal(),
            R.by_rule(1, Q, KV, lambda b, i, j: (i - j) % 3 == 0) & R.causal(Q, KV),
        ),
        "causal&bare_function": lambda Q, KV: (
            A.causal() & every_third,  # a plain mask_mod function is wrapped on the fly
            R.causal(Q, KV) & R.by_rule(1, Q, KV, lambda b, i, j: (i - j) % 3 == 0),
        ),
        "mask_mod_batched|sliding_window2": lambda Q, KV: (
            A.mask_mod(first_keys, batch=3) | A.sliding_window(2),
            R.by_rule(3, Q, KV, lambda b, i, j: j < int(_MM_LENS[b])) | R.sliding_window(2, Q, KV),
        ),
        "(causal|chunked8)&padding_hf": lambda Q, KV: (
            (A.causal() | A.chunked(8)) & A.padding(hf_mask(KV)),
            (R.causal(Q, KV) | R.chunked(8, Q, KV)) & R.padding(hf_mask(KV), Q, KV),
        ),
        "sliding_window3|prefix_lm": lambda Q, KV: (
            A.sliding_window(3) | A.prefix_lm(prefix(KV)),
            R.sliding_window(3, Q, KV) | R.prefix_lm(prefix(KV), Q, KV),
        ),
        "cross&causal": lambda Q, KV: (
            A.cross(*cross_lengths(Q, KV)) & A.causal(),
            R.cross(*cross_lengths(Q, KV), Q, KV) & R.causal(Q, KV),
        ),
        "documents&sliding_window4&padding": lambda Q, KV: (
            A.documents(doc_lengths(KV)) & A.sliding_window(4) & A.padding(pad_lengths(KV)),
            R.documents(doc_lengths(KV), Q, KV)
            & R.sliding_window(4, Q, KV)
            & R.padding(pad_lengths(KV), Q, KV),
        ),
    }


LEAVES = _leaf_cases()
COMPOSED = _composed_cases()
CASES: dict[str, Case] = {**LEAVES, **COMPOSED}

#: cases whose rule reads per-position data of the key row (padding, documents) at the query's
#: position, which lies before the first key when Q > KV
POSITIONAL = {name for name in CASES if "padding" in name or "documents" in name}

#: cases whose block classification (any / all) is exact: leaves with a structural ``blocks``
#: and intersections of them. Unions may report a full block as partial (documented), and
#: mask_mod wrappers have no structure.
EXACT_FULL = {
    name
    for name in CASES
    if "|" not in name and "mask_mod" not in name and "bare_function" not in name
}
