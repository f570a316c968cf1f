"""What compiles without graph breaks outside the modules (issue 12, point 9): ``attend`` under
``causal() & padding(lengths)`` (no host checks while tracing) and ``keep_indices`` with a known
count, equal to eager."""

from __future__ import annotations

import pytest
import torch

from maskwise.attention import attend, causal, padding
from maskwise.functional import keep_indices, mask_patches

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


def test_attend_causal_padding_compiles_fullgraph() -> None:
    q = torch.randn(2, 2, 8, 16, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([8, 5])

    def f(q: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return attend(q, q, q, causal() & padding(lengths))

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(q, lengths), f(q, lengths))


def test_keep_indices_with_a_known_count_compiles_fullgraph() -> None:
    m = mask_patches(3, 16, 0.25, generator=torch.Generator().manual_seed(1))

    def f(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return keep_indices(m, num_keep=12)

    got, want = torch.compile(f, fullgraph=True, backend="eager")(m), keep_indices(m)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(ValueError, match="num_keep"):
        keep_indices(m, num_keep=17)
