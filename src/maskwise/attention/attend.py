"""``attend``: exact attention under a spec, on the fastest correct kernel available for it."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from maskwise.attention.base import Structure
from maskwise.attention.lowering import varlen_offsets
from maskwise.attention.spec import AttentionSpec, MaskMod, MaskModFn, cached_lowering, with_batch

__all__ = ["BACKENDS", "CHOICE_RULES", "Rule", "attend", "choice_table", "choose_backend"]

#: backends ``attend`` can use, fastest first where each applies
BACKENDS = ("sdpa", "sdpa_causal", "sdpa_causal_lower_right", "varlen", "flex", "dense")


class Rule(NamedTuple):
    """One row of :data:`CHOICE_RULES`: for inputs of this mask kind, device and gradient need,
    with ``sqrt(Q * KV) >= min_len``, use ``backend`` if ``when`` holds."""

    kind: str  # "full", "causal", "segments", "intervals", "general" or "any"
    device: str  # "cpu", "cuda" or "any"
    grad: str  # "yes" (a backward follows), "no" or "any"
    min_len: int
    backend: str
    when: str  # the backend's own conditions, checked by _feasible


#: The choice rule of ``attend(backend="auto")``: the first row that matches and whose
#: conditions hold gives the backend. This tuple is the one source of truth: ``choose_backend``
#: reads it, and its docstring and docs/benchmarks.md show ``choice_table()`` (a test checks
#: both). The CPU thresholds are measured (docs/benchmarks.md, attention part 2: B=2, H=8, D=64,
#: float32), counting FlexAttention's compile (4-6 s per mask kind and shape on CPU; new data of
#: the same kind and shape reuse it) spread over 1000 calls of that shape.
CHOICE_RULES: tuple[Rule, ...] = (
    Rule("full", "any", "any", 0, "sdpa", "-"),
    Rule("causal", "any", "any", 0, "sdpa_causal", "Q == KV"),
    Rule("causal", "any", "any", 0, "sdpa_causal_lower_right", "Q < KV"),
    Rule("segments", "cuda", "any", 0, "varlen", "half precision, Q == KV, no dropout"),
    Rule("any", "cuda", "any", 0, "flex", "no dropout"),
    Rule("segments", "cpu", "no", 1024, "flex", "no dropout"),
    Rule("intervals", "cpu", "no", 1024, "flex", "no dropout"),
    Rule("any", "any", "any", 0, "dense", "-"),
)


def choice_table() -> str:
    """:data:`CHOICE_RULES` as a Markdown table (first matching row wins)."""
    lines = [
        "| # | mask kind | device | backward | sqrt(Q x KV) | backend | when |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(CHOICE_RULES, 1):
        lines.append(
            f"| {i} | {r.kind} | {r.device} | {r.grad} | "
            f"{'>= ' + str(r.min_len) if r.min_len else 'any'} | `{r.backend}` | {r.when} |"
        )
    return "\n".join(lines)


def _as_mask(mask: Any) -> AttentionSpec | None:
    """A spec, a FlexAttention ``mask_mod`` function (wrapped) or None; anything else is a
    ``TypeError`` that says how to wrap it."""
    if mask is None or isinstance(mask, AttentionSpec):
        return mask
    if isinstance(mask, torch.Tensor):
        raise TypeError(
            f"mask must be an attention spec from maskwise.attention, a mask_mod function or "
            f"None (a torch.Tensor of shape {tuple(mask.shape)} and dtype {mask.dtype} given). "
            f"Wrap a dense bool mask `allowed` (B, 1, Q, KV), True = may attend, as "
            f"mask_mod(lambda b, h, q, kv: allowed[b, 0, q, kv], batch=B); an HF attention_mask "
            f"(B, L) as padding(attention_mask)."
        )
    if callable(mask):
        return MaskMod(mask)
    raise TypeError(
        f"mask must be an attention spec from maskwise.attention, a mask_mod function or None "
        f"({type(mask).__name__} {mask!r} given)."
    )


def _structure(mask: AttentionSpec | None) -> Structure | None:
    """The mask's fused-kernel form (no mask: ``Structure()``, i.e. full)."""
    return Structure() if mask is None else mask.structure


def _is_full(s: Structure | None) -> bool:
    return s is not None and s.is_full


