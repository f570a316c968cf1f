"""The speech modules: ``maskwise.nn.SpecAugment`` and ``maskwise.nn.TimeSpanMask``."""

import copy

import pytest
import torch

import maskwise as mw
from maskwise.random import KeyedGenerator, hash_keys
from tests.reference import speech as ref

PAPER_POLICIES = {
    "LB": dict(freq_masks=1, freq_width=27, time_masks=1, time_width=100, max_time_fraction=1.0),
    "LD": dict(freq_masks=2, freq_width=27, time_masks=2, time_width=100, max_time_fraction=1.0),
    "SM": dict(freq_masks=2, freq_width=15, time_masks=2, time_width=70, max_time_fraction=0.2),
    "SS": dict(freq_masks=2, freq_width=27, time_masks=2, time_width=70, max_time_fraction=0.2),
}


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def spec(shape=(4, 80, 300), seed=0):
    return torch.randn(shape, generator=seeded(seed))


# ---------------------------------------------------------------- SpecAugment
@pytest.mark.parametrize("policy", sorted(PAPER_POLICIES))
def test_spec_augment_module_policy_presets(policy):
    m = mw.nn.SpecAugment(policy=policy, freq_masks=9, time_width=3, seed=3)  # the policy wins
    for name, v in PAPER_POLICIES[policy].items():
        assert getattr(m, name) == v, name
    x, lengths = spec(), torch.tensor([300, 260, 180, 90])
    out = m(x, lengths=lengths)
    # The module's generator is seeded with ``seed``: the same draws as the function with a
    # generator seeded alike, and the paper's parameters.
    want = ref.spec_augment(x, **PAPER_POLICIES[policy], lengths=lengths, generator=seeded(3))
    assert torch.equal(out.spec, want[0])
    assert torch.equal(out.freq_masked, want[1]) and torch.equal(out.time_masked, want[2])
    assert not out.time_masked[torch.arange(300) >= lengths[:, None]].any()


def test_spec_augment_module_unknown_policy():
    with pytest.raises(ValueError, match="XL"):
        mw.nn.SpecAugment(policy="XL")
    with pytest.raises(ValueError, match="1.5"):
        mw.nn.SpecAugment(1.5)


@pytest.mark.parametrize(
    "rate, masks, functional_masks",
    [
        (1.0, (2, 2), (2, 2)),
        (0.5, (2, 4), (1, 2)),
        (0.25, (4, 4), (1, 1)),
        (0.75, (4, 4), (3, 3)),
        (0.5, (2, 0.04), (1, 0.02)),
    ],
)
def test_spec_augment_module_rate_scales_both_numbers_of_masks(rate, masks, functional_masks):
    # rate * masks whole: the functional with those counts, and no extra draw.
    x = spec((3, 40, 200), seed=1)
    m = mw.nn.SpecAugment(
        rate, freq_masks=masks[0], freq_width=10, time_masks=masks[1], time_width=30, seed=7
    )
    got = m(x)
    want = mw.spec_augment(
        x,
        freq_masks=functional_masks[0],
        freq_width=10,
        time_masks=functional_masks[1],
        time_width=30,
        generator=seeded(7),
    )
    assert torch.equal(got.spec, want.spec)
    assert torch.equal(got.freq_masked, want.freq_masked)
    assert torch.equal(got.time_masked, want.time_masked)


def test_spec_augment_module_rounds_counts_at_random_with_exact_means():
    # 0.3 * 2 = 0.6 frequency masks, 0.3 * 10 = 3 time masks: 1 frequency mask in 60 % of calls.
    m = mw.nn.SpecAugment(0.3, freq_masks=2, freq_width=3, time_masks=10, time_width=5, seed=0)
    counts = [m.draw_mask_counts() for _ in range(2000)]
    assert {t for _, t in counts} == {3}
    assert {f for f, _ in counts} == {0, 1}
    assert abs(sum(f for f, _ in counts) / 2000 - 0.6) < 0.04  # sd 0.011
    assert mw.nn.SpecAugment(1.0, freq_masks=2, time_masks=10).draw_mask_counts() == (2, 10)


