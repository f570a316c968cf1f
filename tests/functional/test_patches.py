"""Image maskers: MAE / guided patches, keep_indices, BEiT blocks, SimMIM units, patchify, erasing.

Statistical checks state the standard deviation they rely on; every tolerance is at least
4 sigma, and all generators are seeded, so the tests are deterministic.
"""

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskwise as mw
from maskwise.random import KeyedGenerator, hash_keys
from tests.reference import vision as ref


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def distinct_scores(B, N, seed):
    """Float scores without ties (a random permutation per row), so "the top k" is unambiguous."""
    g = seeded(seed)
    return torch.stack([torch.randperm(N, generator=g) for _ in range(B)]).float() / N


def ranks(scores):
    """Rank of each score in its row, 0 = highest."""
    return scores.argsort(1, descending=True).argsort(1)


def kwargs_id(value):
    """Readable test ids for parametrized keyword arguments."""
    return ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None


# --------------------------------------------------------------------------------------------
# mask_patches
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate",
    [0.0, 0.01, 0.3, 0.5, 0.75, 1.0, "per_row"],
)
def test_mask_patches_matches_reference(rate):
    B, N = 6, 49
    if rate == "per_row":
        rate = torch.tensor([0.0, 0.1, 0.5, 0.75, 0.9, 1.0])
    got = mw.mask_patches(B, N, rate, generator=seeded(3))
    want = ref.mask_patches(B, N, rate, generator=seeded(3))
    assert torch.equal(got, want)


@pytest.mark.parametrize("hard_fraction", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("per_row", [False, True])
def test_guided_mask_patches_matches_reference(hard_fraction, per_row):
    B, N = 6, 49
    rate = torch.tensor([0.0, 0.1, 0.5, 0.75, 0.9, 1.0]) if per_row else 0.6
    scores = distinct_scores(B, N, seed=4)
    kwargs = dict(scores=scores, hard_fraction=hard_fraction)
    got = mw.mask_patches(B, N, rate, **kwargs, generator=seeded(5))
    want = ref.mask_patches(B, N, rate, **kwargs, generator=seeded(5))
    assert torch.equal(got, want)


def test_mask_patches_literal_and_docstring_cases():
    s = torch.arange(8.0).expand(2, 8)
    assert mw.mask_patches(2, 8, 0.25, scores=s)[0].int().tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert mw.mask_patches(3, 5, 1.0).all() and mw.mask_patches(3, 5, 1.0).shape == (3, 5)
    assert not mw.mask_patches(3, 5, 0.0).any()
    assert mw.mask_patches(0, 5, 0.5).shape == (0, 5)
    m = mw.mask_patches(2, 5, 0.5)  # 2.5 -> 2: Python's round, half to even
    assert m.dtype == torch.bool and m.sum(1).tolist() == [2, 2]
    assert mw.mask_patches(2, 7, 0.5).sum(1).tolist() == [4, 4]  # 3.5 -> 4


@pytest.mark.parametrize("B, N", [(1, 1), (3, 7), (8, 196), (2, 1024)])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.4, 0.5, 0.75, 0.9, 1.0])
def test_mask_patches_exact_counts(B, N, rate):
    m = mw.mask_patches(B, N, rate, generator=seeded(0))
    assert m.shape == (B, N) and m.dtype == torch.bool
    assert m.sum(1).tolist() == [round(rate * N)] * B


def test_mask_patches_is_uniform_over_positions():
    # 20000 rows, 6 of 16 patches: each position's frequency 0.375, std 3.4e-3; tolerance 4.4 sigma.
    m = mw.mask_patches(20000, 16, 0.375, generator=seeded(1))
    assert torch.allclose(m.float().mean(0), torch.full((16,), 0.375), atol=0.015)
    # Pairs are as likely as for a draw without replacement: P(both) = 6/16 * 5/15.
    both = (m[:, 0] & m[:, 9]).float().mean().item()
    assert abs(both - 6 / 16 * 5 / 15) < 0.014  # std 3.3e-3


def test_per_row_tensor_rates():
    rate = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float32)
    m = mw.mask_patches(5, 12, rate, generator=seeded(2))
    assert m.sum(1).tolist() == [0, 3, 6, 9, 12]
    # A 0-d tensor applies to every row; float64 rates too.
    assert mw.mask_patches(3, 12, torch.tensor(0.5)).sum(1).tolist() == [6, 6, 6]
    assert mw.mask_patches(2, 12, torch.tensor([0.5, 0.25], dtype=torch.float64)).sum(
        1
    ).tolist() == [6, 3]


def test_tensor_rate_draws_the_same_mask_as_the_float_rate():
    # Both paths take the top-k of the same uniforms: a per-row rate equal everywhere changes
    # nothing.
    for scores, hf in (
        (None, 1.0),
        (distinct_scores(7, 30, seed=8), 0.5),
        (distinct_scores(7, 30, seed=8), 1.0),
    ):
        a = mw.mask_patches(7, 30, 0.4, scores=scores, hard_fraction=hf, generator=seeded(9))
        b = mw.mask_patches(
            7, 30, torch.full((7,), 0.4), scores=scores, hard_fraction=hf, generator=seeded(9)
        )
        assert torch.equal(a, b)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.75, torch.tensor([0.2, 0.5, 0.8, 1.0])])
def test_guided_hard_fraction_one_masks_exactly_the_top_scores(rate):
    B, N = 4, 40
    scores = distinct_scores(B, N, seed=10)
    m = mw.mask_patches(B, N, rate, scores=scores, hard_fraction=1.0, generator=seeded(0))
    k = torch.round(torch.as_tensor(rate, dtype=torch.float64).expand(B) * N).long()
    assert torch.equal(m, ranks(scores) < k[:, None])