def _is_causal(s: Structure | None) -> bool:
    """Exactly the causal mask (no segments)."""
    return s is not None and s.causal and s.segments is None


def _is_segments(s: Structure | None) -> bool:
    """Segments (padding or packed documents), with or without causal: varlen's form."""
    return s is not None and s.segments is not None


@functools.lru_cache(maxsize=1)
def _varlen_fn() -> Any:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.9
        return None
    return varlen_attn


@functools.lru_cache(maxsize=1)
def _has_flex() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:  # torch without FlexAttention
        return False
    return True


@functools.lru_cache(maxsize=1)
def _flex_fn() -> Any:
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:  # torch without FlexAttention
        return None
    return torch.compile(flex_attention, dynamic=False)


def _check_forced(
    backend: str,
    s: Structure | None,
    mask: AttentionSpec | None,
    q: torch.Tensor,
    k: torch.Tensor,
    dropout_p: float = 0.0,
) -> None:
    """A forced backend must be able to express the mask: never ignore part of it silently."""
    Q, KV = q.shape[-2], k.shape[-2]
    if backend in ("varlen", "flex") and dropout_p > 0:
        raise ValueError(f"backend={backend!r} has no attention dropout ({dropout_p=} given).")
    checks: dict[str, Callable[[], bool]] = {  # evaluated for the forced backend only
        "sdpa": lambda: _is_full(s),
        "sdpa_causal": lambda: _is_causal(s) and Q == KV,
        "sdpa_causal_lower_right": lambda: _is_causal(s),  # Q > KV goes through the dense path
        "varlen": lambda: (
            _is_segments(s) and Q == KV and q.device.type == "cuda" and _varlen_fn() is not None
        ),
        "flex": _has_flex,
        "dense": lambda: True,
    }
    ok = checks[backend]()
    if not ok:
        raise ValueError(
            f"backend={backend!r} cannot apply the mask {mask!r} to Q={Q}, KV={KV} on {q.device}."
        )


def _kind(mask: AttentionSpec | None, s: Structure | None, Q: int, KV: int, cpu: bool) -> str:
    """The mask kind of :data:`CHOICE_RULES` (intervals are looked for on CPU only, the one
    place the rules tell them from general masks)."""
    if _is_full(s):
        return "full"
    if _is_causal(s):
        return "causal"
    if _is_segments(s):
        return "segments"
    if cpu and mask is not None and mask.intervals(Q, KV, torch.device("cpu")) is not None:
        return "intervals"
    return "general"


def _feasible(backend: str, Q: int, KV: int, half: bool, dropout_p: float) -> bool:
    """The ``when`` column of :data:`CHOICE_RULES`."""
    if backend == "sdpa_causal":
        return Q == KV
    if backend == "sdpa_causal_lower_right":
        return Q < KV
    if backend == "varlen":
        return half and Q == KV and dropout_p == 0.0 and _varlen_fn() is not None
    if backend == "flex":
        return dropout_p == 0.0 and _has_flex()
    return True


def _pick(kind: str, device: str, grad: bool, Q: int, KV: int, half: bool, dropout_p: float) -> str:
    """The first row of :data:`CHOICE_RULES` that matches and whose conditions hold."""
    for r in CHOICE_RULES:
        if (
            r.kind in ("any", kind)
            and r.device in ("any", device)
            and r.grad in ("any", "yes" if grad else "no")
            and Q * KV >= r.min_len**2
            and _feasible(r.backend, Q, KV, half, dropout_p)
        ):
            return r.backend
    return "dense"


