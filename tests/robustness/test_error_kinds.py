"""Inputs that used to fail deep inside torch (IndexError, RuntimeError, AttributeError) either
work or raise a ValueError / TypeError naming the argument; schedules hit their endpoints
exactly; DropKeys draws a pattern per sample on every path.

Decisions: an empty batch (B = 0) works wherever the result has a natural empty form: every
spec's ``dense`` / ``block_mask`` and ``attend`` return empty results. ``attend`` takes a spec,
a FlexAttention ``mask_mod`` function or None; a tensor is refused with a TypeError that says
how to wrap it.
"""

from __future__ import annotations

import math

import pytest
import torch

from maskwise import attention as A
from maskwise.attention import attend
from maskwise.dynamic import cosine, cosine_decay, linear, linear_decay, reliability
from maskwise.functional import mask_spans, span_length_pmf, spec_augment

EMPTY = torch.zeros(0, dtype=torch.long)


EMPTY_SPECS = [
    "padding(lengths)",
    "padding(attention_mask)",
    "padding([])",
    "cross",
    "cross([], [])",
    "prefix_lm",
    "documents(lengths)",
    "documents(ids)",
    "causal & padding",
    "causal & documents",
    "drop_keys & padding",
]


def empty_specs() -> dict[str, A.AttentionSpec]:
    return {
        "padding(lengths)": A.padding(EMPTY),
        "padding(attention_mask)": A.padding(torch.zeros(0, 6, dtype=torch.long)),
        "padding([])": A.padding([]),
        "cross": A.cross(EMPTY, EMPTY),
        "cross([], [])": A.cross([], []),
        "prefix_lm": A.prefix_lm(EMPTY),
        "documents(lengths)": A.documents([]),
        "documents(ids)": A.documents(torch.zeros(0, 6, dtype=torch.long)),
        "causal & padding": A.causal() & A.padding(EMPTY),
        "causal & documents": A.causal() & A.documents([]),
        "drop_keys & padding": A.drop_keys(0.3) & A.padding(EMPTY),
    }


@pytest.mark.parametrize("name", EMPTY_SPECS)
def test_empty_batch_specs_lower_to_empty_masks(name: str) -> None:
    spec = empty_specs()[name]
    assert spec.batch == 0
    assert spec.dense(6).shape == (0, 1, 6, 6)
    assert spec.dense(6).dtype == torch.bool
    bm = spec.block_mask(6, block_size=2)
    assert bm.shape[0] == 0 and bm.to_dense().shape == (0, 1, 3, 3)


@pytest.mark.parametrize("name", EMPTY_SPECS)
@pytest.mark.parametrize("backend", ["auto", "dense"])
def test_empty_batch_attend(name: str, backend: str) -> None:
    q = torch.randn(0, 4, 6, 8, requires_grad=True)
    k, v = torch.randn(0, 2, 6, 8), torch.randn(0, 2, 6, 5)
    out = attend(q, k, v, empty_specs()[name], backend=backend)
    assert out.shape == (0, 4, 6, 5)
    out.sum().backward()
    assert q.grad is not None and q.grad.shape == q.shape


def test_empty_batch_checks_still_apply() -> None:
    with pytest.raises(ValueError, match="length 6.*4"):
        A.padding(torch.zeros(0, 6, dtype=torch.long)).dense(4)
    with pytest.raises(ValueError, match="batch size 0.*2"):
        attend(*(torch.randn(2, 1, 4, 8) for _ in range(3)), A.padding(EMPTY))


@pytest.mark.parametrize("mask", [torch.ones(1, 1, 4, 4, dtype=torch.bool), torch.zeros(4, 4)])
def test_attend_refuses_a_tensor_and_says_how_to_wrap_it(mask: torch.Tensor) -> None:
    q = k = v = torch.randn(1, 2, 4, 8)
    with pytest.raises(TypeError, match=r"mask.*Tensor.*mask_mod\("):
        attend(q, k, v, mask)  # type: ignore[arg-type]


def test_the_wrapping_the_error_suggests_works() -> None:
    g = torch.Generator().manual_seed(0)
    allowed = torch.rand(2, 1, 5, 7, generator=g) < 0.6  # (B, 1, Q, KV), True = may attend
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    spec = A.mask_mod(lambda b, h, q, kv: allowed[b, 0, q, kv], batch=2)
    assert torch.equal(spec.dense(5, 7), allowed)
    want = attend(q, k, v, A.mask_mod(lambda b, h, q, kv: allowed[b, 0, q, kv], batch=2))
    assert torch.allclose(attend(q, k, v, spec), want)
    # A bare mask_mod function is taken as it is.
    causal_fn = A.causal().mask_mod_for(5, 7)
    assert torch.allclose(attend(q, k, v, causal_fn), attend(q, k, v, A.causal()), atol=1e-6)


