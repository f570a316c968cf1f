"""``attend`` and ``choose_backend`` against float64 naive attention.

``attend(q, k, v, mask)`` is exact attention under the spec: for query row (b, h, i) the softmax
of ``scale * q . k_j`` over the keys j the spec allows (True = may attend), weighting their values;
rows with no allowed key give zeros, never NaN, forward and backward. ``k``/``v`` may have fewer
heads (grouped-query attention: query head h uses key/value head h // (H / H_kv)).

Backends on CPU (``auto``): no mask or ``full()`` -> ``sdpa``; ``causal()`` with Q == KV ->
``sdpa_causal``; with Q < KV -> ``sdpa_causal_lower_right``; everything else -> ``dense`` (SDPA
with the dense boolean mask), except inference (no gradient needed, no dropout) with
sqrt(Q * KV) >= 1024 for segments (padding, documents) and interval masks (sliding window,
chunked, ...) -> ``flex`` (compiled FlexAttention, forward only on CPU). The whole rule
is ``CHOICE_RULES``, checked row by row in ``test_choice.py``.
"""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from maskwise import attention as A
from maskwise.attention import attend, choose_backend
from tests.attention.cases import CASES, POSITIONAL
from tests.reference import attention as R

ATOL = 1e-5


def _qkv(
    B: int, H: int, H_kv: int, Q: int, KV: int, D: int = 8, *, seed: int = 0, grad: bool = True
):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Q, D, generator=g)
    k = torch.randn(B, H_kv, KV, D, generator=g)
    v = torch.randn(B, H_kv, KV, D, generator=g)
    return tuple(x.requires_grad_(grad) for x in (q, k, v))


def _check(q, k, v, mask, allowed, *, backend="auto", scale=None, seed=1):
    """attend's output and gradients equal the float64 reference; returns (out, grads)."""
    out = attend(q, k, v, mask, scale=scale, backend=backend)
    assert out.shape == q.shape[:-1] + (v.shape[-1],)
    assert out.dtype == q.dtype
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = R.attention(q64, k64, v64, allowed, scale=scale)
    torch.testing.assert_close(out.double(), ref, atol=ATOL, rtol=0)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), upstream.double())
    for name, got, want in zip("qkv", grads, ref_grads):
        assert torch.isfinite(got).all(), f"d{name} not finite"
        torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=0, msg=f"d{name}")
    return out, grads


# ------------------------------------------------------------------------------------------------
# Every spec on its automatic backend
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(11, 11), (6, 17)], ids=lambda s: f"Q{s[0]}xKV{s[1]}")
@pytest.mark.parametrize("name", sorted(CASES))
def test_attend_auto_matches_reference(name: str, shape: tuple[int, int]) -> None:
    Q, KV = shape
    spec, allowed = CASES[name](Q, KV)
    q, k, v = _qkv(spec.batch or 1, 2, 2, Q, KV)
    expected = (
        "sdpa"
        if name == "full"
        else "sdpa_causal"
        if name == "causal" and Q == KV
        else ("sdpa_causal_lower_right" if name == "causal" else "dense")
    )
    assert choose_backend(spec, q, k, v) == expected
    _check(q, k, v, spec, allowed)


@pytest.mark.parametrize("name", sorted(set(CASES) - POSITIONAL))
def test_attend_q_longer_than_kv(name: str) -> None:
    """Q > KV: the first Q - KV queries come before every key; under causal rules they have no
    key and give zeros."""
    spec, allowed = CASES[name](19, 7)
    q, k, v = _qkv(spec.batch or 2, 2, 1, 19, 7)
    _check(q, k, v, spec, allowed)


def test_attend_without_mask() -> None:
    q, k, v = _qkv(2, 3, 3, 11, 17)
    assert choose_backend(None, q, k, v) == "sdpa"
    _check(q, k, v, None, None)


# ------------------------------------------------------------------------------------------------
# Forced backends (each one this CPU can run, on masks it represents)
# ------------------------------------------------------------------------------------------------
FORCED = [
    ("sdpa", None, (11, 11)),
    ("sdpa", "full", (11, 17)),
    ("sdpa_causal", "causal", (11, 11)),
    ("sdpa_causal_lower_right", "causal", (7, 19)),
    ("sdpa_causal_lower_right", "causal", (11, 11)),  # Q == KV: lower right is plain causal
    ("sdpa_causal_lower_right", "causal", (19, 7)),  # Q > KV: falls back to the dense path
    ("dense", None, (11, 11)),
    ("dense", "full", (11, 17)),
    ("dense", "causal", (7, 19)),
    ("dense", "causal&documents_lengths", (13, 13)),
    ("dense", "sliding_window3|prefix_lm", (7, 19)),
    ("dense", "cross", (7, 19)),
]


