"""Kernel choice reads a spec's structure, never its class: compositions that mean the same mask
reach the same kernel (``causal() & padding(l) & full()`` is varlen's form, as
``causal() & padding(l)`` is)."""

from __future__ import annotations

import pytest
import torch

import maskwise.attention as A
from maskwise.attention import Structure, choose_backend

LENGTHS = torch.tensor([4, 2])


def _segments(spec: A.AttentionSpec) -> list[list[int]] | None:
    s = spec.structure
    return None if s is None or s.segments is None else s.segments(4).tolist()


PAD_IDS = [[0, 0, 0, 0], [0, 0, -1, -1]]
DOC_IDS = [[0, 0, 1, -1], [0, -1, -1, -1]]


@pytest.mark.parametrize(
    ("spec", "causal", "segments"),
    [
        (A.full(), False, None),
        (A.causal(), True, None),
        (A.causal() & A.full(), True, None),
        (A.full() & A.causal() & A.full(), True, None),
        (A.full() | A.sliding_window(2), False, None),
        (A.padding(LENGTHS), False, PAD_IDS),
        (A.padding(torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])), False, PAD_IDS),
        (A.causal() & A.padding(LENGTHS), True, PAD_IDS),
        (A.causal() & A.padding(LENGTHS) & A.full(), True, PAD_IDS),
        (A.full() & (A.padding(LENGTHS) & A.causal()), True, PAD_IDS),
        (A.documents([[2, 1], [1]]), False, DOC_IDS),
        (A.causal() & A.documents([[2, 1], [1]]), True, DOC_IDS),
    ],
    ids=repr,
)
def test_structure_of_kernel_forms(
    spec: A.AttentionSpec, causal: bool, segments: list[list[int]] | None
) -> None:
    s = spec.structure
    assert isinstance(s, Structure)
    assert s.causal is causal
    assert _segments(spec) == segments


@pytest.mark.parametrize(
    "spec",
    [
        A.sliding_window(2),
        A.chunked(2),
        A.prefix_lm(LENGTHS),
        A.cross(LENGTHS, LENGTHS),
        A.drop_keys(0.1),
        A.mask_mod(lambda b, h, q, kv: q >= kv),
        A.causal() | A.sliding_window(2),
        A.padding(LENGTHS) & A.documents([[2, 1], [1]]),  # two segmentations: no single form
        A.causal() & A.sliding_window(2),
    ],
    ids=repr,
)
def test_no_structure_for_general_masks(spec: A.AttentionSpec) -> None:
    assert spec.structure is None


@pytest.mark.parametrize(
    ("spec", "backend"),
    [
        (A.full(), "sdpa"),
        (A.full() | A.padding(LENGTHS), "sdpa"),
        (A.causal(), "sdpa_causal"),
        (A.causal() & A.full(), "sdpa_causal"),
        (A.full() & A.causal(), "sdpa_causal"),
        (A.causal() & A.padding(LENGTHS), "dense"),  # varlen is CUDA-only
    ],
    ids=repr,
)
def test_choice_follows_structure_on_cpu(spec: A.AttentionSpec, backend: str) -> None:
    q = torch.randn(2, 2, 4, 8)
    assert choose_backend(spec, q, q, q) == backend


def test_forced_sdpa_rejects_a_real_mask() -> None:
    q = torch.randn(2, 2, 4, 8)
    with pytest.raises(ValueError, match="cannot apply"):
        choose_backend(A.padding(LENGTHS), q, q, q, backend="sdpa")
    with pytest.raises(ValueError, match="cannot apply"):
        choose_backend(A.causal() & A.padding(LENGTHS), q, q, q, backend="sdpa_causal")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "spec",
    [
        A.causal() & A.padding(LENGTHS),
        A.causal() & A.padding(LENGTHS) & A.full(),
        A.full() & A.padding(LENGTHS) & A.causal(),
    ],
    ids=repr,
)
def test_varlen_chosen_for_every_spelling_on_cuda(spec: A.AttentionSpec) -> None:
    pytest.importorskip("torch.nn.attention.varlen")
    q = torch.randn(2, 2, 4, 16, device="cuda", dtype=torch.bfloat16)
    assert choose_backend(spec, q, q, q) == "varlen"


def test_forced_kernels_without_dropout_refuse_it() -> None:
    q = torch.randn(2, 2, 4, 8)
    for backend in ("flex", "varlen"):
        with pytest.raises(ValueError, match="no attention dropout"):
            choose_backend(A.causal(), q, q, q, dropout_p=0.1, backend=backend)


def test_left_padding_and_holes_are_not_right_padded() -> None:
    from maskwise.attention.attend import _right_padded

    assert _right_padded(A.padding(LENGTHS), 4)
    assert not _right_padded(A.padding(torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])), 4)
    assert not _right_padded(A.padding(torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]])), 4)
