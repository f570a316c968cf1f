"""Issue 12, point 3: the masked fraction ``DynamicMask`` reports to its monitor is over the
positions the masker may mask (not padding, not special tokens, not the frames past a row's
length, not prefix tokens), and every masker says which positions those are (``maskable``)."""

from __future__ import annotations

import pytest
import torch

from maskwise.monitor import MaskMonitor
from maskwise.nn import DynamicMask, PatchMask, SpecAugment, TimeSpanMask, TokenMask

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = (PAD, CLS, SEP, MASK)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(16, 40) ids: [CLS] + 9 words + [SEP], then padding (a quarter of the row is real)."""
    ids = torch.randint(4, 50, (16, 40), generator=torch.Generator().manual_seed(0))
    am = torch.zeros_like(ids)
    am[:, :11] = 1
    ids[:, 0], ids[:, 10] = CLS, SEP
    return ids.masked_fill(am == 0, PAD), am


def test_token_mask_fraction_is_over_real_non_special_tokens() -> None:
    ids, am = padded_batch()
    mon = MaskMonitor()
    dm = DynamicMask(TokenMask(0.4, mask_id=MASK, special_ids=SPECIAL, seed=0), 0.4, monitor=mon)
    _, mask = dm(ids, attention_mask=am)
    maskable = (am == 1) & ~torch.isin(ids, torch.tensor(SPECIAL))  # 9 of 40 per row
    fraction = mon.rows[0]["masked_fraction"]
    assert fraction == pytest.approx(mask.sum().item() / maskable.sum().item())
    assert abs(fraction - 0.4) < 0.12  # 144 maskable tokens; the fraction over all 640 is ~0.09
    assert torch.equal(dm.masker.maskable(ids, am), maskable)
    # The per-position histogram counts a position as seen only where it is maskable.
    assert mon.position_seen is not None
    assert mon.position_seen.tolist() == maskable.sum(0).double().tolist()


def test_token_mask_without_attention_mask_excludes_special_ids() -> None:
    ids, _ = padded_batch()  # padding is PAD, a special id
    mon = MaskMonitor()
    dm = DynamicMask(TokenMask(0.5, mask_id=MASK, special_ids=SPECIAL, seed=1), 0.5, monitor=mon)
    _, mask = dm(ids)
    maskable = ~torch.isin(ids, torch.tensor(SPECIAL))
    assert mon.rows[0]["masked_fraction"] == pytest.approx(
        mask.sum().item() / maskable.sum().item()
    )


def test_time_span_mask_fraction_is_over_real_frames() -> None:
    lengths = torch.tensor([200, 50, 50, 50])
    mon = MaskMonitor()
    dm = DynamicMask(TimeSpanMask(0.5, span=5, seed=0), 0.5, monitor=mon)
    _, mask = dm(torch.randn(4, 200, 8), lengths=lengths)
    real = torch.arange(200) < lengths[:, None]
    assert mon.rows[0]["masked_fraction"] == pytest.approx(mask.sum().item() / real.sum().item())


def test_spec_augment_fraction_is_over_real_cells() -> None:
    lengths = torch.tensor([120, 30, 30])
    mon = MaskMonitor()
    sa = SpecAugment(1.0, freq_masks=1, freq_width=5, time_masks=2, time_width=20, seed=0)
    out = DynamicMask(sa, 1.0, monitor=mon)(torch.randn(3, 40, 120), lengths=lengths)
    real = (torch.arange(120) < lengths[:, None]).unsqueeze(1).expand(3, 40, 120)
    want = (out.mask & real).sum().item() / real.sum().item()
    assert mon.rows[0]["masked_fraction"] == pytest.approx(want)


def test_patch_mask_fraction_leaves_prefix_tokens_out() -> None:
    mon = MaskMonitor()
    dm = DynamicMask(PatchMask(0.5, num_prefix_tokens=1, seed=0), 0.5, monitor=mon)
    dm(torch.randn(2, 17, 4))  # [CLS] + 16 patches: 8 masked per row
    assert mon.rows[0]["masked_fraction"] == 0.5


def test_maskers_without_padding_report_none() -> None:
    assert PatchMask(0.5).maskable(torch.randn(2, 9, 4)) is None
    assert TimeSpanMask(0.5).maskable(torch.randn(2, 9, 4)) is None


def test_dynamic_mask_feeds_the_per_class_counts_of_token_ids() -> None:
    ids, am = padded_batch()
    mon = MaskMonitor(num_classes=50)
    dm = DynamicMask(TokenMask(0.5, mask_id=MASK, special_ids=SPECIAL, seed=0), 0.5, monitor=mon)
    _, mask = dm(ids, attention_mask=am)
    maskable = dm.masker.maskable(ids, am)
    seen = torch.bincount(ids[maskable], minlength=50).double()
    assert torch.equal(mon.class_seen, seen)  # padding and specials are not seen
    assert torch.equal(mon.class_masked, torch.bincount(ids[mask], minlength=50).double())