def test_guided_negated_scores_mask_the_easiest():
    B, N = 4, 40
    scores = distinct_scores(B, N, seed=11)
    m = mw.mask_patches(B, N, 0.25, scores=-scores, hard_fraction=1.0, generator=seeded(0))
    lowest = scores.argsort(1).argsort(1) < 10
    assert torch.equal(m, lowest)


def test_guided_half_hard_fraction_top_half_then_uniform_rest():
    # k = 8 of 16, k_hard = 4: the 4 best-scored patches always, then 4 of the other 12 uniformly,
    # i.e. each of them with probability 1/3 whatever its score. Scores are a fresh random
    # permutation per row, so positions and ranks are unrelated.
    B, N = 6000, 16
    scores = distinct_scores(B, N, seed=12)
    m = mw.mask_patches(B, N, 0.5, scores=scores, hard_fraction=0.5, generator=seeded(13))
    assert (m.sum(1) == 8).all()
    r = ranks(scores)
    assert m[r < 4].all()
    # Frequency by rank among the 12 others: 1/3 each, std sqrt(2/9 / 6000) = 6.1e-3.
    by_rank = torch.stack([m[r == j].float().mean() for j in range(4, 16)])
    assert torch.allclose(by_rank, torch.full((12,), 1 / 3), atol=0.025), by_rank
    # The random part does not lean to the better-scored half of the others (ranks 4..9 vs 10..15):
    # each mean has std 3.1e-3 (difference 4.3e-3); tolerance 4.6 sigma.
    better, worse = by_rank[:6].mean().item(), by_rank[6:].mean().item()
    assert abs(better - worse) < 0.02


def test_guided_hard_fraction_zero_ignores_scores():
    scores = distinct_scores(5, 30, seed=14)
    a = mw.mask_patches(5, 30, 0.5, scores=scores, hard_fraction=0.0, generator=seeded(15))
    b = mw.mask_patches(5, 30, 0.5, generator=seeded(15))
    assert torch.equal(a, b)


def test_guided_mask_device_follows_scores():
    scores = distinct_scores(2, 10, seed=16)
    assert mw.mask_patches(2, 10, 0.5, scores=scores).device == scores.device
    assert mw.mask_patches(2, 10, 0.5, device="cpu").device.type == "cpu"


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(0, 6),
    N=st.integers(1, 300),
    rate=st.floats(0, 1),
    hard=st.floats(0, 1),
    guided=st.booleans(),
    per_row=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_property_mask_patches_exact_counts(B, N, rate, hard, guided, per_row, seed):
    scores = torch.rand(B, N, generator=seeded(seed)) if guided else None
    r = torch.full((B,), rate, dtype=torch.float64) if per_row else rate
    m = mw.mask_patches(B, N, r, scores=scores, hard_fraction=hard, generator=seeded(seed))
    k = round(rate * N)
    assert m.shape == (B, N) and m.sum(1).tolist() == [k] * B
    if guided and B:
        # The top round(hard * k) scores are always inside the mask.
        assert m[ranks(scores) < round(hard * k)].all()


# --------------------------------------------------------------------------------------------
# keep_indices
# --------------------------------------------------------------------------------------------


def test_keep_indices_literal():
    m = torch.tensor([[True, False, False, True], [False, True, False, True]])
    ids_keep, ids_restore = mw.keep_indices(m)
    assert ids_keep.tolist() == [[1, 2], [0, 2]]
    assert ids_restore.tolist() == [[2, 0, 1, 3], [0, 2, 1, 3]]
    assert ids_keep.dtype == ids_restore.dtype == torch.long


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.75, 1.0])
def test_keep_indices_matches_reference(rate):
    m = mw.mask_patches(5, 23, rate, generator=seeded(20))
    ids_keep, ids_restore = mw.keep_indices(m)
    want_keep, want_restore = ref.keep_indices(m)
    assert ids_keep.shape == (5, 23 - round(rate * 23))
    assert torch.equal(ids_keep, want_keep) and torch.equal(ids_restore, want_restore)


def test_keep_indices_mae_decoder_round_trip():
    B, N, D = 4, 49, 6
    x = torch.randn(B, N, D, generator=seeded(21))
    m = mw.mask_patches(B, N, 0.75, generator=seeded(22))
    ids_keep, ids_restore = mw.keep_indices(m)
    # Encoder input: the visible patches, in patch order.
    x_vis = x.gather(1, ids_keep[..., None].expand(-1, -1, D))  # (B, N_keep, D)
    assert torch.equal(x_vis, x[~m].view(B, -1, D))
    assert (ids_keep.diff(dim=1) > 0).all()
    # Decoder: append mask tokens after the visible patches, then un-shuffle.
    token = torch.full((D,), 99.0)
    y = torch.cat([x_vis, token.expand(B, N - x_vis.shape[1], D)], dim=1)  # (B, N, D)
    restored = y.gather(1, ids_restore[..., None].expand(-1, -1, D))
    assert torch.equal(restored, torch.where(m[..., None], token, x))
    # ids_restore is a permutation per row.
    assert torch.equal(ids_restore.sort(1).values, torch.arange(N).expand(B, N))


def test_keep_indices_unequal_counts_is_a_clear_error():
    m = torch.tensor([[True, False, False], [True, True, False]])
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        mw.keep_indices(m)