@pytest.mark.parametrize(
    ("backend", "name", "shape"), FORCED, ids=[f"{b}-{n}-{s[0]}x{s[1]}" for b, n, s in FORCED]
)
def test_forced_backend_matches_reference(
    backend: str, name: str | None, shape: tuple[int, int]
) -> None:
    Q, KV = shape
    spec, allowed = CASES[name](Q, KV) if name else (None, None)
    q, k, v = _qkv(3, 2, 2, Q, KV)
    assert choose_backend(spec, q, k, v, backend=backend) == backend
    _check(q, k, v, spec, allowed, backend=backend)


INAPPLICABLE = [
    ("sdpa", "causal", (11, 11)),
    ("sdpa", "padding_lengths", (11, 11)),
    ("sdpa_causal", "causal&padding_lengths", (11, 11)),
    ("sdpa_causal", "sliding_window3", (11, 11)),
    ("sdpa_causal_lower_right", "padding_hf", (7, 19)),
    ("varlen", "sliding_window3", (11, 11)),
]


@pytest.mark.parametrize(
    ("backend", "name", "shape"), INAPPLICABLE, ids=[f"{b}-{n}" for b, n, _ in INAPPLICABLE]
)
def test_forced_backend_never_ignores_the_mask(
    backend: str, name: str, shape: tuple[int, int]
) -> None:
    """Forcing a backend that cannot express the mask must raise ValueError (naming the
    backend), or compute the right answer; never silently attend under another mask."""
    Q, KV = shape
    spec, allowed = CASES[name](Q, KV)
    q, k, v = _qkv(3, 2, 2, Q, KV, grad=False)
    try:
        out = attend(q, k, v, spec, backend=backend)
    except ValueError as e:
        assert backend in str(e)
        return
    ref = R.attention(q, k, v, allowed)
    torch.testing.assert_close(out.double(), ref, atol=ATOL, rtol=0)


def test_unknown_backend_is_rejected() -> None:
    q, k, v = _qkv(1, 1, 1, 4, 4, grad=False)
    with pytest.raises(ValueError, match="'cudnn'"):
        attend(q, k, v, A.causal(), backend="cudnn")
    with pytest.raises(ValueError, match="'cudnn'"):
        choose_backend(A.causal(), q, k, v, backend="cudnn")
    assert set(A.BACKENDS) == {
        "sdpa",
        "sdpa_causal",
        "sdpa_causal_lower_right",
        "varlen",
        "flex",
        "dense",
    }


class _SdpaSpy:
    """Records the keyword arguments of every scaled_dot_product_attention call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return _REAL_SDPA(*args, **kwargs)


_REAL_SDPA = F.scaled_dot_product_attention


@pytest.mark.parametrize(
    ("name", "shape", "kind"),
    [
        ("full", (9, 9), "no mask"),
        ("causal", (9, 9), "is_causal"),
        ("causal", (5, 9), "causal_lower_right"),
        ("causal&padding_lengths", (9, 9), "bool mask"),
    ],
)
def test_backend_really_used(
    monkeypatch: pytest.MonkeyPatch, name: str, shape: tuple[int, int], kind: str
) -> None:
    """The chosen backend is the kernel called: SDPA's causal kernel gets ``is_causal`` and no
    dense mask; lower-right causal gets FlexAttention's ``CausalBias``; dense gets a bool mask."""
    from torch.nn.attention.bias import CausalBias

    spy = _SdpaSpy()
    module = sys.modules["maskwise.attention.attend"]  # the package attribute is the function
    monkeypatch.setattr(module, "F", types.SimpleNamespace(scaled_dot_product_attention=spy))
    Q, KV = shape
    spec, _ = CASES[name](Q, KV)
    q, k, v = _qkv(3, 2, 2, Q, KV, grad=False)
    attend(q, k, v, spec)
    assert len(spy.calls) == 1
    kw = spy.calls[0]
    mask = kw.get("attn_mask")
    if kind == "no mask":
        assert mask is None and not kw.get("is_causal", False)
    elif kind == "is_causal":
        assert mask is None and kw["is_causal"] is True
    elif kind == "causal_lower_right":
        assert isinstance(mask, CausalBias)
    else:
        assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool


# ------------------------------------------------------------------------------------------------
# Grouped-query attention, scale
# ------------------------------------------------------------------------------------------------
GQA_CASES = [
    (None, (11, 11)),
    ("causal", (11, 11)),
    ("causal", (5, 13)),
    ("causal&padding_hf", (11, 11)),
    ("documents&sliding_window4&padding", (11, 11)),
    ("causal", (13, 5)),
]


@pytest.mark.parametrize("H_kv", [2, 1])
@pytest.mark.parametrize(
    ("name", "shape"), GQA_CASES, ids=[f"{n}-{s[0]}x{s[1]}" for n, s in GQA_CASES]
)
def test_grouped_query_attention(name: str | None, shape: tuple[int, int], H_kv: int) -> None:
    Q, KV = shape
    spec, allowed = CASES[name](Q, KV) if name else (None, None)
    q, k, v = _qkv(3, 4, H_kv, Q, KV)
    _check(q, k, v, spec, allowed)


@pytest.mark.parametrize(
    ("name", "shape"), GQA_CASES, ids=[f"{n}-{s[0]}x{s[1]}" for n, s in GQA_CASES]
)
def test_custom_scale(name: str | None, shape: tuple[int, int]) -> None:
    Q, KV = shape
    spec, allowed = CASES[name](Q, KV) if name else (None, None)
    q, k, v = _qkv(3, 4, 2, Q, KV)
    out, _ = _check(q, k, v, spec, allowed, scale=0.37)
    # the scale matters (guards against a scale silently dropped)
    default = attend(q, k, v, spec)
    assert not torch.allclose(out, default, atol=1e-3)


def test_default_scale_is_inverse_sqrt_d() -> None:
    q, k, v = _qkv(1, 2, 2, 6, 6, D=16, grad=False)
    spec = A.causal() & A.padding(torch.tensor([5]))
    torch.testing.assert_close(
        attend(q, k, v, spec), attend(q, k, v, spec, scale=1 / math.sqrt(16))
    )


def test_value_head_dim_may_differ() -> None:
    q, k, _ = _qkv(2, 2, 2, 7, 7, grad=False)
    v = torch.randn(2, 2, 7, 5)
    spec = A.causal() & A.padding(torch.tensor([7, 3]))
    out = attend(q, k, v, spec)
    assert out.shape == (2, 2, 7, 5)
    torch.testing.assert_close(out.double(), R.attention(q, k, v, spec.dense(7)), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------
# Rows with nothing to attend to
# ------------------------------------------------------------------------------------------------
EMPTY_ROWS = {
    # name: (spec, reference, (Q, KV))
    "padding lengths with 0": (
        A.padding(torch.tensor([9, 4, 0])),
        R.padding([9, 4, 0], 9, 9),
        (9, 9),
    ),
    "causal & left padding": (
        A.causal() & A.padding(torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9, [0] * 9])),
        R.causal(9, 9)
        & R.padding(torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9, [0] * 9]), 9, 9),
        (9, 9),
    ),
    "documents with empty doc and empty row": (
        A.causal() & A.documents([[3, 0, 4], [0, 0], []]),
        R.causal(9, 9) & R.documents([[3, 0, 4], [0, 0], []], 9, 9),
        (9, 9),
    ),
    "cross with kv_length 0": (
        A.cross(torch.tensor([4, 6, 0]), torch.tensor([0, 11, 3])),
        R.cross([4, 6, 0], [0, 11, 3], 6, 11),
        (6, 11),
    ),
    "causal Q > KV": (A.causal(), R.causal(11, 4), (11, 4)),
}