@pytest.mark.parametrize(
    "rate, time_masks, functional_time_masks",
    [(1.0, 2, 2), (0.5, 2, 1), (0.25, 4, 1), (0.75, 4, 3), (0.5, 0.04, 0.02)],
)
def test_spec_augment_module_legacy_rate_scales_the_number_of_time_masks(
    rate, time_masks, functional_time_masks
):
    x = spec((3, 40, 200), seed=1)
    m = mw.nn.SpecAugment(
        rate,
        freq_masks=2,
        freq_width=10,
        time_masks=time_masks,
        time_width=30,
        rate_scales="time_masks",
        seed=7,
    )
    got = m(x)
    want = mw.spec_augment(
        x,
        freq_masks=2,
        freq_width=10,
        time_masks=functional_time_masks,
        time_width=30,
        generator=seeded(7),
    )
    assert torch.equal(got.spec, want.spec)
    assert torch.equal(got.time_masked, want.time_masked)
    assert "rate_scales='time_masks'" in repr(m)


def test_spec_augment_module_rate_half_means_one_time_mask():
    # time_width=1: a mask is one frame or empty, and 2 masks could cover 2 frames; one covers at
    # most 1.
    x = torch.zeros(2000, 4, 50)
    half = mw.nn.SpecAugment(0.5, freq_masks=0, freq_width=0, time_masks=2, time_width=1, seed=0)(x)
    full = mw.nn.SpecAugment(1.0, freq_masks=0, freq_width=0, time_masks=2, time_width=1, seed=0)(x)
    assert half.time_masked.sum(1).max().item() == 1
    assert full.time_masked.sum(1).max().item() == 2
    # E[masked frames] = 1/2 with one mask (std of the mean 0.011), ~1 with two.
    assert abs(half.time_masked.sum(1).double().mean().item() - 0.5) < 0.05
    assert (
        abs(full.time_masked.sum(1).double().mean().item() - 50 * (1 - (1 - 1 / 100) ** 2)) < 0.08
    )


def test_spec_augment_module_rate_zero_masks_nothing_but_legacy_keeps_frequency_masks():
    x = spec((2, 80, 120))
    out = mw.nn.SpecAugment(0.0, time_width=50, seed=0)(x)
    assert out.freq_masked.shape == (2, 80) and out.time_masked.shape == (2, 120)
    assert out.spec is x and not out.freq_masked.any() and not out.time_masked.any()
    # The earlier rule scales the number of time masks only: the frequency masks stay.
    out = mw.nn.SpecAugment(0.0, time_width=50, rate_scales="time_masks", seed=0)(x)
    assert out.freq_masked.any() and not out.time_masked.any()


@pytest.mark.parametrize("shape", [(3, 80, 150), (3, 2, 80, 150)])
def test_spec_augment_module_eval_is_identity(shape):
    m = mw.nn.SpecAugment(policy="LD", seed=0)
    x = spec(shape)
    assert m(x).freq_masked.any()  # training mode does mask
    m.eval()
    out = m(x, lengths=torch.tensor([150, 100, 10]))
    assert out.spec is x
    assert (
        out.freq_masked.dtype == torch.bool
        and out.freq_masked.shape == (3, 80)
        and not out.freq_masked.any()
    )
    assert (
        out.time_masked.dtype == torch.bool
        and out.time_masked.shape == (3, 150)
        and not out.time_masked.any()
    )
    m.train()
    assert m(x).time_masked.any()


def test_spec_augment_module_seeded_determinism_and_global_rng():
    x = spec()
    state = torch.get_rng_state()
    a = mw.nn.SpecAugment(policy="LD", seed=5)
    b = mw.nn.SpecAugment(policy="LD", seed=5)
    first = a(x)
    assert torch.equal(first.spec, b(x).spec)
    assert torch.equal(torch.get_rng_state(), state)
    second = a(x)  # the generator advances: a new draw each step
    assert not torch.equal(first.freq_masked, second.freq_masked)
    assert not torch.equal(first.spec, mw.nn.SpecAugment(policy="LD", seed=6)(x).spec)


def test_spec_augment_module_state_dict_restores_generator():
    x = spec()
    a = mw.nn.SpecAugment(0.5, policy="LD", seed=11)
    a(x)
    state = copy.deepcopy(a.state_dict())
    expected = a(x)
    b = mw.nn.SpecAugment(policy="LD", seed=99)
    b.load_state_dict(state)
    assert b.rate == 0.5
    got = b(x)
    assert torch.equal(got.spec, expected.spec)
    assert torch.equal(got.freq_masked, expected.freq_masked) and torch.equal(
        got.time_masked, expected.time_masked
    )