@pytest.mark.parametrize(
    "masked, err, match",
    [
        (torch.zeros(2, 4), TypeError, "bool"),
        (torch.zeros(2, 4, dtype=torch.long), TypeError, "int64"),
        (torch.zeros(4, dtype=torch.bool), ValueError, r"\(4,\)"),
        (torch.zeros(2, 2, 2, dtype=torch.bool), ValueError, r"\(2, 2, 2\)"),
        ([[True, False]], TypeError, "list"),
    ],
)
def test_keep_indices_bad_input(masked, err, match):
    with pytest.raises(err, match=match):
        mw.keep_indices(masked)


def test_keep_indices_edge_rows():
    all_masked = torch.ones(3, 5, dtype=torch.bool)
    keep, restore = mw.keep_indices(all_masked)
    assert keep.shape == (3, 0) and torch.equal(restore, torch.arange(5).expand(3, 5))
    none = torch.zeros(3, 5, dtype=torch.bool)
    keep, restore = mw.keep_indices(none)
    assert torch.equal(keep, torch.arange(5).expand(3, 5)) and torch.equal(restore, keep)
    keep, restore = mw.keep_indices(torch.zeros(0, 5, dtype=torch.bool))
    assert keep.shape[0] == 0 and restore.shape == (0, 5)


# --------------------------------------------------------------------------------------------
# mask_blocks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grid, num_masked, kwargs",
    [
        (14, 75, {}),
        ((7, 11), 30, {}),
        ((11, 7), 30, dict(min_block=4, aspect=(0.5, 2.0))),
        (6, 5, {}),  # num_masked smaller than min_block
        (4, 16, {}),  # the whole grid
        (8, 20, dict(max_block=6, min_block=2)),
        (10, 40, dict(rounds=0)),  # exact fill only
        (10, 40, dict(rounds=30)),
        (5, 0, {}),
    ],
)
def test_mask_blocks_matches_reference(grid, num_masked, kwargs):
    got = mw.mask_blocks(12, grid, num_masked, **kwargs, generator=seeded(30))
    want = ref.mask_blocks(12, grid, num_masked, **kwargs, generator=seeded(30))
    assert torch.equal(got, want)


@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize(
    "grid, num_masked",
    [
        (14, 0),
        (14, 1),
        (14, 15),
        (14, 75),
        (14, 98),
        (14, 196),
        ((3, 17), 10),
        ((17, 3), 51),
        (1, 1),
        ((1, 9), 4),
    ],
)
@pytest.mark.parametrize("min_block", [1, 16])
def test_mask_blocks_exact_counts(B, grid, num_masked, min_block):
    m = mw.mask_blocks(B, grid, num_masked, min_block=min_block, generator=seeded(31))
    H, W = (grid, grid) if isinstance(grid, int) else grid
    assert m.shape == (B, H, W) and m.dtype == torch.bool
    assert m.sum((1, 2)).tolist() == [num_masked] * B


@pytest.mark.parametrize(
    "grid, num_masked, aspect, shape",
    [
        (14, 16, (1.0, 1.0), (4, 4)),
        (14, 1, (1.0, 1.0), (1, 1)),
        (14, 9, (1.0, 1.0), (3, 3)),
        ((9, 12), 25, (1.0, 1.0), (5, 5)),
        (14, 18, (2.0, 2.0), (6, 3)),  # aspect is height / width
        (14, 18, (0.5, 0.5), (3, 6)),
    ],
)
def test_mask_blocks_one_block_is_one_rectangle(grid, num_masked, aspect, shape):
    # With min_block = num_masked and a fixed aspect every rectangle has exactly num_masked cells,
    # so the first one is accepted and the mask is that single rectangle.
    m = mw.mask_blocks(
        50, grid, num_masked, min_block=num_masked, aspect=aspect, rounds=20, generator=seeded(32)
    )
    for b in range(50):
        comps = ref.components(m[b])
        assert len(comps) == 1
        top, left, h, w = ref.bounding_box(m[b])
        assert (h, w) == shape
        assert m[b, top : top + h, left : left + w].all()
    # The rectangle lands anywhere it fits: both the top-left and the bottom-right corners are used.
    tops = {ref.bounding_box(m[b])[:2] for b in range(50)}
    assert len(tops) > 10


def test_mask_blocks_typical_setting_is_mostly_rectangles():
    # 14x14, 75 cells, 10 rounds (BEiT's ViT-B setting): the reference reproduces the draws and says
    # how many cells the exact fill had to add; it is equal to maskwise's mask, checked here too.
    B = 300
    m, filled = ref.mask_blocks(B, 14, 75, generator=seeded(33), return_filled=True)
    assert torch.equal(m, mw.mask_blocks(B, 14, 75, generator=seeded(33)))
    filled = torch.tensor(filled)
    # Measured: about 7 % of samples need the fill, adding 0.15 % of the cells.
    assert (filled > 0).float().mean().item() < 0.15
    assert filled.sum().item() / (75 * B) < 0.01
    n_comps = torch.tensor([len(ref.components(m[b])) for b in range(B)]).float()
    assert n_comps.mean().item() < 3.0  # measured 2.1; uniform scatter would give dozens
    assert n_comps.max().item() <= 8


def _beit_masking_generator(H, W, num_masking_patches, rng, min_num=16, aspect=(0.3, 1 / 0.3)):
    """BEiT's original MaskingGenerator (unilm/beit/masking_generator.py), with Python's random."""
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    mask = [[0] * W for _ in range(H)]

    def one_block(max_mask_patches):
        delta = 0
        for _ in range(10):
            target_area = rng.uniform(min_num, max_mask_patches)
            aspect_ratio = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < W and h < H:
                top, left = rng.randint(0, H - h), rng.randint(0, W - w)
                already = sum(
                    mask[i][j] for i in range(top, top + h) for j in range(left, left + w)
                )
                if 0 < h * w - already <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i][j] == 0:
                                mask[i][j] = 1
                                delta += 1
                if delta > 0:
                    break
        return delta

    count = 0
    while count < num_masking_patches:
        delta = one_block(num_masking_patches - count)
        if delta == 0:
            break
        count += delta
    return torch.tensor(mask, dtype=torch.bool)