@pytest.mark.parametrize("H_kv", [2, 1])
@pytest.mark.parametrize("name", sorted(EMPTY_ROWS))
def test_empty_rows_are_zero_forward_and_backward(name: str, H_kv: int) -> None:
    spec, allowed, (Q, KV) = EMPTY_ROWS[name]
    q, k, v = _qkv(3, 2, H_kv, Q, KV)
    out, (dq, dk, dv) = _check(q, k, v, spec, allowed)
    empty = ~allowed.any(-1)  # (B or 1, 1, Q)
    assert empty.any(), "the case must have an empty row"
    empty = empty.expand(3, 2, Q)
    assert not out.isnan().any()
    assert out[empty].eq(0).all()
    assert dq[empty].eq(0).all()
    # keys no query may attend get no gradient
    unseen = ~allowed.any(-2).expand(3, 1, KV).expand(3, H_kv, KV)  # (B, H_kv, KV)
    assert dk[unseen].eq(0).all() and dv[unseen].eq(0).all()


def test_empty_rows_with_dropout_stay_zero() -> None:
    spec = A.causal() & A.padding(torch.tensor([6, 2]))
    q, k, v = _qkv(2, 2, 2, 6, 6)
    torch.manual_seed(0)
    out = attend(q, k, v, spec, dropout_p=0.5)
    out.sum().backward()
    assert out[1, :, 2:].eq(0).all() and not out.isnan().any()
    assert torch.isfinite(q.grad).all() and q.grad[1, :, 2:].eq(0).all()
    # dropout is applied (not the same as without it)
    assert not torch.allclose(out, attend(q, k, v, spec), atol=1e-4)


# ------------------------------------------------------------------------------------------------
# choose_backend on CPU
# ------------------------------------------------------------------------------------------------
def _shapes(Q: int, KV: int, *, grad: bool = False):
    q = torch.empty(1, 1, Q, 1, requires_grad=grad)
    k = torch.empty(1, 1, KV, 1, requires_grad=grad)
    return q, k, k.detach().clone().requires_grad_(grad)


BIG = 2048


@pytest.mark.parametrize(
    ("mask", "Q", "KV", "grad", "dropout", "want"),
    [
        (None, 8, 8, True, 0.0, "sdpa"),
        (A.full(), 8, 8, False, 0.0, "sdpa"),
        (A.full(), BIG, BIG, False, 0.0, "sdpa"),
        (A.causal(), 8, 8, True, 0.0, "sdpa_causal"),
        (A.causal(), BIG, BIG, False, 0.0, "sdpa_causal"),
        (A.causal(), 8, 8, True, 0.1, "sdpa_causal"),
        (A.causal(), 3, 8, True, 0.0, "sdpa_causal_lower_right"),
        (A.causal(), 8, 3, True, 0.0, "dense"),
        (A.causal() & A.padding(torch.tensor([8])), 8, 8, True, 0.0, "dense"),
        (A.padding(torch.tensor([8])), 8, 8, False, 0.0, "dense"),  # inference, but small
        (A.sliding_window(128), BIG, BIG, True, 0.0, "dense"),  # large, but needs grad
        (A.sliding_window(128), BIG, BIG, False, 0.0, "flex"),  # large inference
        (A.sliding_window(128), BIG, BIG, False, 0.1, "dense"),  # dropout: not flex
        (A.sliding_window(128), 1024, 1023, False, 0.0, "dense"),  # just below the threshold
        (A.sliding_window(128), 1024, 1024, False, 0.0, "flex"),  # an interval mask at 1024
        (A.causal() & A.documents([[1024]]), 1024, 1024, False, 0.0, "flex"),  # segments too
        (A.causal() & A.documents([[1023]]), 1023, 1023, False, 0.0, "dense"),
        (A.documents([[BIG]]), BIG, BIG, False, 0.0, "flex"),  # no varlen on CPU
        (A.cross(torch.tensor([1024]), torch.tensor([4096])), 1024, 4096, False, 0.0, "flex"),
        (A.causal(), BIG, 2 * BIG, False, 0.0, "sdpa_causal_lower_right"),
    ],
)
def test_choose_backend_on_cpu(
    mask, Q: int, KV: int, grad: bool, dropout: float, want: str
) -> None:
    q, k, v = _shapes(Q, KV, grad=grad)
    assert choose_backend(mask, q, k, v, dropout_p=dropout) == want


def test_choose_backend_under_no_grad_is_inference() -> None:
    """Tensors that require grad under ``torch.no_grad()`` need no backward: flex qualifies."""
    q, k, v = _shapes(BIG, BIG, grad=True)
    assert choose_backend(A.sliding_window(64), q, k, v) == "dense"
    with torch.no_grad():
        assert choose_backend(A.sliding_window(64), q, k, v) == "flex"