def test_spec_augment_module_mean_value_and_extra_repr():
    m = mw.nn.SpecAugment(0.5, policy="SM", value="mean", seed=1)
    x = spec((2, 80, 100)) + 3.0
    out = m(x)
    fill = x.mean(dim=(1, 2))
    hit = out.freq_masked[:, :, None] | out.time_masked[:, None, :]
    torch.testing.assert_close(out.spec[hit], fill[:, None, None].expand_as(x)[hit])
    r = repr(m)
    for part in (
        "rate=0.5",
        "policy=SM",
        "freq_masks=2",
        "freq_width=15",
        "time_masks=2",
        "time_width=70",
        "max_time_fraction=0.2",
    ):
        assert part in r, (part, r)


# ---------------------------------------------------------------- TimeSpanMask
def test_time_span_mask_value_fill():
    x = torch.randn(4, 200, 16, generator=seeded(0))
    lengths = torch.tensor([200, 150, 60, 5])
    tm = mw.nn.TimeSpanMask(0.65, span=10, value=-2.0, seed=3)
    out, mask = tm(x, lengths=lengths)
    assert mask.shape == (4, 200) and mask.dtype == torch.bool
    assert torch.equal(mask, mw.mask_time_spans(lengths, 200, 0.65, span=10, generator=seeded(3)))
    assert torch.equal(out, torch.where(mask[..., None], torch.tensor(-2.0), x))
    assert not mask[torch.arange(200) >= lengths[:, None]].any() and not mask[3].any()
    assert abs(mask[0].float().mean().item() - 0.49) < 0.2


def test_time_span_mask_without_lengths_masks_all_frames_alike():
    x = torch.randn(64, 100, 8)
    out, mask = mw.nn.TimeSpanMask(0.65, seed=0)(x)
    assert torch.equal(
        mask, mw.mask_time_spans(torch.full((64,), 100), 100, 0.65, generator=seeded(0))
    )
    # Spans reach the last frames of full rows: any of the starts 81..90 (10 of 91) covers one;
    # 64 rows of 6-7 spans all missing them has probability about (81 / 91) ** 416 < 1e-20.
    assert mask[:, 90:].any()


def test_time_span_mask_learned_token_is_used_and_gets_gradient():
    D = 12
    tm = mw.nn.TimeSpanMask(0.65, span=5, mask_token_dim=D, seed=2)
    assert isinstance(tm.mask_token, torch.nn.Parameter) and tm.mask_token.shape == (D,)
    assert "mask_token" in dict(tm.named_parameters())
    x = torch.randn(3, 80, D, requires_grad=True)
    out, mask = tm(x, lengths=torch.tensor([80, 50, 20]))
    assert mask.any()
    assert torch.equal(out[mask], tm.mask_token.detach().expand(int(mask.sum()), D))
    assert torch.equal(out[~mask], x.detach()[~mask])
    (out * torch.arange(1, D + 1)).sum().backward()
    # Every masked vector contributes its weights 1..D to the token; x gets them only where visible.
    torch.testing.assert_close(tm.mask_token.grad, mask.sum() * torch.arange(1, D + 1).float())
    torch.testing.assert_close(
        x.grad, (~mask)[..., None] * torch.arange(1, D + 1).float().expand(3, 80, D)
    )


def test_time_span_mask_eval_and_rate_zero_are_identity():
    x = torch.randn(2, 50, 4)
    tm = mw.nn.TimeSpanMask(0.65, span=5, seed=0)
    assert tm(x)[1].any()
    tm.eval()
    out, mask = tm(x, lengths=torch.tensor([50, 20]))
    assert out is x and mask.shape == (2, 50) and mask.dtype == torch.bool and not mask.any()
    out, mask = mw.nn.TimeSpanMask(0.0, span=5, seed=0)(x)
    assert out is x and not mask.any()


