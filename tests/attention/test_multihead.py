"""``SpecAttention`` (``maskwise.attention``, ``maskwise.nn``; formerly ``MultiheadAttention``):
projections around ``attend`` with a spec as mask. ``forward(x, mask=spec)`` is self-attention,
``forward(x, context=memory, mask=cross(...))`` cross-attention; ``num_kv_heads < num_heads`` is
grouped-query attention. A query row with no key (padding) gets zeros from ``attend``, so its
output is ``out_proj(0)``: the out_proj bias. Dropout acts in training only.
"""

from __future__ import annotations

import pytest
import torch

from maskwise import attention as A
from maskwise.attention import KVCache, attend
from maskwise.attention.modules import SpecAttention
from tests.reference import attention as R


def _manual(
    m: SpecAttention, x: torch.Tensor, spec, context: torch.Tensor | None = None
) -> torch.Tensor:
    """The module's computation written out: project, split heads, attend, merge, project."""
    src = x if context is None else context
    B, L, E = x.shape
    S = src.shape[1]
    Dh = m.head_dim
    q = (x @ m.q_proj.weight.T + m.q_proj.bias).view(B, L, m.num_heads, Dh).transpose(1, 2)
    k = (src @ m.k_proj.weight.T + m.k_proj.bias).view(B, S, m.num_kv_heads, Dh).transpose(1, 2)
    v = (src @ m.v_proj.weight.T + m.v_proj.bias).view(B, S, m.num_kv_heads, Dh).transpose(1, 2)
    out = attend(q, k, v, spec)
    return out.transpose(1, 2).reshape(B, L, E) @ m.out_proj.weight.T + m.out_proj.bias


def _reference(
    m: SpecAttention, x: torch.Tensor, allowed: torch.Tensor, context=None
) -> torch.Tensor:
    """The same with float64 naive attention (GQA head mapping as in the reference)."""
    src = (x if context is None else context).double()
    x = x.double()
    B, L, E = x.shape
    S = src.shape[1]
    W = {
        n: (getattr(m, n).weight.double(), getattr(m, n).bias.double())
        for n in ("q_proj", "k_proj", "v_proj", "out_proj")
    }
    q = (x @ W["q_proj"][0].T + W["q_proj"][1]).view(B, L, m.num_heads, -1).transpose(1, 2)
    k = (src @ W["k_proj"][0].T + W["k_proj"][1]).view(B, S, m.num_kv_heads, -1).transpose(1, 2)
    v = (src @ W["v_proj"][0].T + W["v_proj"][1]).view(B, S, m.num_kv_heads, -1).transpose(1, 2)
    out = R.attention(q, k, v, allowed)
    return out.transpose(1, 2).reshape(B, L, E) @ W["out_proj"][0].T + W["out_proj"][1]


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 9, 32, generator=torch.Generator().manual_seed(0))


def test_self_attention_causal_padding(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = SpecAttention(32, 4).eval()
    lengths = torch.tensor([9, 5, 0])
    spec = A.causal() & A.padding(lengths)
    with torch.no_grad():
        out = m(x, mask=spec)
        assert out.shape == (3, 9, 32)
        torch.testing.assert_close(out, _manual(m, x, spec), atol=1e-6, rtol=0)
        want = _reference(m, x, R.causal(9, 9) & R.padding(lengths, 9, 9))
        torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=0)
        # padded query rows: attend gives zeros, so the output is out_proj(0) = out_proj.bias
        bias = m.out_proj.bias.expand(3, 9, 32)
        pad = torch.arange(9) >= lengths[:, None]  # (B, L)
        assert torch.equal(out[pad], bias[pad])
        assert not torch.allclose(out[~pad], bias[~pad])


def test_cross_attention(x: torch.Tensor) -> None:
    torch.manual_seed(1)
    m = SpecAttention(32, 4, kdim=12).eval()
    memory = torch.randn(3, 14, 12, generator=torch.Generator().manual_seed(2))
    ql, kl = torch.tensor([9, 3, 6]), torch.tensor([14, 7, 0])
    spec = A.cross(ql, kl)
    with torch.no_grad():
        out = m(x, context=memory, mask=spec)
        assert out.shape == (3, 9, 32)
        torch.testing.assert_close(out, _manual(m, x, spec, memory), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            out.double(), _reference(m, x, R.cross(ql, kl, 9, 14), memory), atol=1e-5, rtol=0
        )
        # padded queries of row 1 and every query of row 2 (no keys) give the bias
        bias = m.out_proj.bias
        assert torch.equal(out[1, 3:], bias.expand(6, 32))
        assert torch.equal(out[2], bias.expand(9, 32))


@pytest.mark.parametrize("num_kv_heads", [2, 1])
def test_grouped_query_attention(x: torch.Tensor, num_kv_heads: int) -> None:
    torch.manual_seed(2)
    m = SpecAttention(32, 4, num_kv_heads=num_kv_heads).eval()
    assert m.k_proj.out_features == m.v_proj.out_features == num_kv_heads * 8
    lengths = torch.tensor([9, 6, 2])
    spec = A.causal() & A.padding(lengths)
    with torch.no_grad():
        out = m(x, mask=spec)
        torch.testing.assert_close(out, _manual(m, x, spec), atol=1e-6, rtol=0)
        want = _reference(m, x, R.causal(9, 9) & R.padding(lengths, 9, 9))
        torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=0)


def test_no_mask_and_backend_argument(x: torch.Tensor) -> None:
    torch.manual_seed(3)
    m = SpecAttention(32, 4).eval()
    spec = A.sliding_window(3) & A.padding(torch.tensor([9, 8, 4]))
    with torch.no_grad():
        torch.testing.assert_close(m(x), _manual(m, x, None), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            m(x, mask=spec, backend="dense"), m(x, mask=spec), atol=0, rtol=0
        )