def test_choose_backend_forced_returns_it_or_refuses_a_mask_it_cannot_apply() -> None:
    q, k, v = _shapes(8, 8)
    for name in ("sdpa_causal", "sdpa_causal_lower_right", "flex", "dense"):
        assert choose_backend(A.causal(), q, k, v, backend=name) == name
    assert choose_backend(None, q, k, v, backend="sdpa") == "sdpa"
    # Never drop part of a mask silently: these backends cannot express it.
    pad = A.padding(torch.tensor([8, 3]))
    for name, mask in (
        ("sdpa", A.causal()),
        ("sdpa_causal", A.causal() & pad),
        ("varlen", A.sliding_window(3)),
    ):
        with pytest.raises(ValueError, match=name):
            choose_backend(mask, q, k, v, backend=name)


# ------------------------------------------------------------------------------------------------
# FlexAttention on CPU (forward only; compiling costs tens of seconds)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_flex_backend_on_cpu_inference() -> None:
    """backend="flex" forced under no_grad: causal & packed documents with an empty document, a
    padded tail and an all-padding row; L = 250 is no multiple of the 128 block, so the last
    blocks are cut. Empty rows are zeros."""
    L = 250
    rows = [[100, 0, 120], []]
    spec = A.causal() & A.documents(rows)
    allowed = R.causal(L, L) & R.documents(rows, L, L)
    q, k, v = _qkv(2, 2, 2, L, L, D=16, grad=False)
    with torch.no_grad():
        out = attend(q, k, v, spec, backend="flex")
    assert not out.isnan().any()
    assert out[:, :, 220:].eq(0).all() and out[1].eq(0).all()
    torch.testing.assert_close(out.double(), R.attention(q, k, v, allowed), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------
# CUDA: flex and varlen, forward and backward
# ------------------------------------------------------------------------------------------------
def _check_cuda(spec, allowed, Q, KV, *, H_kv=2, dtype=torch.float32, backend="auto", atol=1e-4):
    q, k, v = (x.detach() for x in _qkv(spec.batch or 2, 4, H_kv, Q, KV, D=64))
    qc, kc, vc = (x.to("cuda", dtype).requires_grad_() for x in (q, k, v))
    out = attend(qc, kc, vc, spec, backend=backend)
    q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
    ref = R.attention(q64, k64, v64, allowed)
    torch.testing.assert_close(out.double().cpu(), ref, atol=atol, rtol=0)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out, (qc, kc, vc), g.to("cuda", dtype))
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), g.double())
    for got, want in zip(grads, ref_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double().cpu(), want, atol=atol * 10, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name", ["sliding_window4&padding_hf", "causal&documents_lengths", "cross", "prefix_lm"]
)
def test_flex_on_cuda(name: str) -> None:
    Q, KV = (200, 200) if name != "cross" else (150, 300)
    spec, allowed = CASES[name](Q, KV)
    q = torch.empty(1, 1, Q, 1, device="cuda")
    k = torch.empty(1, 1, KV, 1, device="cuda")
    if name != "cross" and name != "prefix_lm":
        assert choose_backend(spec, q, k, k) in {"flex", "varlen"}
    _check_cuda(spec, allowed, Q, KV, backend="flex")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name", ["padding_lengths", "padding_hf", "causal&documents_lengths", "documents_ids&causal"]
)
def test_varlen_on_cuda(name: str) -> None:
    """Varlen kernels are half precision; the spec's tensors stay on the CPU (attend moves
    what it needs)."""
    L = 200
    spec, allowed = CASES[name](L, L)
    if name == "padding_hf":  # varlen needs right padding: use the right-padded row only
        spec, allowed = (
            A.padding(torch.tensor([[1] * 150 + [0] * 50] * 3)),
            R.padding([150] * 3, L, L),
        )
    _check_cuda(spec, allowed, L, L, dtype=torch.bfloat16, backend="varlen", atol=3e-2)


@pytest.mark.gpu
def test_auto_on_cuda_float32_padding() -> None:
    """Auto on CUDA with float32 inputs must work (flash varlen kernels take half precision
    only)."""
    spec, allowed = CASES["causal&padding_lengths"](64, 64)
    _check_cuda(spec, allowed, 64, 64)