def test_mask_blocks_statistics_match_beit():
    # Same block-size and position distribution as BEiT's generator: compare the size of the
    # largest 4-connected block (measured: BEiT 68.0, maskwise 66.7, std 10.9 per sample, so 1.0
    # for a difference of two means over 250 samples) and how often the centre and the corners are
    # masked. BEiT misses the count in about 31 % of samples; maskwise never does.
    B = 250
    rng = random.Random(0)
    beit = torch.stack([_beit_masking_generator(14, 14, 75, rng) for _ in range(B)])
    ours = mw.mask_blocks(B, 14, 75, generator=seeded(34))
    assert (ours.sum((1, 2)) == 75).all()
    beit_miss = (beit.sum((1, 2)) < 75).float().mean().item()
    assert 0.2 < beit_miss < 0.42  # the behaviour the docstring describes (std 0.03)

    def largest(m):
        return (
            torch.tensor([max(len(c) for c in ref.components(m[b])) for b in range(B)])
            .float()
            .mean()
            .item()
        )

    assert abs(largest(ours) - largest(beit)) < 5.0
    for region in ((slice(5, 9), slice(5, 9)), (slice(0, 2), slice(0, 2))):
        a, b = (
            ours[:, region[0], region[1]].float().mean().item(),
            beit[:, region[0], region[1]].float().mean().item(),
        )
        assert abs(a - b) < 0.08, (region, a, b)  # measured differences 0.02; std ~0.02
    # The centre is masked far more often than the corners, as in BEiT.
    assert ours[:, 5:9, 5:9].float().mean() > 4 * ours[:, :2, :2].float().mean()


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(0, 4),
    H=st.integers(1, 16),
    W=st.integers(1, 16),
    frac=st.floats(0, 1),
    min_block=st.integers(1, 30),
    rounds=st.integers(0, 12),
    lo=st.floats(0.2, 1.0),
    seed=st.integers(0, 2**31),
)
def test_property_mask_blocks_exact_counts(B, H, W, frac, min_block, rounds, lo, seed):
    num_masked = round(frac * H * W)
    m = mw.mask_blocks(
        B,
        (H, W),
        num_masked,
        min_block=min_block,
        rounds=rounds,
        aspect=(lo, 1 / lo),
        generator=seeded(seed),
    )
    assert m.shape == (B, H, W)
    assert m.sum((1, 2)).tolist() == [num_masked] * B


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 4),
    H=st.integers(2, 14),
    W=st.integers(2, 14),
    frac=st.floats(0, 1),
    rounds=st.integers(1, 12),
    seed=st.integers(0, 2**31),
)
def test_property_mask_blocks_rectangles_never_exceed_the_budget(B, H, W, frac, rounds, seed):
    # Before the exact fill the rectangles never hold more than num_masked cells (the fill adds
    # cells, never removes them), checked on the reference, which is equal to maskwise.
    num_masked = round(frac * H * W)
    m, filled = ref.mask_blocks(
        B, (H, W), num_masked, rounds=rounds, generator=seeded(seed), return_filled=True
    )
    assert all(0 <= f <= num_masked for f in filled)
    assert torch.equal(
        m, mw.mask_blocks(B, (H, W), num_masked, rounds=rounds, generator=seeded(seed))
    )


