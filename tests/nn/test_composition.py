"""Issue 12, point 7: maskers that compose as ecosystem modules do.

* ``return_mask=False``: tensor in, tensor out, for ``nn.Sequential``, a torchvision-style
  ``Compose`` or a Dataset transform (also through ``DynamicMask``, whose monitor still sees the
  mask).
* ``PatchMask(num_prefix_tokens=P)``: as timm's ``PatchDropout``, the first P tokens (CLS,
  registers) are never masked or dropped and stay first.
* ``SpecAugment``'s rate moves the masked share continuously and monotonically, 0 = nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch import nn

import maskwise as mw
from maskwise.monitor import MaskMonitor
from maskwise.nn import (
    BlockPatchMask,
    DynamicMask,
    Erase,
    FeatureMask,
    PatchMask,
    SpecAugment,
    TimeSpanMask,
    TokenMask,
)


class Compose:
    """torchvision's ``Compose``: call each transform on the output of the previous one."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = transforms

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x


# name -> (masker with return_mask=False, the module after it, an input)
PIPELINES: dict[str, tuple[nn.Module, nn.Module, torch.Tensor]] = {
    "TokenMask": (
        TokenMask(0.3, mask_id=3, special_ids=[0], return_mask=False, seed=0),
        nn.Embedding(50, 8),
        torch.randint(4, 50, (4, 12)),
    ),
    "FeatureMask": (
        FeatureMask(0.3, return_mask=False, seed=0),
        nn.Linear(8, 2),
        torch.randn(4, 8),
    ),
    "PatchMask": (
        PatchMask(0.5, return_mask=False, seed=0),
        nn.Linear(8, 2),
        torch.randn(4, 16, 8),
    ),
    "PatchMask(drop)": (
        PatchMask(0.5, drop=True, return_mask=False, seed=0),
        nn.Linear(8, 2),
        torch.randn(4, 16, 8),
    ),
    "BlockPatchMask": (
        BlockPatchMask(0.4, grid=4, min_block=2, return_mask=False, seed=0),
        nn.Linear(8, 2),
        torch.randn(4, 16, 8),
    ),
    "Erase": (Erase(0.5, return_mask=False, seed=0), nn.Conv2d(3, 2, 3), torch.rand(4, 3, 16, 16)),
    "SpecAugment": (
        SpecAugment(policy="LD", return_mask=False, seed=0),
        nn.Conv1d(80, 2, 3),
        torch.randn(4, 80, 120),
    ),
    "TimeSpanMask": (
        TimeSpanMask(0.5, span=4, return_mask=False, seed=0),
        nn.Linear(8, 2),
        torch.randn(4, 40, 8),
    ),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_return_mask_false_composes_in_sequential_and_compose(name: str) -> None:
    masker, after, x = PIPELINES[name]
    out = masker(x)
    assert isinstance(out, torch.Tensor)
    masker.return_mask = True
    full = masker(x)
    masker.return_mask = False
    assert full[0].shape == out.shape  # the tensor the pair would carry
    assert isinstance(nn.Sequential(masker, after)(x), torch.Tensor)
    assert isinstance(Compose([masker, after])(x), torch.Tensor)
    masker.eval()
    assert masker(x) is x  # identity in eval, still tensor-only
    masker.train()
    assert "return_mask=False" in repr(masker)


def test_return_mask_false_through_dynamic_mask_keeps_the_monitor_fed() -> None:
    mon = MaskMonitor()
    dm = DynamicMask(PatchMask(0.0, return_mask=False, seed=0), 0.25, monitor=mon)
    x = torch.randn(2, 16, 4)
    out = nn.Sequential(dm, nn.Linear(4, 2))(x)
    assert out.shape == (2, 16, 2)
    assert mon.rows[0]["masked_fraction"] == 0.25  # the module saw the mask it did not return
    assert dm.masker.return_mask is False
    assert isinstance(dm(x), torch.Tensor)


def test_patch_mask_keeps_prefix_tokens_first_when_dropping() -> None:
    B, P, N, D = 3, 2, 20, 4  # [CLS] and one register token, then 20 patches
    x = torch.randn(B, P + N, D)
    pm = PatchMask(0.75, drop=True, num_prefix_tokens=P, seed=0)
    out, mask = pm(x)
    assert out.shape == (B, P + 5, D) and mask.shape == (B, P + N)
    assert not mask[:, :P].any() and mask.sum(1).tolist() == [15] * B
    assert torch.equal(out[:, :P], x[:, :P])  # the prefix, untouched and first
    ids_keep, _ = mw.keep_indices(mask)
    assert torch.equal(out, x.gather(1, ids_keep[..., None].expand(-1, -1, D)))
    # The patches' mask is mask_patches over the N patches, drawn from the module's generator.
    assert torch.equal(
        mask[:, P:], mw.mask_patches(B, N, 0.75, generator=torch.Generator().manual_seed(0))
    )
    assert "num_prefix_tokens=2" in repr(pm)


def test_patch_mask_fill_never_touches_prefix_tokens_and_scores_are_per_patch() -> None:
    x = torch.randn(2, 1 + 8, 4)
    scores = torch.arange(8.0).expand(2, 8)
    out, mask = PatchMask(0.25, num_prefix_tokens=1, value=9.0, seed=0)(x, scores=scores)
    assert mask.int().tolist() == [[0, 0, 0, 0, 0, 0, 0, 1, 1]] * 2  # the 2 best-scored patches
    assert torch.equal(out[:, 0], x[:, 0]) and (out[mask] == 9.0).all()
    with pytest.raises(ValueError, match=r"scores.*\(2, 8\).*\(2, 9\)"):
        PatchMask(0.25, num_prefix_tokens=1)(x, scores=torch.randn(2, 9))


def test_patch_mask_prefix_errors() -> None:
    with pytest.raises(ValueError, match="num_prefix_tokens.*-1"):
        PatchMask(0.5, num_prefix_tokens=-1)
    with pytest.raises(ValueError, match="4 tokens: num_prefix_tokens=4"):
        PatchMask(0.5, num_prefix_tokens=4)(torch.randn(2, 4, 3))


# --------------------------------------------------------------------------------------------
# SpecAugment's rate


def masked_share(rate: float, **kwargs: Any) -> float:
    """Mean masked share of the (F, T) cells of 40 x 100 clips over 400 calls of 4 clips (the
    count of masks is rounded per call: many calls make its mean exact)."""
    sa = SpecAugment(rate, seed=0, **kwargs)
    x = torch.zeros(4, 40, 100)
    return torch.stack([sa(x).mask.double().mean() for _ in range(400)]).mean().item()


def test_spec_augment_rate_zero_masks_nothing() -> None:
    out = SpecAugment(0.0, policy="LD", seed=0)(torch.randn(8, 80, 200))
    assert not out.freq_masked.any() and not out.time_masked.any()


def test_spec_augment_rate_moves_the_masked_share_monotonically() -> None:
    kw = dict(freq_masks=2, freq_width=8, time_masks=2, time_width=20)
    shares = [masked_share(r, **kw) for r in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)]
    assert shares[0] == 0.0
    # The standard error of a share is below 0.004; the steps are 0.03 or more.
    assert all(b > a + 0.015 for a, b in zip(shares, shares[1:])), shares


