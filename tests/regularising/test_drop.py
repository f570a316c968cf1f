"""``drop_tokens``: exact counts, prefix kept first, order kept, uniform choice, determinism,
equality with a naive loop, bad input."""

from __future__ import annotations

import pytest
import torch

from maskwise.functional.drop import drop_tokens
from maskwise.functional.patches import mask_patches


def _naive(x: torch.Tensor, rate: float, P: int, g: torch.Generator) -> torch.Tensor:
    """Row by row from the same drop mask: prefix, then the kept tokens in order."""
    dropped = mask_patches(x.shape[0], x.shape[1] - P, rate, generator=g)
    rows = []
    for b in range(x.shape[0]):
        keep = list(range(P)) + [P + i for i in range(x.shape[1] - P) if not dropped[b, i]]
        rows.append(x[b, keep])
    return torch.stack(rows)


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("P", [0, 1, 4])
def test_counts_prefix_and_order(rate: float, P: int) -> None:
    x = torch.randn(6, 20, 3)
    kept, index = drop_tokens(
        x, rate, num_prefix_tokens=P, generator=torch.Generator().manual_seed(0)
    )
    K = 20 - P - round(rate * (20 - P))
    assert kept.shape == (6, P + K, 3) and index.shape == (6, P + K)
    assert index[:, :P].tolist() == [list(range(P))] * 6
    assert bool((index.diff(dim=1) > 0).all())  # original order, no repeats
    torch.testing.assert_close(kept, x.gather(1, index[..., None].expand(-1, -1, 3)))


def test_matches_naive_loop() -> None:
    x = torch.randn(5, 17, 4)
    got, _ = drop_tokens(x, 0.3, num_prefix_tokens=2, generator=torch.Generator().manual_seed(3))
    want = _naive(x, 0.3, 2, torch.Generator().manual_seed(3))
    assert torch.equal(got, want)


def test_every_token_equally_likely_to_be_kept() -> None:
    # 4000 rows x 10 tokens at rate 0.3: each token is kept with probability 0.7
    # (binomial std 0.0072 per token; tolerance 0.03 is > 4 std).
    x = torch.zeros(4000, 11, 1)
    _, index = drop_tokens(x, 0.3, num_prefix_tokens=1, generator=torch.Generator().manual_seed(1))
    kept = torch.zeros(4000, 11).scatter_(1, index, 1.0)[:, 1:].mean(0)
    assert torch.allclose(kept, torch.full((10,), 0.7), atol=0.03)


def test_deterministic_and_global_rng_untouched() -> None:
    x = torch.randn(3, 9, 2)
    state = torch.get_rng_state()
    a = drop_tokens(x, 0.5, generator=torch.Generator().manual_seed(5))[1]
    b = drop_tokens(x, 0.5, generator=torch.Generator().manual_seed(5))[1]
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())


def test_gradient_flows_to_kept_tokens_only() -> None:
    x = torch.randn(2, 8, 3, requires_grad=True)
    kept, index = drop_tokens(x, 0.5, generator=torch.Generator().manual_seed(0))
    kept.sum().backward()
    assert x.grad is not None
    hit = torch.zeros(2, 8).scatter_(1, index, 1.0).bool()
    assert bool((x.grad[hit] == 1).all()) and bool((x.grad[~hit] == 0).all())


def test_bad_input() -> None:
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="x must be"):
        drop_tokens(torch.randn(2, 5), 0.5)
    with pytest.raises(ValueError, match="rate"):
        drop_tokens(x, 1.5)
    with pytest.raises(TypeError, match="rate must be a float"):
        drop_tokens(x, torch.tensor([0.1, 0.2]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        drop_tokens(x, 0.5, num_prefix_tokens=6)


def test_token_drop_needs_no_host_read() -> None:
    """The kept count comes from the rate, so the keyed module compiles with fullgraph=True."""
    import maskwise.nn as mnn

    torch._dynamo.reset()
    x = torch.randn(2, 9, 4)
    m = mnn.TokenDrop(0.5, num_prefix_tokens=1, keyed=True, seed=0)
    ref = mnn.TokenDrop(0.5, num_prefix_tokens=1, keyed=True, seed=0)
    got = torch.compile(m, fullgraph=True, backend="eager")(x, return_indices=True)
    want = ref(x, return_indices=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