# --------------------------------------------------------------------------------------------
# mask_coarse
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid, unit", [(4, 2), ((7, 10), 3), (8, 8), ((5, 3), 1), (6, 4)])
@pytest.mark.parametrize("rate", [0.0, 0.4, 0.5, 1.0])
def test_mask_coarse_matches_reference_and_unit_structure(grid, unit, rate):
    B = 5
    m = mw.mask_coarse(B, grid, rate, unit=unit, generator=seeded(40))
    assert torch.equal(m, ref.mask_coarse(B, grid, rate, unit=unit, generator=seeded(40)))
    H, W = (grid, grid) if isinstance(grid, int) else grid
    assert m.shape == (B, H, W) and m.dtype == torch.bool
    hu, wu = -(-H // unit), -(-W // unit)
    for b in range(B):
        n_units = 0
        for i in range(hu):
            for j in range(wu):
                cell = m[b, i * unit : (i + 1) * unit, j * unit : (j + 1) * unit]
                assert cell.all() or not cell.any()  # a unit is masked as a whole
                n_units += bool(cell.all())
        assert n_units == round(rate * hu * wu)


def test_mask_coarse_literal_and_per_row_rates():
    m = mw.mask_coarse(1, 4, 0.5, unit=2, generator=seeded(0))
    assert int(m.sum()) == 8 and m[0, ::2, ::2].tolist() == m[0, 1::2, 1::2].tolist()
    # (5, 7) with unit 3: 2 x 3 units of 3x3, 3x1, 2x3, 2x1 cells (cropped at the edges).
    m = mw.mask_coarse(2, (5, 7), torch.tensor([0.0, 1.0]), unit=3)
    assert m[0].sum() == 0 and m[1].all()


# --------------------------------------------------------------------------------------------
# patchify, unpatchify, patches_to_pixels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, p", [((2, 3, 8, 8), 4), ((1, 1, 6, 9), 3), ((2, 2, 4, 6), 2), ((1, 3, 5, 5), 1)]
)
def test_patchify_matches_reference_and_round_trips(shape, p):
    x = torch.randn(shape, generator=seeded(50))
    patches = mw.patchify(x, p)
    B, C, H, W = shape
    assert patches.shape == (B, (H // p) * (W // p), p * p * C)
    assert torch.equal(patches, ref.patchify(x, p))
    back = mw.unpatchify(patches, p, (H // p, W // p))
    assert torch.equal(back, x)
    assert torch.equal(ref.unpatchify(patches, p, (H // p, W // p)), x)


def test_patchify_is_mae_order():
    # MAE: x.reshape(B, C, h, p, w, p) -> einsum('nchpwq->nhwpqc') -> (B, h * w, p * p * C).
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    p = 2
    mae = torch.einsum("nchpwq->nhwpqc", x.reshape(2, 3, 2, p, 3, p)).reshape(2, 6, p * p * 3)
    assert torch.equal(mw.patchify(x, p), mae)
    # Patch n = 1 is row 0, column 1; its first C entries are the channels of pixel (0, p).
    assert mw.patchify(x, p)[0, 1, :3].tolist() == x[0, :, 0, p].tolist()
    # unpatchify takes a non-square grid.
    assert torch.equal(mw.unpatchify(mae, p, (2, 3)), x)


def test_patches_to_pixels():
    m = mw.mask_patches(3, 12, 0.5, generator=seeded(51))  # grid (3, 4)
    pix = mw.patches_to_pixels(m, (3, 4), 5)
    assert pix.shape == (3, 15, 20) and pix.dtype == torch.bool
    for b in range(3):
        for i in range(15):
            for j in range(20):
                assert pix[b, i, j] == m[b, (i // 5) * 4 + j // 5]
    assert torch.equal(mw.patches_to_pixels(m.view(3, 3, 4), (3, 4), 5), pix)
    # Masking the pixels of an image zeroes exactly the masked patches in patch order.
    images = torch.rand(3, 2, 15, 20, generator=seeded(52)) + 1.0
    zeroed = images.masked_fill(pix[:, None], 0.0)
    patch_zero = (mw.patchify(zeroed, 5) == 0).all(-1)
    assert torch.equal(patch_zero, m)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: mw.patchify(torch.zeros(2, 3, 10, 12), 4), ValueError, r"10x12.*4"),
        (lambda: mw.patchify(torch.zeros(3, 8, 8), 4), ValueError, r"\(3, 8, 8\)"),
        (lambda: mw.patchify(torch.zeros(1, 3, 8, 8), 0), ValueError, "patch_size.*0"),
        (lambda: mw.patchify(torch.zeros(1, 3, 8, 8), 2.0), ValueError, "2.0"),
        (lambda: mw.unpatchify(torch.zeros(2, 5, 12), 2, 2), ValueError, r"\(2, 5, 12\)"),
        (lambda: mw.unpatchify(torch.zeros(2, 4, 13), 2, 2), ValueError, r"\(2, 4, 13\)"),
        (lambda: mw.unpatchify(torch.zeros(2, 4, 12), 2, (2, 2, 1)), ValueError, r"\(2, 2, 1\)"),
        (lambda: mw.unpatchify(torch.zeros(2, 4), 2, 2), ValueError, r"\(2, 4\)"),
        (
            lambda: mw.patches_to_pixels(torch.zeros(2, 16, dtype=torch.bool), 3, 2),
            ValueError,
            r"16|\(2, 16\)",
        ),
        (
            lambda: mw.patches_to_pixels(torch.zeros(2, 9, dtype=torch.bool), 3, 0),
            ValueError,
            "patch_size",
        ),
    ],
    ids=[
        "patchify-not-divisible",
        "patchify-3d",
        "patchify-p0",
        "patchify-float-p",
        "unpatchify-wrong-N",
        "unpatchify-wrong-D",
        "unpatchify-grid-length",
        "unpatchify-2d",
        "patches_to_pixels-wrong-N",
        "patches_to_pixels-p0",
    ],
)
def test_patch_helpers_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_patches_to_pixels_rejects_a_non_bool_mask():
    with pytest.raises(TypeError, match="float32"):
        mw.patches_to_pixels(torch.zeros(2, 9), 3, 2)


# --------------------------------------------------------------------------------------------
# erase
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((16, 3, 20, 17), dict(p=0.7)),
        ((16, 20, 17), dict(p=0.7, value=2.5)),
        ((16, 3, 12, 12), dict(p=1.0, value=[1.0, 2.0, 3.0])),
        ((16, 2, 12, 30), dict(p=1.0, value="random")),
        ((16, 1, 10, 10), dict(p=1.0, scale=(0.5, 0.9), ratio=(0.2, 5.0), attempts=3)),
        ((16, 1, 10, 10), dict(p=0.0)),
    ],
)
def test_erase_matches_reference(shape, kwargs):
    x = torch.randn(shape, generator=seeded(60))
    out, m = mw.erase(x, **kwargs, generator=seeded(61))
    want_out, want_m, _ = ref.erase(x, **kwargs, generator=seeded(61))
    assert torch.equal(m, want_m)
    assert torch.equal(out, want_out)


def test_erase_rectangles_respect_scale_and_ratio():
    B, H, W = 2000, 32, 24
    scale, ratio = (0.05, 0.3), (0.5, 2.0)
    x = torch.ones(B, 3, H, W)
    out, m = mw.erase(x, p=1.0, scale=scale, ratio=ratio, generator=seeded(62))
    _, _, boxes = ref.erase(x, p=1.0, scale=scale, ratio=ratio, generator=seeded(62))
    assert m.flatten(1).any(1).all()  # every sample erased (p = 1 and the shapes fit)
    for b in range(B):
        top, left, h, w = ref.bounding_box(m[b])
        assert (top, left, h, w) == boxes[b]
        assert int(m[b].sum()) == h * w  # one filled axis-aligned rectangle
        assert h < H and w < W
        # h = round(sqrt(area * r)), w = round(sqrt(area / r)): undo the rounding by half a cell.
        assert (h - 0.5) * (w - 0.5) <= scale[1] * H * W and (h + 0.5) * (w + 0.5) >= scale[
            0
        ] * H * W
        assert (h - 0.5) / (w + 0.5) <= ratio[1] and (h + 0.5) / (w - 0.5) >= ratio[0]
    area = m.flatten(1).float().mean(1)
    # Area fractions spread over the whole range, aspect ratios on both sides of 1.
    assert area.min() < 0.08 and area.max() > 0.27
    hw = torch.tensor([boxes[b][2] / boxes[b][3] for b in range(B)])
    assert (hw > 1.4).any() and (hw < 0.7).any()
    # Positions: uniform among those where the rectangle fits, so it reaches every edge.
    assert m[:, 0].any() and m[:, -1].any() and m[:, :, 0].any() and m[:, :, -1].any()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_erase_share_of_erased_samples_is_p(p):
    # 4000 samples: std of the share sqrt(p (1 - p) / 4000) <= 7.9e-3; tolerance 0.035 (4.4 sigma).
    # With the default scale and ratio on 32x32 a shape fits in 10 attempts but with vanishing odds.
    x = torch.zeros(4000, 32, 32)
    _, m = mw.erase(x, p=p, generator=seeded(63))
    assert abs(m.flatten(1).any(1).float().mean().item() - p) < 0.035


def test_erase_values_and_channels():
    x = torch.randn(8, 3, 16, 16, generator=seeded(64))
    out, m = mw.erase(x, p=1.0, value=[1.0, 2.0, 3.0], generator=seeded(65))
    for c in range(3):
        assert (out[:, c][m] == c + 1.0).all()
        assert torch.equal(out[:, c][~m], x[:, c][~m])
    out, m = mw.erase(x, p=1.0, value=-7.0, generator=seeded(65))
    assert (out.permute(1, 0, 2, 3)[:, m] == -7.0).all()
    # value="random": standard normal noise, independent per channel and pixel.
    x0 = torch.zeros(64, 3, 32, 32)
    out, m = mw.erase(x0, p=1.0, value="random", generator=seeded(66))
    noise = out.permute(1, 0, 2, 3)[:, m]
    assert noise.numel() > 20000
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1.0) < 0.05
    assert not torch.equal(noise[0], noise[1])
    assert (out.permute(1, 0, 2, 3)[:, ~m] == 0).all()
    # An integer image keeps its dtype.
    xi = torch.full((4, 3, 16, 16), 200, dtype=torch.uint8)
    out, m = mw.erase(xi, p=1.0, value=0, generator=seeded(67))
    assert out.dtype == torch.uint8 and (out.permute(1, 0, 2, 3)[:, m] == 0).all()


def test_erase_never_modifies_input_and_handles_3d():
    x = torch.randn(6, 3, 16, 16, generator=seeded(68))
    before = x.clone()
    out, m = mw.erase(x, p=1.0, value="random", generator=seeded(69))
    assert torch.equal(x, before) and out.data_ptr() != x.data_ptr()
    x3 = torch.randn(6, 16, 16, generator=seeded(68))
    before3 = x3.clone()
    out3, m3 = mw.erase(x3, p=1.0, value=5.0, generator=seeded(69))
    assert torch.equal(x3, before3)
    assert out3.shape == (6, 16, 16) and m3.shape == (6, 16, 16)
    assert torch.equal(out3 == 5.0, m3)
    # Same generator, same rectangle whether or not there is a channel dimension.
    assert torch.equal(m3, m)
    out0, m0 = mw.erase(torch.zeros(0, 3, 8, 8), p=1.0)
    assert out0.shape == (0, 3, 8, 8) and m0.shape == (0, 8, 8)


def test_erase_shapes_that_never_fit_leave_the_sample_alone():
    # A rectangle must be smaller than the image on both sides (torchvision's rule): scale (1, 1)
    # with ratio 1 never fits.
    x = torch.randn(8, 3, 10, 10)
    out, m = mw.erase(x, p=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert not m.any() and torch.equal(out, x)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(p=1.5), ValueError, "1.5"),
        (dict(p=-0.1), ValueError, "-0.1"),
        (dict(p="half"), TypeError, "half"),
        (dict(scale=(0.5, 0.2)), ValueError, r"\(0.5, 0.2\)"),
        (dict(scale=(-0.1, 0.2)), ValueError, r"-0.1"),
        (dict(scale=(0.1, 1.5)), ValueError, r"1.5"),
        (dict(ratio=(0.0, 1.0)), ValueError, r"\(0.0, 1.0\)"),
        (dict(ratio=(3.0, 1.0)), ValueError, r"\(3.0, 1.0\)"),
        (dict(value="noise"), ValueError, "noise"),
        (dict(value=[1.0, 2.0]), ValueError, "C = 2"),
        (dict(value=torch.zeros(3, 1)), ValueError, r"\(3, 1\)"),
        (dict(attempts=0), ValueError, "attempts"),
    ],
    ids=kwargs_id,
)
def test_erase_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        mw.erase(torch.zeros(2, 3, 8, 8), **kwargs)


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(8, 8), r"\(8, 8\)"),
        (torch.zeros(1, 2, 3, 8, 8), r"\(1, 2, 3, 8, 8\)"),
        (torch.zeros(2, 8, 8), None),  # per-channel values need a channel dimension
    ],
)
def test_erase_bad_shapes(images, match):
    with pytest.raises(ValueError, match=match):
        mw.erase(images, value=[1.0, 2.0, 3.0] if match is None else 0.0)


