"""drop_keys / DropKeys: random key dropping as an attention spec, with a float, scheduled or
controlled rate; statistics, determinism, composition, BlockMask lowering, attend()."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, create_mask

from maskwise import attention as A
from maskwise.attention import DropKeys, attend, causal, drop_keys, padding
from maskwise.dynamic import ReliabilityController, linear


def dropped_share(spec: A.AttentionSpec, structural: A.AttentionSpec | None, L: int) -> float:
    """Share of the pairs the structural mask allows that the spec forbids."""
    allowed = (
        torch.ones(1, 1, L, L, dtype=torch.bool) if structural is None else structural.dense(L)
    )
    got = spec.dense(L)
    return float((allowed & ~got).sum()) / float(allowed.sum())


# --------------------------------------------------------------------------------------------
# statistics and determinism


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_drop_rate_statistics(rate: float) -> None:
    # 128 x 128 = 16384 pairs (8256 causal): sd of the share <= 0.006.
    assert abs(dropped_share(drop_keys(rate, seed=1), None, 128) - rate) < 0.025
    assert abs(dropped_share(causal() & drop_keys(rate, seed=1), causal(), 128) - rate) < 0.03


def test_rate_zero_and_one() -> None:
    assert drop_keys(0.0).dense(16).all()
    assert not drop_keys(1.0).dense(16).any()
    assert torch.equal((causal() & drop_keys(0.0)).dense(16), causal().dense(16))


def test_composes_with_causal_and_padding() -> None:
    spec = causal() & drop_keys(0.4, seed=2)
    m = spec.dense(32)
    assert not (m & ~causal().dense(32)).any()  # never attends the future
    assert torch.equal(m, causal().dense(32) & drop_keys(0.4, seed=2).dense(32))
    # Per-sample patterns: with a batch of two, the samples' drops differ.
    batched = padding(torch.tensor([32, 20])) & drop_keys(0.4, seed=2)
    d = batched.dense(32)
    assert d.shape == (2, 1, 32, 32)
    assert not d[1, 0, :, 20:].any()
    assert not torch.equal(d[0, 0, :20, :20], d[1, 0, :20, :20])
    # The or-combination: what either allows.
    either = causal() | drop_keys(0.5, seed=2)
    assert torch.equal(either.dense(16), causal().dense(16) | drop_keys(0.5, seed=2).dense(16))


def test_same_seed_and_step_same_pattern() -> None:
    a, b = drop_keys(0.3, seed=5), drop_keys(0.3, seed=5)
    assert torch.equal(a.dense(64), b.dense(64))
    assert not torch.equal(a.dense(64), drop_keys(0.3, seed=6).dense(64))
    # The pattern of a pair does not depend on the lengths (a KV cache sees the same drops).
    assert torch.equal(a.dense(64)[..., :20, :30], a.dense(20, 30))
    # The global generator is not used.
    state = torch.random.get_rng_state()
    a.dense(64)
    assert torch.equal(state, torch.random.get_rng_state())


def test_advance_changes_the_pattern() -> None:
    a, b = drop_keys(0.3, seed=5), drop_keys(0.3, seed=5)
    first = a.dense(64)
    a.advance()
    assert a.step == 1
    second = a.dense(64)
    assert not torch.equal(first, second)
    # About rate * (1 - rate) * 2 of the pairs change between two steps.
    assert abs(float((first ^ second).float().mean()) - 2 * 0.3 * 0.7) < 0.03
    b.advance()
    assert torch.equal(second, b.dense(64))
    assert "step=1" in repr(a)


def test_rate_from_a_schedule() -> None:
    spec = drop_keys(linear(0.0, 0.6, 3), seed=0)
    shares = []
    for _ in range(5):
        shares.append(dropped_share(spec, None, 96))
        spec.advance()
    assert shares[0] == 0.0
    for share, want in zip(shares[1:], [0.2, 0.4, 0.6, 0.6]):
        assert abs(share - want) < 0.03


def test_rate_from_a_controller() -> None:
    c = ReliabilityController(
        0.1, target=0.5, gain=1.0, momentum=0.0, max_delta=1.0, direction="seed"
    )
    spec = causal() & drop_keys(c, seed=0)
    before = dropped_share(spec, causal(), 96)
    c.update(0.0)  # unreliable: more dropping, 0.1 -> 0.6
    after = dropped_share(spec, causal(), 96)
    assert abs(before - 0.1) < 0.03 and abs(after - 0.6) < 0.03
    assert isinstance(spec.b, DropKeys) and spec.b.rate == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("rate", "exc"), [(1.5, ValueError), (-0.1, ValueError), ("0.1", TypeError)]
)
def test_bad_rate(rate, exc) -> None:
    with pytest.raises(exc, match=str(rate)):
        drop_keys(rate)


# --------------------------------------------------------------------------------------------
# lowering


@pytest.mark.parametrize("rate", [0.3, 0.7])
@pytest.mark.parametrize("structural", [None, "causal"])
@pytest.mark.parametrize(("L", "bs"), [(40, 16), (64, 32)])
def test_block_mask_equals_create_block_mask(
    rate: float, structural: str | None, L: int, bs: int
) -> None:
    spec = drop_keys(rate, seed=3) if structural is None else causal() & drop_keys(rate, seed=3)
    got = spec.block_mask(L, block_size=bs)
    want = create_block_mask(spec.mask_mod_for(L, L), 1, None, L, L, device="cpu", BLOCK_SIZE=bs)
    assert torch.equal(got.to_dense(), want.to_dense())
    # Element level: the mask_mod and the dense mask are one rule.
    assert torch.equal(
        create_mask(spec.mask_mod_for(L, L), 1, 1, L, L, device="cpu"), spec.dense(L)
    )


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_tiny_blocks_are_conservative(rate: float) -> None:
    """With 2 x 2 blocks whole blocks are dropped by chance; for rate <= 0.5 the BlockMask does
    not look and lists them as partial (the rule is applied inside, so attention stays exact).
    It must never list a block empty that has an allowed pair, nor full one that has not."""
    L, bs = 15, 2
    spec = causal() & drop_keys(rate, seed=4)
    bm = spec.block_mask(L, block_size=bs)
    dense = spec.dense(L)[0, 0]
    n = -(-L // bs)
    listed = bm.to_dense()[0, 0].bool()  # partial or full
    full = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(int(bm.full_kv_num_blocks[0, 0, i])):
            full[i, int(bm.full_kv_indices[0, 0, i, j])] = True
    for i in range(n):
        for j in range(n):
            block = dense[i * bs : (i + 1) * bs, j * bs : (j + 1) * bs]
            if block.any():
                assert listed[i, j], (i, j)
            if full[i, j]:
                assert block.all(), (i, j)


# --------------------------------------------------------------------------------------------
# attend


def reference_attention(q, k, v, allowed):
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    w = torch.softmax(scores, -1).nan_to_num(0.0)  # rows with nothing allowed: zeros
    return w @ v


@pytest.mark.parametrize("backend", ["auto", "dense"])
@pytest.mark.parametrize("rate", [0.3, 0.9])
def test_attend_with_causal_and_drop_keys_has_no_nan(backend: str, rate: float) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 48, 16, generator=g) for _ in range(3))
    spec = causal() & drop_keys(rate, seed=1)
    out = attend(q, k, v, spec, backend=backend)
    assert out.shape == (2, 4, 48, 16)
    assert torch.isfinite(out).all()
    allowed = spec.dense(48, batch=2)  # attend draws a pattern per sample
    assert not torch.equal(allowed[0], allowed[1])
    empty = ~allowed[:, 0].any(-1)  # (B, Q): queries whose every key was dropped
    if rate == 0.9:
        assert empty.any()  # query 0 sees one key, dropped with probability 0.9
    assert (out.transpose(1, 2)[empty] == 0).all()
    assert torch.allclose(out, reference_attention(q, k, v, allowed), atol=1e-5)
    # Gradients are finite too.
    qg = q.clone().requires_grad_()
    attend(qg, k, v, spec, backend=backend).sum().backward()
    assert torch.isfinite(qg.grad).all()