def choose_backend(
    mask: AttentionSpec | MaskModFn | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> str:
    """The backend :func:`attend` uses for these inputs (inspectable for tests and logs).

    ``mask`` is what :func:`attend` takes. The choice reads the mask's kind (from
    :attr:`~maskwise.attention.AttentionSpec.structure`, the form a fused kernel can express,
    and :meth:`~maskwise.attention.AttentionSpec.intervals`), never its class, the device,
    whether a backward pass follows (some input requires grad and grad mode is on) and the
    lengths. The first row of :data:`CHOICE_RULES` that matches and whose conditions hold wins:

    | # | mask kind | device | backward | sqrt(Q x KV) | backend | when |
    |---|---|---|---|---|---|---|
    | 1 | full | any | any | any | `sdpa` | - |
    | 2 | causal | any | any | any | `sdpa_causal` | Q == KV |
    | 3 | causal | any | any | any | `sdpa_causal_lower_right` | Q < KV |
    | 4 | segments | cuda | any | any | `varlen` | half precision, Q == KV, no dropout |
    | 5 | any | cuda | any | any | `flex` | no dropout |
    | 6 | segments | cpu | no | >= 1024 | `flex` | no dropout |
    | 7 | intervals | cpu | no | >= 1024 | `flex` | no dropout |
    | 8 | any | any | any | any | `dense` | - |

    Kinds: *full* (no mask, or one allowing every pair), *causal* (exactly causal), *segments*
    (padding or packed documents, alone or with causal), *intervals* (each query attends one
    run of keys: sliding window, chunked, prefix-LM, cross, padding by lengths, and their
    intersections), *general* (anything else). ``varlen`` also needs right padding, checked
    when it runs (one host read; otherwise ``dense``). FlexAttention has no backward on CPU;
    its compile (seconds per mask kind and shape) is counted spread over 1000 calls.
    """
    mask = _as_mask(mask)
    s = _structure(mask)
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {BACKENDS} ({backend!r} given).")
        _check_forced(backend, s, mask, q, k, dropout_p)
        return backend
    Q, KV = q.shape[-2], k.shape[-2]
    device = q.device.type
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    half = q.dtype in (torch.float16, torch.bfloat16)  # the flash varlen kernel's dtypes
    kind = _kind(mask, s, Q, KV, cpu=device == "cpu" and not needs_grad)
    return _pick(kind, device, needs_grad, Q, KV, half, dropout_p)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: AttentionSpec | MaskModFn | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Exact attention ``softmax(q k^T * scale + mask) v`` under an attention spec.

    Args:
        q: (B, H, Q, D).
        k, v: (B, H_kv, KV, D); ``H_kv`` may divide ``H`` (grouped-query attention).
        mask: a spec from :mod:`maskwise.attention` (True = may attend), a FlexAttention
            ``mask_mod(b, h, q_idx, kv_idx)`` function, or None. A tensor is refused with a
            ``TypeError`` that says how to wrap it: a dense bool mask ``allowed`` (B, 1, Q, KV)
            is ``mask_mod(lambda b, h, q, kv: allowed[b, 0, q, kv], batch=B)``.
        scale: softmax scale, default ``1 / sqrt(D)``.
        dropout_p: attention dropout (training only; pass 0 in eval).
        backend: ``"auto"`` or one of :data:`BACKENDS` (see :func:`choose_backend`).

    Returns:
        (B, H, Q, D). Query rows with no key to attend (padding, empty documents) are zeros on
        every backend, never NaN, and so are their gradients. An empty batch (B = 0) gives an
        empty result. Specs whose pattern differs per sample without per-sample data
        (``drop_keys``) are lowered for the B samples of ``q``: each sample its own pattern.

    >>> from maskwise.attention import causal, padding
    >>> q = k = v = torch.randn(2, 4, 6, 8)
    >>> out = attend(q, k, v, causal() & padding(torch.tensor([6, 3])))
    >>> out.shape, bool(out[1, :, 3:].eq(0).all()), bool(out.isnan().any())
    (torch.Size([2, 4, 6, 8]), True, False)
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k, v must be (B, H, L, D) "
            f"({tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)} given)."
        )
    if (
        k.shape != v.shape[:-1] + (k.shape[-1],)
        or q.shape[0] != k.shape[0]
        or q.shape[-1] != k.shape[-1]
    ):
        raise ValueError(
            f"Incompatible q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}."
        )
    H, H_kv = q.shape[1], k.shape[1]
    if H % H_kv:
        raise ValueError(f"Query heads ({H}) must be a multiple of key/value heads ({H_kv}).")
    spec = _as_mask(mask)
    B, Q, KV = q.shape[0], q.shape[-2], k.shape[-2]
    if spec is not None and spec.batch is not None and spec.batch != B:
        raise ValueError(f"The mask is for batch size {spec.batch}, q has {B}.")
    if spec is not None and spec.per_sample and spec.batch is None:
        spec = with_batch(spec, B)  # e.g. drop_keys: a pattern per sample on every path
    gqa = H != H_kv
    name = choose_backend(spec, q, k, v, dropout_p=dropout_p, backend=backend)
    if B == 0:  # nothing to attend; the lengths are still checked, the graph kept
        if spec is not None:
            spec.check(Q, KV)
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    if name == "sdpa" or spec is None:  # a forced kernel with no mask: plain attention
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, scale=scale, enable_gqa=gqa
        )
    if name == "sdpa_causal":
        if Q != KV:
            raise ValueError("sdpa_causal needs Q == KV (use sdpa_causal_lower_right).")
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=True, scale=scale, enable_gqa=gqa
        )
    if name == "sdpa_causal_lower_right":
        from torch.nn.attention.bias import causal_lower_right

        if Q > KV:  # early queries would have no key; the dense path zeroes them
            return _dense(q, k, v, spec, scale, dropout_p, gqa)
        if gqa:  # the causal bias does not take enable_gqa
            k, v = (x.repeat_interleave(H // H_kv, dim=1) for x in (k, v))
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=causal_lower_right(Q, KV), dropout_p=dropout_p, scale=scale
        )
    if name == "varlen":
        if backend == "auto" and not _right_padded(spec, Q):  # varlen packs contiguous rows
            return _dense(q, k, v, spec, scale, dropout_p, gqa)
        return _varlen(q, k, v, spec, scale, gqa)
    if name == "flex":
        return _flex(q, k, v, spec, scale, gqa)
    return _dense(q, k, v, spec, scale, dropout_p, gqa)


def _dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: AttentionSpec,
    scale: float | None,
    dropout_p: float,
    gqa: bool,
) -> torch.Tensor:
    Q, KV = q.shape[-2], k.shape[-2]

    def build() -> tuple[torch.Tensor, torch.Tensor | None]:
        allowed = mask.dense(Q, KV, device=q.device)  # (B or 1, 1, Q, KV)
        live = allowed.any(-1, keepdim=True)  # (B or 1, 1, Q, 1): rows with a key
        compiling = torch.compiler.is_compiling()
        if q.device.type == "cpu" and not compiling and bool(live.all()):  # free on CPU only
            return allowed, None
        # Empty rows attend everything (finite) and are zeroed after: no NaN forward or
        # backward.
        return allowed | ~live, ~live

    attn_mask, empty = cached_lowering(mask, "dense", Q, KV, q.device, build)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale, enable_gqa=gqa
    )
    return out if empty is None else out.masked_fill(empty, 0.0)