# --------------------------------------------------------------------------------------------
# Determinism, global RNG, KeyedGenerator row independence
# --------------------------------------------------------------------------------------------

MASKERS = {
    "mask_patches": lambda g: mw.mask_patches(4, 49, 0.6, generator=g),
    "guided": lambda g: mw.mask_patches(
        4, 49, 0.6, scores=distinct_scores(4, 49, 0), hard_fraction=0.5, generator=g
    ),
    "mask_blocks": lambda g: mw.mask_blocks(4, 14, 75, generator=g),
    "mask_coarse": lambda g: mw.mask_coarse(4, (7, 9), 0.5, unit=2, generator=g),
    "erase": lambda g: mw.erase(torch.zeros(4, 3, 16, 16), p=1.0, value="random", generator=g),
}


def _flat(result):
    return (
        torch.cat([t.flatten().float() for t in result])
        if isinstance(result, tuple)
        else result.flatten().float()
    )


@pytest.mark.parametrize("name", sorted(MASKERS))
def test_determinism_and_global_rng_untouched(name):
    fn = MASKERS[name]
    state = torch.get_rng_state()
    a, b = _flat(fn(seeded(70))), _flat(fn(seeded(70)))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, _flat(fn(seeded(71))))
    # Without a generator the global one is used (and reproducible under torch.manual_seed).
    torch.manual_seed(5)
    c = _flat(fn(None))
    torch.manual_seed(5)
    assert torch.equal(c, _flat(fn(None)))