def test_spec_augment_rate_interpolates_between_whole_mask_counts() -> None:
    # Time masks only: at rate 0.25, 2 * 0.25 = 0.5 masks on average, half of one mask's share.
    kw = dict(freq_masks=0, freq_width=0, time_masks=2, time_width=20)
    one = masked_share(0.5, **kw)
    assert masked_share(0.25, **kw) == pytest.approx(one / 2, abs=0.006)
    # No jump where round(rate * time_masks) would jump from 0 to 1 mask (0 -> 0.1 of the cells).
    assert masked_share(0.24, **kw) == pytest.approx(masked_share(0.26, **kw), abs=0.012)


def test_spec_augment_whole_mask_counts_draw_nothing_extra() -> None:
    # rate * masks whole: exactly the functional with those counts (no rounding draw).
    x = torch.randn(3, 40, 60)
    got = SpecAugment(0.5, freq_masks=2, freq_width=6, time_masks=4, time_width=10, seed=3)(x)
    want = mw.spec_augment(
        x, freq_masks=1, freq_width=6, time_masks=2, time_width=10,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    assert torch.equal(got.spec, want.spec) and torch.equal(got.freq_masked, want.freq_masked)


def test_spec_augment_legacy_rate_scales_time_masks_only() -> None:
    x = torch.randn(4, 40, 100)
    out = SpecAugment(0.0, freq_masks=2, freq_width=10, rate_scales="time_masks", seed=0)(x)
    assert out.freq_masked.any() and not out.time_masked.any()
    with pytest.raises(ValueError, match="rate_scales.*'freq'"):
        SpecAugment(rate_scales="freq")