def test_attend_refuses_other_objects() -> None:
    q = k = v = torch.randn(1, 2, 4, 8)
    with pytest.raises(TypeError, match="mask.*str"):
        attend(q, k, v, "causal")  # type: ignore[arg-type]


def test_spec_augment_mean_on_an_empty_batch() -> None:
    for shape in [(0, 8, 20), (0, 2, 8, 20)]:
        out = spec_augment(torch.randn(shape), freq_width=3, time_width=5, value="mean")
        assert out.spec.shape == shape
        assert out.freq_masked.shape == (0, 8) and out.time_masked.shape == (0, 20)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_span_length_weights(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"span length.*{bad}"):
        span_length_pmf([1.0, bad, 1.0], 3.0, 10)
    with pytest.raises(ValueError, match=rf"span length.*{bad}"):
        mask_spans(torch.ones(2, 20, dtype=torch.bool), 0.3, distribution=[1.0, bad])


@pytest.mark.parametrize("bad_label", [5, 7, -1, -7])
def test_reliability_labels_out_of_range(bad_label: int) -> None:
    logits = torch.randn(3, 5)
    labels = torch.tensor([0, bad_label, -100])
    with pytest.raises(ValueError, match=rf"labels.*\[0, 5\).*{bad_label}"):
        reliability(logits, labels)


def test_reliability_with_another_ignore_index() -> None:
    r = reliability(torch.randn(3, 5), torch.tensor([4, -1, 0]), ignore_index=-1)
    assert r.valid.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="-100"):
        reliability(torch.randn(3, 5), torch.tensor([4, -100, 0]), ignore_index=-1)


@pytest.mark.parametrize(
    ("start", "end", "steps"),
    [(0.1, 0.7, 3), (0.7, 0.1, 3), (0.3, 0.9, 7), (0.15, 0.95, 11), (0.9, 0.3, 49)],
)
def test_schedule_endpoints_are_exact(start: float, end: float, steps: int) -> None:
    for s in (linear(start, end, steps), cosine(start, end, steps)):
        assert s(0) == start and s(steps) == end, s
        assert s(-1) == start and s(steps + 1) == end, s
    assert cosine_decay(max(start, end), steps, floor=min(start, end))(steps) == min(start, end)
    assert linear_decay(max(start, end), steps, floor=min(start, end))(0) == max(start, end)


# --------------------------------------------------------------------------------------------
# DropKeys: one pattern per sample, on every path


def test_drop_keys_alone_differs_per_sample_in_attend() -> None:
    g = torch.Generator().manual_seed(0)
    L = 16
    q = k = torch.randn(1, 1, L, 8, generator=g).expand(3, 1, L, 8)  # three identical samples
    v = torch.eye(L)[None, None].expand(3, 1, L, L)  # output row = attention weights
    spec = A.drop_keys(0.5, seed=1)
    out = attend(q, k, v, spec, backend="dense")
    kept = out[:, 0] > 0  # (3, L, L): which keys each query used
    assert not torch.equal(kept[0], kept[1]) and not torch.equal(kept[1], kept[2])
    assert torch.equal(kept, spec.dense(L, batch=3)[:, 0])


@pytest.mark.parametrize("rate", [0.3, 0.7])
def test_drop_keys_dense_and_mask_mod_agree_per_sample(rate: float) -> None:
    from torch.nn.attention.flex_attention import create_block_mask, create_mask

    L, B = 24, 3
    for spec in (A.drop_keys(rate, seed=2), A.causal() & A.drop_keys(rate, seed=2)):
        dense = spec.dense(L, batch=B)
        assert dense.shape == (B, 1, L, L)
        assert not torch.equal(dense[0], dense[1])
        assert torch.equal(dense, create_mask(spec.mask_mod, B, 1, L, L, device="cpu"))
        bm = spec.block_mask(L, block_size=4, batch=B)
        want = create_block_mask(spec.mask_mod, B, None, L, L, device="cpu", BLOCK_SIZE=4)
        assert torch.equal(bm.to_dense(), want.to_dense())


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_the_batch_of_a_lowering_is_checked(bad) -> None:
    with pytest.raises(ValueError, match=f"batch.*{bad!r}"):
        A.drop_keys(0.3).dense(4, batch=bad)
    with pytest.raises(ValueError, match="batch size 2.*batch=3"):
        A.padding(torch.tensor([4, 2])).block_mask(4, batch=3)
    assert A.padding(torch.tensor([4, 2])).dense(4, batch=2).shape == (2, 1, 4, 4)