def test_keyed_generator_row_independence():
    keys = hash_keys(0, 1, torch.tensor([11, 12, 13]))
    kg = lambda k: KeyedGenerator(k)  # noqa: E731
    # mask_patches, plain and guided: row 12 alone draws the mask it draws next to 11 and 13.
    full = mw.mask_patches(3, 40, 0.5, generator=kg(keys))
    alone = mw.mask_patches(1, 40, 0.5, generator=kg(keys[1:2]))
    assert torch.equal(full[1], alone[0])
    scores = distinct_scores(3, 40, seed=72)
    full = mw.mask_patches(3, 40, 0.5, scores=scores, hard_fraction=0.5, generator=kg(keys))
    alone = mw.mask_patches(
        1, 40, 0.5, scores=scores[1:2], hard_fraction=0.5, generator=kg(keys[1:2])
    )
    assert torch.equal(full[1], alone[0])
    # Changing another row's scores or rate does not change row 12.
    other = scores.clone()
    other[0] = other[0].flip(0)
    moved = mw.mask_patches(
        3, 40, torch.tensor([0.9, 0.5, 0.1]), scores=other, hard_fraction=0.5, generator=kg(keys)
    )
    assert torch.equal(moved[1], full[1])
    # erase, with a noise fill drawn from the keyed source too.
    x = torch.randn(3, 3, 20, 20, generator=seeded(73))
    out, m = mw.erase(x, p=1.0, value="random", generator=kg(keys))
    out1, m1 = mw.erase(x[1:2], p=1.0, value="random", generator=kg(keys[1:2]))
    assert torch.equal(m[1], m1[0]) and torch.equal(out[1], out1[0])
    assert m[1].any() and not torch.equal(m[0], m[1])
    noise = out[1].permute(1, 2, 0)[m[1]]
    assert torch.isfinite(noise).all() and (noise != x[1].permute(1, 2, 0)[m[1]]).all()
    # mask_blocks and mask_coarse
    full = mw.mask_blocks(3, 14, 75, generator=kg(keys))
    assert torch.equal(full[1], mw.mask_blocks(1, 14, 75, generator=kg(keys[1:2]))[0])
    full = mw.mask_coarse(3, 14, 0.5, unit=2, generator=kg(keys))
    assert torch.equal(full[1], mw.mask_coarse(1, 14, 0.5, unit=2, generator=kg(keys[1:2]))[0])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(rate=1.5), ValueError, "1.5"),
        (dict(rate=-0.1), ValueError, "-0.1"),
        (dict(rate=float("nan")), ValueError, "nan"),
        (dict(rate="0.5"), TypeError, "0.5"),
        (dict(rate=torch.tensor([0.1, 1.2])), ValueError, "1.2"),
        (dict(rate=torch.tensor([0.1, 0.2, 0.3])), ValueError, r"\(3,\)"),
        (dict(rate=torch.tensor([1, 0])), TypeError, "int64"),
        (dict(batch=-1), ValueError, "-1"),
        (dict(num_patches=0), ValueError, "num_patches.*0"),
        (dict(num_patches=-3), ValueError, "-3"),
        (dict(hard_fraction=1.5), ValueError, "1.5"),
        (dict(scores=torch.zeros(2, 7)), ValueError, r"\(2, 7\)"),
        (dict(scores=torch.zeros(2, 8, 1)), ValueError, r"\(2, 8, 1\)"),
        (dict(scores=torch.zeros(2, 8, dtype=torch.long)), TypeError, "int64"),
        (dict(scores=[[0.0] * 8] * 2), TypeError, "list"),
        (dict(generator=0), TypeError, "int"),
    ],
    ids=kwargs_id,
)
def test_mask_patches_bad_input(kwargs, err, match):
    args = dict(batch=2, num_patches=8, rate=0.5)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        mw.mask_patches(args.pop("batch"), args.pop("num_patches"), args.pop("rate"), **args)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(num_masked=197), ValueError, "197"),
        (dict(num_masked=-1), ValueError, "-1"),
        (dict(num_masked=5.0), ValueError, "5.0"),
        (dict(num_masked=True), ValueError, "True"),
        (dict(grid=(14, 14, 3)), ValueError, r"\(14, 14, 3\)"),
        (dict(grid=(14,)), ValueError, r"\(14,\)"),
        (dict(grid=0), ValueError, "0"),
        (dict(grid=(14, -2)), ValueError, "-2"),
        (dict(min_block=0), ValueError, "min_block.*0"),
        (dict(max_block=0), ValueError, "max_block.*0"),
        (dict(aspect=(0.0, 2.0)), ValueError, r"\(0.0, 2.0\)"),
        (dict(aspect=(3.0, 1.0)), ValueError, r"\(3.0, 1.0\)"),
        (dict(batch=-2), ValueError, "-2"),
    ],
    ids=kwargs_id,
)
def test_mask_blocks_bad_input(kwargs, err, match):
    args = dict(batch=2, grid=14, num_masked=75)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        mw.mask_blocks(args.pop("batch"), args.pop("grid"), args.pop("num_masked"), **args)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(rate=1.5), ValueError, "1.5"),
        (dict(unit=0), ValueError, "unit.*0"),
        (dict(grid=(4, 4, 4)), ValueError, r"\(4, 4, 4\)"),
        (dict(batch=-1), ValueError, "-1"),
    ],
    ids=kwargs_id,
)
def test_mask_coarse_bad_input(kwargs, err, match):
    args = dict(batch=2, grid=8, rate=0.5)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        mw.mask_coarse(args.pop("batch"), args.pop("grid"), args.pop("rate"), **args)


