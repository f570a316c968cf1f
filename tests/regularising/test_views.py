"""``two_views``: clean + masked, or two independent masked views in one draw, for every kind
of masker (tokens, patches, blocks, erasing, SpecAugment, time spans, features) and for
``DynamicMask``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import maskwise.nn as mnn
from maskwise.dynamic import linear
from maskwise.nn.views import two_views

IDS = torch.randint(5, 60, (6, 16), generator=torch.Generator().manual_seed(0))
AM = torch.ones_like(IDS).index_fill_(1, torch.arange(12, 16), 0)
X = torch.randn(6, 16, 8, generator=torch.Generator().manual_seed(1))
IMAGES = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(2))
SPEC = torch.randn(6, 20, 40, generator=torch.Generator().manual_seed(3))
LENGTHS = torch.tensor([40, 30, 20, 40, 35, 10])

# name -> (masker factory, input, kwargs)
CASES: dict[str, tuple[Callable[[], Any], torch.Tensor, dict[str, Any]]] = {
    "tokens": (lambda: mnn.TokenMask(0.4, mask_id=4, seed=0), IDS, {"attention_mask": AM}),
    "patches": (lambda: mnn.PatchMask(0.5, seed=0), X, {}),
    "blocks": (lambda: mnn.BlockPatchMask(0.4, grid=4, min_block=2, seed=0), X, {}),
    "erase": (lambda: mnn.Erase(1.0, seed=0), IMAGES, {}),
    "specaugment": (
        lambda: mnn.SpecAugment(freq_width=5, time_width=5, seed=0),
        SPEC,
        {"lengths": LENGTHS},
    ),  # fmt: skip
    "time spans": (lambda: mnn.TimeSpanMask(0.5, span=3, seed=0), X, {"lengths": LENGTHS // 3}),
    "features": (lambda: mnn.FeatureMask(0.3, dims=-1, seed=0), X, {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_clean_view_is_the_batch_and_masked_view_is_the_masker(name: str) -> None:
    make, x, kw = CASES[name]
    clean, masked = two_views(make(), x, **kw)
    assert clean.x is x and clean.mask is None
    out = make()(x, **kw)
    want = out.spec if hasattr(out, "spec") else out[0]
    assert torch.equal(masked.x, want)
    assert masked.mask is not None and bool(masked.mask.any())


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_masked_views_are_one_draw_on_the_repeated_batch(name: str) -> None:
    make, x, kw = CASES[name]
    a, b = two_views(make(), x, mode="masked", **kw)
    assert a.x.shape == b.x.shape == x.shape
    assert a.mask is not None and b.mask is not None
    assert not torch.equal(a.mask, b.mask)  # independent draws per row
    twice = {k: torch.cat([v, v]) for k, v in kw.items()}
    out = make()(torch.cat([x, x]), **twice)
    want = out.spec if hasattr(out, "spec") else out[0]
    assert torch.equal(torch.cat([a.x, b.x]), want)


def test_dynamic_mask_advances_once_per_call() -> None:
    dm = mnn.DynamicMask(mnn.TokenMask(0.0, mask_id=4, seed=0), linear(0.1, 0.5, 10))
    two_views(dm, IDS, mode="masked", attention_mask=AM)
    two_views(dm, IDS, attention_mask=AM)
    assert int(dm.step) == 2


def test_eval_mode_gives_two_clean_views() -> None:
    a, b = two_views(mnn.PatchMask(0.5, seed=0).eval(), X, mode="masked")
    assert torch.equal(a.x, X) and torch.equal(b.x, X)
    assert a.mask is not None and not bool(a.mask.any())


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="mode"):
        two_views(mnn.PatchMask(0.5), X, mode="both")
    with pytest.raises(TypeError, match="batched tensor"):
        two_views(mnn.PatchMask(0.5), [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not \\(x, mask\\)"):
        two_views(lambda x: {"x": x}, X)  # type: ignore[arg-type]
    a, b = two_views(torch.nn.Identity(), X)  # a tensor-in, tensor-out masker: no mask
    assert b.mask is None and torch.equal(b.x, X)