def test_time_span_mask_determinism_state_dict_and_repr():
    x = torch.randn(4, 120, 8)
    lengths = torch.tensor([120, 100, 70, 30])
    # (Initialising the mask token draws from the global generator, like any nn.Module parameter;
    # the forward passes must not.)
    a = mw.nn.TimeSpanMask(0.5, span=8, min_spans=1, mask_token_dim=8, seed=4)
    b = mw.nn.TimeSpanMask(0.5, span=8, min_spans=1, mask_token_dim=8, seed=4)
    state = torch.get_rng_state()
    assert torch.equal(a(x, lengths)[1], b(x, lengths)[1])
    assert torch.equal(torch.get_rng_state(), state)
    a(x, lengths)
    saved = copy.deepcopy(a.state_dict())
    expected_out, expected = a(x, lengths)
    c = mw.nn.TimeSpanMask(0.5, span=8, min_spans=1, mask_token_dim=8, seed=77)
    c.load_state_dict(saved)
    got_out, got = c(x, lengths)
    assert torch.equal(got, expected) and torch.equal(got_out, expected_out)  # token restored too
    r = repr(a)
    for part in ("rate=0.5", "span=8", "min_spans=1", "mask_token=True", "seed=4"):
        assert part in r, (part, r)


def test_time_span_mask_bad_input():
    tm = mw.nn.TimeSpanMask(0.5, span=4, seed=0)
    with pytest.raises(ValueError, match=r"\(2, 10\)"):
        tm(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="11"):
        tm(torch.zeros(2, 10, 3), lengths=torch.tensor([10, 11]))
    with pytest.raises(ValueError, match="1.5"):
        mw.nn.TimeSpanMask(1.5)


# ---------------------------------------------------------------- CUDA
@pytest.mark.gpu
def test_speech_maskers_on_cuda_match_cpu_semantics():
    dev = torch.device("cuda")
    lengths = torch.tensor([300, 220, 90, 7])
    x = spec((4, 2, 80, 300))
    # A keyed generator draws the same numbers on both devices, so the masks are identical.
    keys = hash_keys(0, torch.arange(4))
    kw = dict(policy="SM", lengths=lengths, value="mean")
    cpu = mw.spec_augment(x, generator=KeyedGenerator(keys), **kw)
    gpu = mw.spec_augment(
        x.to(dev), generator=KeyedGenerator(keys.to(dev)), **{**kw, "lengths": lengths.to(dev)}
    )
    assert gpu.spec.device.type == "cuda" and gpu.time_masked.device.type == "cuda"
    assert torch.equal(gpu.freq_masked.cpu(), cpu.freq_masked)
    assert torch.equal(gpu.time_masked.cpu(), cpu.time_masked)
    torch.testing.assert_close(gpu.spec.cpu(), cpu.spec)
    spans_cpu = mw.mask_time_spans(lengths, 300, 0.65, generator=KeyedGenerator(keys))
    spans_gpu = mw.mask_time_spans(
        lengths.to(dev), 300, 0.65, generator=KeyedGenerator(keys.to(dev))
    )
    assert torch.equal(spans_gpu.cpu(), spans_cpu)
    # Modules draw on the input's device; semantics as on CPU.
    sa = mw.nn.SpecAugment(policy="LD", seed=0)
    out = sa(x.to(dev), lengths=lengths.to(dev))
    assert out.spec.device.type == "cuda"
    assert not out.time_masked.cpu()[torch.arange(300) >= lengths[:, None]].any()
    hit = (out.freq_masked[:, None, :, None] | out.time_masked[:, None, None, :]).cpu()
    assert torch.equal(out.spec.cpu(), torch.where(hit, torch.tensor(0.0), x))
    tm = mw.nn.TimeSpanMask(0.65, mask_token_dim=16, seed=0).to(dev)
    feats = torch.randn(4, 300, 16, device=dev, requires_grad=True)
    y, mask = tm(feats, lengths=lengths.to(dev))
    assert (
        mask.device.type == "cuda" and not mask.cpu()[torch.arange(300) >= lengths[:, None]].any()
    )
    y.sum().backward()
    assert torch.equal(tm.mask_token.grad.cpu(), torch.full((16,), float(mask.sum())))
    a = mw.nn.TimeSpanMask(0.65, seed=3).to(dev)(feats, lengths.to(dev))[1]
    b = mw.nn.TimeSpanMask(0.65, seed=3).to(dev)(feats, lengths.to(dev))[1]
    assert torch.equal(a, b)


def test_spec_augment_result_mask_is_the_union_of_bands_and_frames():
    from maskwise.functional import SpecAugmentResult

    r = SpecAugmentResult(
        torch.zeros(1, 2, 3), torch.tensor([[True, False]]), torch.tensor([[False, True, False]])
    )
    assert r.mask.tolist() == [[[True, True, True], [False, True, False]]]