@pytest.mark.parametrize(
    "call",
    [
        lambda: mw.mask_patches(2.5, 8, 0.5),
        lambda: mw.mask_blocks(2.5, 14, 75),
        lambda: mw.mask_coarse(2.5, 8, 0.5),
        lambda: mw.mask_blocks(2, 14.0, 75),
    ],
    ids=["mask_patches-batch", "mask_blocks-batch", "mask_coarse-batch", "mask_blocks-grid"],
)
def test_non_integer_sizes_are_rejected_not_truncated(call):
    # A float batch or grid is a caller's mistake; int(2.5) would silently mask 2 rows.
    with pytest.raises((TypeError, ValueError), match=r"2\.5|14\.0"):
        call()


def test_erase_inplace_writes_into_the_input() -> None:
    images = torch.rand(4, 3, 16, 16)
    expected, m = mw.erase(images.clone(), p=1.0, generator=torch.Generator().manual_seed(0))
    out, m2 = mw.erase(images, p=1.0, inplace=True, generator=torch.Generator().manual_seed(0))
    assert out is images and torch.equal(images, expected) and torch.equal(m, m2)


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((16, 3, 20, 17), dict(p=0.7)),
        ((16, 20, 17), dict(p=0.7, value=2.5)),
        ((16, 3, 12, 12), dict(p=1.0, value=[1.0, 2.0, 3.0])),
        ((16, 3, 12, 12), dict(p=1.0, value=[1.0, 2.0, 3.0], inplace=True)),
        ((16, 1, 10, 10), dict(p=0.6, inplace=True, value=-1.0)),
    ],
)
def test_erase_rectangle_writes_equal_the_batched_path(monkeypatch, shape, kwargs) -> None:
    # On the CPU erase writes only the rectangles (as timm); GPUs and torch.compile take the
    # batched full-tensor path. Both must give the same images and mask for the same draws.
    from maskwise.functional import erasing

    x = torch.randn(shape, generator=seeded(62))
    assert erasing._use_rectangles(x, kwargs.get("value", 0.0))
    rect_in = x.clone()
    rect, rect_m = mw.erase(rect_in, **kwargs, generator=seeded(63))
    monkeypatch.setattr(erasing, "_use_rectangles", lambda images, value: False)
    dense_in = x.clone()
    dense, dense_m = mw.erase(dense_in, **kwargs, generator=seeded(63))
    assert torch.equal(rect_m, dense_m) and rect_m.any()
    assert torch.equal(rect, dense)
    assert torch.equal(rect_in, dense_in)  # inplace: both wrote the input; else both left it
    assert (rect is rect_in) == kwargs.get("inplace", False)


@pytest.mark.parametrize("batched, shape", [(True, (6, 3, 20, 18)), (False, (3, 20, 18))])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("value", [0.5, [1.0, 2.0, 3.0], "random"])
def test_erase_without_mask_returns_the_same_images(batched, shape, inplace, value) -> None:
    x = torch.randn(shape, generator=seeded(64))
    kw = dict(p=0.8, value=value, batched=batched, inplace=inplace)
    with_in, without_in = x.clone(), x.clone()
    erased, m = mw.erase(with_in, **kw, generator=seeded(65))
    alone = mw.erase(without_in, **kw, return_mask=False, generator=seeded(65))
    assert isinstance(alone, torch.Tensor) and m.any()
    assert torch.equal(alone, erased) and torch.equal(with_in, without_in)
    assert (alone is without_in) == inplace


def test_erase_return_mask_must_be_a_bool() -> None:
    x = torch.ones(2, 3, 8, 8)
    with pytest.raises(TypeError, match="return_mask must be a bool \\(0 given\\)"):
        mw.erase(x, return_mask=0)  # type: ignore[call-overload]
    assert torch.equal(x, torch.ones(2, 3, 8, 8))