def _flex(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: AttentionSpec,
    scale: float | None,
    gqa: bool,
) -> torch.Tensor:
    Q, KV = q.shape[-2], k.shape[-2]
    block_mask = cached_lowering(
        mask, "block_mask", Q, KV, q.device, lambda: mask.block_mask(Q, KV, device=q.device)
    )
    # FlexAttention already returns zeros for rows whose every key is masked.
    return _flex_fn()(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)


def _right_padded(mask: AttentionSpec, L: int) -> bool:
    """Whether every row's segments come first and padding last (what varlen kernels pack);
    left padding or holes (tokens dropped from attention) go to another kernel. One host read,
    as varlen_offsets makes anyway."""
    s = mask.structure
    assert s is not None and s.segments is not None
    real = s.segments(L) >= 0
    return not bool((real.long().diff(dim=1) > 0).any())


def _varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: AttentionSpec,
    scale: float | None,
    gqa: bool,
) -> torch.Tensor:
    s = mask.structure
    assert s is not None
    B, H, L, D = q.shape
    cu, max_len, idx = varlen_offsets(mask.to(q.device), L)
    cu = cu.to(q.device)

    def pack(x: torch.Tensor) -> torch.Tensor:  # (B, h, L, D) -> (total, h, D)
        return x.transpose(1, 2).flatten(0, 1).index_select(0, idx)

    out = _varlen_fn()(
        pack(q),
        pack(k),
        pack(v),
        cu,
        cu,
        max_len,
        max_len,
        scale=scale if scale is not None else 1.0 / math.sqrt(D),
        window_size=(-1, 0) if s.causal else (-1, -1),
        enable_gqa=gqa,
    )  # (total, H, D)
    full = torch.zeros(B * L, H, D, dtype=out.dtype, device=out.device)
    return full.index_copy(0, idx, out).view(B, L, H, D).transpose(1, 2)