def test_gradients_finite_with_padded_rows(x: torch.Tensor) -> None:
    torch.manual_seed(4)
    m = SpecAttention(32, 4, num_kv_heads=2)
    x = x.clone().requires_grad_()
    out = m(x, mask=A.causal() & A.padding(torch.tensor([9, 3, 0])))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[2].eq(0).all()  # an all-padding row influences nothing
    assert x.grad[1, 3:].eq(0).all()  # nor do padded tokens
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_dropout_train_and_eval(x: torch.Tensor) -> None:
    torch.manual_seed(5)
    m = SpecAttention(32, 4, dropout=0.5)
    lengths = torch.tensor([9, 5, 2])
    spec = A.causal() & A.padding(lengths)
    pad = torch.arange(9) >= lengths[:, None]
    with torch.no_grad():
        m.eval()
        e1, e2 = m(x, mask=spec), m(x, mask=spec)
        assert torch.equal(e1, e2)  # eval: deterministic, no dropout
        torch.testing.assert_close(e1, _manual(m, x, spec), atol=1e-6, rtol=0)
        m.train()
        t1, t2 = m(x, mask=spec), m(x, mask=spec)
        assert not torch.allclose(t1, t2)  # train: dropout draws differ
        assert not torch.allclose(t1, e1)
        assert not t1.isnan().any()
        assert torch.equal(t1[pad], m.out_proj.bias.expand(3, 9, 32)[pad])  # padded rows still zero
        # no dropout: train and eval agree
        m0 = SpecAttention(32, 4, dropout=0.0)
        m0.load_state_dict(m.state_dict())
        torch.testing.assert_close(
            m0.train()(x, mask=spec), m0.eval()(x, mask=spec), atol=0, rtol=0
        )


def test_extra_repr() -> None:
    r = repr(SpecAttention(32, 4, num_kv_heads=2, dropout=0.1))
    assert (
        "embed_dim=32" in r and "num_heads=4" in r and "num_kv_heads=2" in r and "dropout=0.1" in r
    )


def test_nn_alias_is_the_attention_module() -> None:
    import maskwise.nn

    assert maskwise.nn.SpecAttention is SpecAttention
    assert issubclass(maskwise.nn.MultiheadAttention, SpecAttention)  # the deprecated name


# ----------------------------------------------------------------------------------------------
# key/value cache


@pytest.mark.parametrize("num_kv_heads", [4, 2])
@pytest.mark.parametrize("prefill", [1, 4])
def test_cached_decoding_equals_full_causal_attention(
    x: torch.Tensor, num_kv_heads: int, prefill: int
) -> None:
    """A prefill of ``prefill`` tokens under causal(), then one token a call: each output equals
    the full-sequence causal output at that position."""
    m = SpecAttention(32, 4, num_kv_heads=num_kv_heads).eval()
    B, L, _ = x.shape
    with torch.no_grad():
        want = m(x, mask=A.causal())
        m.setup_cache(B, L)
        outs = [m(x[:, :prefill], mask=A.causal())]
        outs += [m(x[:, t : t + 1]) for t in range(prefill, L)]
    got = torch.cat(outs, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert m.cache is not None and m.cache.size == L


def test_cached_cross_attention_projects_context_once(x: torch.Tensor) -> None:
    m = SpecAttention(32, 4, kdim=12).eval()
    memory = torch.randn(3, 5, 12)
    spec = A.cross(torch.ones(3, dtype=torch.long), torch.tensor([5, 3, 1]))
    with torch.no_grad():
        want = torch.cat([m(x[:, t : t + 1], context=memory, mask=spec) for t in range(4)], 1)
        m.setup_cache(3, 5)
        calls = []
        handle = m.k_proj.register_forward_hook(lambda *_: calls.append(1))
        got = torch.cat([m(x[:, t : t + 1], context=memory, mask=spec) for t in range(4)], 1)
        handle.remove()
    torch.testing.assert_close(got, want)
    assert len(calls) == 1  # the memory's keys were projected once, then read from the cache


def test_reset_and_remove_cache(x: torch.Tensor) -> None:
    m = SpecAttention(32, 4).eval()
    with torch.no_grad():
        m.setup_cache(3, 9)
        first = m(x[:, :3], mask=A.causal())
        m.reset_cache()
        assert m.cache is not None and m.cache.size == 0
        again = m(x[:, :3], mask=A.causal())  # a new sequence: no keys of the old one
        m.remove_cache()
        plain = m(x[:, :3], mask=A.causal())
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, plain)
    assert m.cache is None


def test_cache_overflow_and_mismatch_raise(x: torch.Tensor) -> None:
    m = SpecAttention(32, 4).eval()
    m.setup_cache(3, 4)
    with torch.no_grad():
        m(x[:, :4], mask=A.causal())
        with pytest.raises(ValueError, match="holds 4 positions; 5 needed"):
            m(x[:, 4:5])
    cache = KVCache(2, 4, num_kv_heads=2, head_dim=8)
    with pytest.raises(ValueError, match="do not fit the cache"):
        cache.update(torch.zeros(3, 2, 1, 8), torch.zeros(3, 2, 1, 8))
    assert cache.size == 0  # nothing written


def test_cache_buffers_are_not_saved() -> None:
    m = SpecAttention(32, 4)
    keys = set(m.state_dict())
    m.setup_cache(2, 8)
    assert set(m.state_dict()) == keys
