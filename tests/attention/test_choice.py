"""``attend``'s choice rule (``CHOICE_RULES``, one source of truth) and its lowering cache.

The rule: every row of the table is what ``choose_backend`` returns for inputs that match it and
no row above it (CUDA rows through the same pure function ``_pick``; CPU rows also with real
tensors and specs of that kind); the table shown in ``choose_backend``'s docstring and in
docs/benchmarks.md is ``choice_table()``.

The cache: a static spec lowered twice gives the identical object; any change the lowering
depends on (a tensor changed in place, an attribute, the lengths, the device) gives a fresh one
equal to a lowering from scratch, never a stale one; specs that cannot be fingerprinted (a
``mask_mod`` function, inference-mode tensors) are never cached.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from maskwise import attention as A
from maskwise.attention import attend, choose_backend
from maskwise.attention.attend import CHOICE_RULES, _pick, choice_table
from maskwise.attention.spec import cached_lowering

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
CPU = torch.device("cpu")

# Per row of CHOICE_RULES: (kind, device, grad, Q, KV, half, dropout) that reach it.
REACH = [
    ("full", "cpu", True, 8, 8, False, 0.1),
    ("causal", "cpu", True, 8, 8, False, 0.1),
    ("causal", "cuda", False, 8, 16, True, 0.0),
    ("segments", "cuda", True, 64, 64, True, 0.0),
    ("segments", "cuda", True, 64, 64, False, 0.0),  # float32: no varlen, so flex
    ("segments", "cpu", False, 1024, 1024, False, 0.0),
    ("intervals", "cpu", False, 1024, 1024, False, 0.0),
    ("intervals", "cpu", True, 1024, 1024, False, 0.0),  # CPU flex has no backward
]


def test_every_rule_is_what_choose_backend_returns() -> None:
    assert len(REACH) == len(CHOICE_RULES)
    for row, (kind, device, grad, Q, KV, half, dropout) in zip(CHOICE_RULES, REACH):
        assert row.kind in ("any", kind) and row.device in ("any", device)
        assert _pick(kind, device, grad, Q, KV, half, dropout) == row.backend, row


def test_rules_fall_through_when_a_condition_fails() -> None:
    assert _pick("causal", "cpu", True, 16, 8, False, 0.0) == "dense"  # Q > KV
    assert _pick("causal", "cuda", True, 16, 8, False, 0.0) == "flex"
    assert _pick("segments", "cuda", True, 64, 64, True, 0.1) == "dense"  # dropout
    assert _pick("segments", "cpu", False, 1024, 1023, False, 0.0) == "dense"
    assert _pick("intervals", "cpu", False, 1024, 1023, False, 0.0) == "dense"
    assert _pick("general", "cpu", False, 8192, 8192, False, 0.0) == "dense"


def _qkv(Q: int, KV: int, grad: bool) -> tuple[torch.Tensor, ...]:
    q = torch.empty(1, 1, Q, 1, requires_grad=grad)
    k = torch.empty(1, 1, KV, 1, requires_grad=grad)
    return q, k, k.detach().clone().requires_grad_(grad)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        (A.full(), "full"),
        (A.causal(), "causal"),
        (A.causal() & A.documents([[1500, 548]]), "segments"),
        (A.padding(torch.tensor([2048])), "segments"),
        (A.sliding_window(256), "intervals"),
        (A.chunked(128) & A.causal(), "intervals"),
        (A.prefix_lm(torch.tensor([100])), "intervals"),
        (A.causal() | A.chunked(64), "general"),
        (A.mask_mod(lambda b, h, q, kv: q >= kv), "general"),
    ],
    ids=lambda x: x if isinstance(x, str) else repr(x)[:30],
)
@pytest.mark.parametrize("L", [512, 1024, 2048])
@pytest.mark.parametrize("grad", [False, True])
def test_cpu_rows_with_real_specs(spec: A.AttentionSpec, kind: str, L: int, grad: bool) -> None:
    q, k, v = _qkv(L, L, grad)
    assert choose_backend(spec, q, k, v) == _pick(kind, "cpu", grad, L, L, False, 0.0)


def test_the_table_shown_is_the_table_used() -> None:
    table = choice_table()
    assert table in inspect.getdoc(choose_backend)
    assert len(table.splitlines()) == len(CHOICE_RULES) + 2
    if DOCS.exists():
        assert table in DOCS.read_text(), "docs/benchmarks.md must show choice_table()"


# ------------------------------------------------------------------------------------------------
# The lowering cache
# ------------------------------------------------------------------------------------------------
class _Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self):
        self.calls += 1
        return self.fn()


def _block(spec: A.AttentionSpec, L: int):
    return _Counter(lambda: spec.block_mask(L, block_size=32))


def test_cache_hit_returns_the_identical_object() -> None:
    spec = A.causal() & A.documents(torch.tensor([[0] * 100 + [1] * 56]))
    build = _block(spec, 156)
    first = cached_lowering(spec, "block_mask", 156, 156, CPU, build)
    assert cached_lowering(spec, "block_mask", 156, 156, CPU, build) is first
    assert build.calls == 1


def test_in_place_change_gives_a_fresh_mask() -> None:
    ids = torch.tensor([[0] * 100 + [1] * 56])
    spec = A.causal() & A.documents(ids)
    first = cached_lowering(spec, "block_mask", 156, 156, CPU, _block(spec, 156))
    ids[0, 50:100] = 1  # the spec holds this tensor (int64 in, so no copy was made)
    build = _block(spec, 156)
    second = cached_lowering(spec, "block_mask", 156, 156, CPU, build)
    assert build.calls == 1 and second is not first
    fresh = (A.causal() & A.documents(ids.clone())).block_mask(156, block_size=32)
    assert torch.equal(second.to_dense(), fresh.to_dense())
    assert not torch.equal(first.to_dense(), fresh.to_dense())


def test_attribute_lengths_and_device_changes_give_fresh_masks() -> None:
    spec = A.sliding_window(16)
    a = cached_lowering(spec, "dense", 40, 40, CPU, lambda: spec.dense(40))
    spec.size = 8
    b = cached_lowering(spec, "dense", 40, 40, CPU, lambda: spec.dense(40))
    assert b is not a and torch.equal(b, A.sliding_window(8).dense(40))
    c = cached_lowering(spec, "dense", 41, 41, CPU, lambda: spec.dense(41))
    assert c.shape[-1] == 41
    d = cached_lowering(spec, "dense", 41, 41, torch.device("meta"), lambda: spec.dense(41))
    assert d is not c
    # Replacing a tensor attribute by an equal-looking new one is a change too.
    pad = A.padding(torch.tensor([3, 5]))
    e = cached_lowering(pad, "dense", 6, 6, CPU, lambda: pad.dense(6))
    pad.lengths = torch.tensor([6, 1])
    f = cached_lowering(pad, "dense", 6, 6, CPU, lambda: pad.dense(6))
    assert torch.equal(f, A.padding(torch.tensor([6, 1])).dense(6)) and f is not e


def test_specs_that_cannot_be_fingerprinted_are_never_cached() -> None:
    lim = torch.tensor([3])
    spec = A.mask_mod(lambda b, h, q, kv: kv < lim[b], batch=1)
    build = _Counter(lambda: spec.dense(6))
    cached_lowering(spec, "dense", 6, 6, CPU, build)
    cached_lowering(spec, "dense", 6, 6, CPU, build)
    assert build.calls == 2
    with torch.inference_mode():
        pad = A.padding(torch.tensor([3]))
    build = _Counter(lambda: pad.dense(6))
    cached_lowering(pad, "dense", 6, 6, CPU, build)
    cached_lowering(pad, "dense", 6, 6, CPU, build)
    assert build.calls == 2


def test_a_moved_copy_keeps_its_own_cache() -> None:
    spec = A.documents([[3, 3]])
    cached_lowering(spec, "dense", 6, 6, CPU, lambda: spec.dense(6))
    moved = spec.to("meta")
    assert "_lowered" not in vars(moved)


def test_attend_reuses_the_dense_mask_and_never_a_stale_one() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 12, 4, generator=g) for _ in range(3))
    ids = torch.tensor([[0] * 6 + [1] * 6])
    spec = A.causal() & A.documents(ids)
    out1 = attend(q, k, v, spec)
    cached = vars(spec)["_lowered"]["dense"][2]
    attend(q, k, v, spec)
    assert vars(spec)["_lowered"]["dense"][2] is cached
    ids[0, 3:] = 1  # now documents of 3 and 9 tokens
    out2 = attend(q, k, v, spec)
    want = F.scaled_dot_product_attention(
        q, k, v, attn_mask=(A.causal() & A.documents(ids.clone())).dense(12)
    )
    torch.testing.assert_close(out2, want)
    assert not torch.allclose(out1, out2)
