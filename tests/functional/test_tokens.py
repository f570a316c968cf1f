import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskwise as mw
import maskwise.nn
from maskwise.functional import word_starts
from tests.reference import text as ref

SPECIAL = [0, 1, 2, 3]  # pad, cls, sep, mask
V = 50


def random_batch(B, L, seed):
    """Token ids 4..V-1 with [CLS] first, [SEP] last and right padding of random lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (B, L), generator=g)
    lengths = torch.randint(2, L + 1, (B,), generator=g)
    pos = torch.arange(L)
    am = (pos < lengths[:, None]).long()
    ids[:, 0] = 1
    ids[torch.arange(B), lengths - 1] = 2
    ids[am == 0] = 0
    return ids, am


# ---------------------------------------------------------------- mask_tokens
def test_mask_tokens_never_special_nor_padding():
    ids, am = random_batch(64, 40, seed=0)
    m = mw.mask_tokens(ids, 1.0, special_ids=SPECIAL, attention_mask=am)
    assert torch.equal(m, (am == 1) & ~torch.isin(ids, torch.tensor(SPECIAL)))


def test_mask_tokens_padding_by_attention_mask_not_id():
    ids = torch.tensor([[1, 5, 5, 2, 5, 5]])  # the pad positions carry a normal id
    am = torch.tensor([[1, 1, 1, 1, 0, 0]])
    m = mw.mask_tokens(ids, 1.0, special_ids=[1, 2], attention_mask=am)
    assert m.tolist() == [[False, True, True, False, False, False]]


def test_mask_tokens_bad_input():
    ids, am = random_batch(2, 8, seed=0)
    with pytest.raises(TypeError, match="integer"):
        mw.mask_tokens(ids.float(), 0.1)
    with pytest.raises(ValueError, match="attention_mask"):
        mw.mask_tokens(ids, 0.1, attention_mask=am[:, :5])
    with pytest.raises(ValueError, match="2 dimensions"):
        mw.mask_tokens(ids[0], 0.1)


@settings(max_examples=50, deadline=None)
@given(
    B=st.integers(1, 6),
    L=st.integers(2, 30),
    rate=st.floats(0, 1),
    exact=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_property_padding_and_specials_never_masked(B, L, rate, exact, seed):
    ids, am = random_batch(B, L, seed)
    m = mw.mask_tokens(
        ids,
        rate,
        special_ids=SPECIAL,
        attention_mask=am,
        exact=exact,
        generator=torch.Generator().manual_seed(seed),
    )
    assert not (m & (am == 0)).any()
    assert not (m & torch.isin(ids, torch.tensor(SPECIAL))).any()


# ---------------------------------------------------------------- words
def test_word_starts_literal():
    wid = torch.tensor([[-1, 0, 0, 1, -1, 0, 0, 2, 2, -1]])
    assert word_starts(wid).int().tolist() == [[0, 1, 0, 1, 0, 1, 0, 1, 0, 0]]


def random_word_ids(B, L, seed):
    g = torch.Generator().manual_seed(seed)
    out = torch.full((B, L), -1, dtype=torch.long)
    for b in range(B):
        j, w = 1, 0
        n = int(torch.randint(2, L + 1, (1,), generator=g))
        while j < n - 1:
            size = int(torch.randint(1, 4, (1,), generator=g))
            out[b, j : min(j + size, n - 1)] = w
            w += 1
            j += size
            if torch.rand(1, generator=g) < 0.1 and j < n - 1:  # a special token between words
                j += 1
                w = 0  # ids restart, as for the second sentence of a pair
    return out


def test_mask_words_matches_reference():
    wid = random_word_ids(16, 40, seed=2)
    got = mw.mask_words(wid, 0.4, generator=torch.Generator().manual_seed(3))
    want = ref.mask_words(wid, 0.4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, want)


def test_mask_words_all_or_nothing_and_rate():
    wid = random_word_ids(300, 60, seed=4)
    m = mw.mask_words(wid, 0.3, generator=torch.Generator().manual_seed(5))
    n_words = n_masked = 0
    for b in range(wid.shape[0]):
        for positions in ref.words(wid[b].tolist()):
            vals = {bool(m[b, j]) for j in positions}
            assert len(vals) == 1, "a word was split"
            n_words += 1
            n_masked += vals.pop()
    assert not (m & (wid < 0)).any()
    # ~5k words: std of the fraction ~ 0.0065; tolerance 4 sigma.
    assert abs(n_masked / n_words - 0.3) < 0.026


def test_mask_words_exact_count():
    wid = random_word_ids(50, 40, seed=6)
    m = mw.mask_words(wid, 0.5, exact=True, generator=torch.Generator().manual_seed(0))
    for b in range(wid.shape[0]):
        ws = ref.words(wid[b].tolist())
        chosen = sum(bool(m[b, p[0]]) for p in ws)
        assert chosen == round(0.5 * len(ws))


def test_mask_words_weights_follow_word_mean():
    # Two words per row: word 0 has token weights (3, 3), word 1 (1,) -> exact 1 word: P(w0) = 3/4.
    wid = torch.tensor([[0, 0, 1]]).repeat(4000, 1)
    w = torch.tensor([[3.0, 3.0, 1.0]]).repeat(4000, 1)
    m = mw.mask_words(wid, 0.5, exact=True, weights=w, generator=torch.Generator().manual_seed(0))
    p0 = m[:, 0].float().mean().item()
    assert abs(p0 - 0.75) < 0.03  # std 0.007
    assert torch.equal(m[:, 0], m[:, 1])


def test_word_ids_from_offsets_matches_reference():
    g = torch.Generator().manual_seed(0)
    B, L = 8, 30
    offsets = torch.zeros(B, L, 2, dtype=torch.long)
    for b in range(B):
        c = 0
        for j in range(1, L - 1):
            c += int(torch.randint(0, 2, (1,), generator=g))  # 0: continue the word, 1: a space
            n = int(torch.randint(1, 4, (1,), generator=g))
            offsets[b, j] = torch.tensor([c, c + n])
            c += n
    assert torch.equal(mw.word_ids_from_offsets(offsets), ref.word_ids_from_offsets(offsets))


def test_word_ids_from_offsets_special_mask_and_errors():
    offsets = torch.tensor([[[0, 2], [2, 4], [5, 7]]])
    stm = torch.tensor([[1, 0, 0]])
    assert mw.word_ids_from_offsets(offsets, special_tokens_mask=stm).tolist() == [[-1, 0, 1]]
    with pytest.raises(ValueError, match=r"\(B, L, 2\)"):
        mw.word_ids_from_offsets(torch.zeros(2, 3))


def test_word_ids_from_encoding_rejects_slow_encodings():
    with pytest.raises(TypeError, match="fast tokenizer"):
        mw.word_ids_from_encoding({"input_ids": [1, 2]})


# ---------------------------------------------------------------- corrupt
@pytest.mark.parametrize("split", [(0.8, 0.1), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.0, 0.0)])
def test_corrupt_matches_reference(split):
    ids, am = random_batch(10, 30, seed=7)
    masked = mw.mask_tokens(
        ids, 0.5, special_ids=SPECIAL, attention_mask=am, generator=torch.Generator().manual_seed(1)
    )
    kw = dict(
        mask_id=3, vocab_size=V, replace_prob=split[0], random_prob=split[1], special_ids=SPECIAL
    )
    got = mw.corrupt(ids, masked, generator=torch.Generator().manual_seed(2), **kw)
    want = ref.corrupt(ids, masked, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_corrupt_split_statistics_and_specials():
    # 60k masked tokens: each share has std < 0.002; tolerance 0.01.
    ids = torch.randint(4, 12, (600, 100), generator=torch.Generator().manual_seed(0))
    masked = torch.ones_like(ids, dtype=torch.bool)
    out, labels = mw.corrupt(
        ids,
        masked,
        mask_id=3,
        vocab_size=12,
        special_ids=SPECIAL,
        generator=torch.Generator().manual_seed(1),
    )
    n = masked.sum().item()
    replaced = (out == 3).sum().item() / n
    kept = (out == ids).sum().item() / n
    assert abs(replaced - 0.8) < 0.01
    # A random draw equals the original with probability 1/8 (8 allowed ids).
    random_share = 1 - replaced - kept
    assert abs(random_share - 0.1 * 7 / 8) < 0.01
    assert not torch.isin(out[out != 3], torch.tensor(SPECIAL)).any()
    assert torch.equal(labels, ids)


def test_corrupt_random_ids_uniform_over_allowed():
    ids = torch.full((2000, 50), 10)
    masked = torch.ones_like(ids, dtype=torch.bool)
    specials = [0, 5, 6, 19]
    out, _ = mw.corrupt(
        ids,
        masked,
        mask_id=7,
        vocab_size=20,
        replace_prob=0.0,
        random_prob=1.0,
        special_ids=specials,
        generator=torch.Generator().manual_seed(0),
    )
    counts = torch.bincount(out.flatten(), minlength=20).float() / out.numel()
    allowed = [i for i in range(20) if i not in specials + [7]]
    assert counts[specials + [7]].sum() == 0
    assert torch.allclose(
        counts[allowed], torch.full((len(allowed),), 1 / len(allowed)), atol=0.003
    )


def test_corrupt_unigram_draws_follow_the_weights_over_allowed_ids():
    ids = torch.full((4000, 50), 10)
    masked = torch.ones_like(ids, dtype=torch.bool)
    weights = torch.arange(20, dtype=torch.float)  # id i drawn in proportion to i
    weights[19] = 1000.0  # a special id: never drawn, whatever its weight
    kwargs = dict(mask_id=7, vocab_size=20, replace_prob=0.0, random_prob=1.0)
    out, _ = mw.corrupt(
        ids,
        masked,
        special_ids=[0, 19],
        random_weights=weights,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    counts = torch.bincount(out.flatten(), minlength=20).double()
    allowed = [i for i in range(20) if i not in (0, 7, 19)]
    assert counts[[0, 7, 19]].sum() == 0
    expected = weights.double()[allowed] / weights.double()[allowed].sum() * out.numel()
    # each count within 5 binomial standard deviations of its expectation (200k draws)
    sd = (expected * (1 - expected / out.numel())).sqrt()
    assert ((counts[allowed] - expected).abs() < 5 * sd).all()
    # a keyed source gives the same draws for the same key, whatever the batch around it
    from maskwise.random import KeyedGenerator

    def keyed(rows):
        return KeyedGenerator(torch.arange(rows) + 100)

    a, _ = mw.corrupt(ids[:4], masked[:4], random_weights=weights, generator=keyed(4), **kwargs)
    b, _ = mw.corrupt(ids[:2], masked[:2], random_weights=weights, generator=keyed(2), **kwargs)
    assert torch.equal(a[:2], b)


@pytest.mark.parametrize(
    "weights, match",
    [
        (torch.ones(19), "shape \\(20,\\)"),
        (torch.full((20,), -1.0), "non-negative"),
        (torch.full((20,), float("nan")), "finite"),
        (torch.eye(20)[7], "no weight"),  # all the weight on [MASK], which is never drawn
    ],
)
def test_corrupt_unigram_bad_weights(weights, match):
    ids = torch.tensor([[5, 6, 7]])
    before = ids.clone()
    with pytest.raises(ValueError, match=match):
        mw.corrupt(
            ids,
            torch.ones(1, 3, dtype=torch.bool),
            mask_id=7,
            vocab_size=20,
            replace_prob=0.0,
            random_prob=1.0,
            random_weights=weights,
        )
    assert torch.equal(ids, before)


def test_token_mask_unigram_noising_module():
    weights = torch.zeros(20)
    weights[[11, 12]] = 1.0
    tm = mw.nn.TokenMask(
        1.0,
        mask_id=4,
        special_ids=[0, 1, 2, 3, 4],
        vocab_size=20,
        replace_prob=0.0,
        random_prob=1.0,
        random_weights=weights,
        seed=0,
    )
    out, mask = tm(torch.tensor([[1, 7, 8, 9, 0]]), attention_mask=torch.tensor([[1, 1, 1, 1, 0]]))
    assert mask.tolist() == [[False, True, True, True, False]]
    assert out[0, 0] == 1 and out[0, 4] == 0 and set(out[0, 1:4].tolist()) <= {11, 12}
    assert "random_weights" not in tm.state_dict()  # data, not state: rebuilt with the module
    assert "unigram" in repr(tm)
    with pytest.raises(ValueError, match="vocab_size is required and random_prob must be > 0"):
        mw.nn.TokenMask(0.1, mask_id=4, random_weights=weights)
    with pytest.raises(ValueError, match="vocab_size is required and random_prob must be > 0"):
        mw.nn.TokenMask(0.1, mask_id=4, vocab_size=20, random_weights=weights)
    with pytest.raises(ValueError, match="random_prob must be > 0"):
        mw.corrupt(
            torch.tensor([[5]]),
            torch.tensor([[True]]),
            mask_id=4,
            vocab_size=20,
            random_weights=weights,
            replace_prob=1.0,
            random_prob=0.0,
        )


def test_corrupt_does_not_modify_input_and_keeps_dtype():
    ids = torch.tensor([[5, 6, 7]], dtype=torch.int32)
    before = ids.clone()
    out, labels = mw.corrupt(ids, torch.tensor([[True, True, True]]), mask_id=4, vocab_size=10)
    assert torch.equal(ids, before)
    assert out.dtype == torch.int32 and labels.dtype == torch.long
    out2, _ = mw.corrupt(ids, torch.zeros(1, 3, dtype=torch.bool), mask_id=4, vocab_size=10)
    assert out2 is not ids and torch.equal(out2, ids)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(mask_id=None, vocab_size=10), ValueError, "mask_id"),
        (dict(mask_id=4, vocab_size=None), ValueError, "vocab_size"),
        (
            dict(mask_id=4, vocab_size=10, replace_prob=0.8, random_prob=0.3),
            ValueError,
            "at most 1",
        ),
        (dict(mask_id=4, vocab_size=10, replace_prob=1.2), ValueError, "1.2"),
        (dict(mask_id=1, vocab_size=2, special_ids=[0]), ValueError, "No id is left"),
    ],
)
def test_corrupt_bad_input(kwargs, err, match):
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(err, match=match):
        mw.corrupt(ids, torch.ones(1, 3, dtype=torch.bool), **kwargs)


def test_corrupt_shape_and_dtype_errors():
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="shape"):
        mw.corrupt(ids, torch.ones(1, 2, dtype=torch.bool), mask_id=4, vocab_size=10)
    with pytest.raises(TypeError, match="bool"):
        mw.corrupt(ids, torch.ones(1, 3), mask_id=4, vocab_size=10)


# ---------------------------------------------------------------- lm_labels
def test_lm_labels_matches_reference():
    ids, am = random_batch(12, 20, seed=9)
    prompt = torch.randint(0, 6, (12,), generator=torch.Generator().manual_seed(0))
    got = mw.lm_labels(ids, attention_mask=am, prompt_lengths=prompt)
    assert torch.equal(got, ref.lm_labels(ids, am, prompt))


def test_lm_labels_eos_equals_pad_and_left_padding():
    ids = torch.tensor([[2, 2, 11, 12, 2]])  # left padded, pad == eos == 2
    am = torch.tensor([[0, 0, 1, 1, 1]])
    assert mw.lm_labels(ids, attention_mask=am, prompt_lengths=torch.tensor([1])).tolist() == [
        [-100, -100, -100, 12, 2]
    ]
    pm = torch.tensor([[False, False, True, False, False]])
    assert mw.lm_labels(ids, attention_mask=am, prompt_mask=pm, ignore_index=-1).tolist() == [
        [-1, -1, -1, 12, 2]
    ]
    assert mw.lm_labels(ids).tolist() == [[2, 2, 11, 12, 2]]


def test_lm_labels_bad_input():
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="prompt_mask"):
        mw.lm_labels(ids, prompt_mask=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="prompt_lengths"):
        mw.lm_labels(ids, prompt_lengths=torch.tensor([1, 2]))


# ---------------------------------------------------------------- features
def test_mask_features_seed_formula_and_dims():
    x = torch.randn(4, 6, 8)
    xm, m = mw.mask_features(x, 0.5, dims=(-1,), generator=torch.Generator().manual_seed(0))
    assert m.shape == (4, 6, 1)
    assert torch.equal(xm, x * (1 - m.float()))
    xm2, m2 = mw.mask_features(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert m2.shape == x.shape and torch.equal(xm2, x * (1 - m2.float()))


def test_mask_features_rate_statistics_and_per_row_rates():
    x = torch.ones(4, 50000)
    _, m = mw.mask_features(
        x, torch.tensor([0.0, 0.1, 0.5, 1.0]), generator=torch.Generator().manual_seed(0)
    )
    got = m.float().mean(1)
    assert torch.allclose(got, torch.tensor([0.0, 0.1, 0.5, 1.0]), atol=0.01)  # std <= 2.3e-3


def test_mask_features_gradient_flows_to_kept_entries():
    x = torch.randn(3, 5, requires_grad=True)
    xm, m = mw.mask_features(x, 0.5, generator=torch.Generator().manual_seed(0))
    xm.sum().backward()
    assert torch.equal(x.grad, (~m).float())


def test_mask_features_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        mw.mask_features(torch.ones(2, 3), 0.1, dims=3)
    with pytest.raises(ValueError, match="1.5"):
        mw.mask_features(torch.ones(2, 3), 1.5)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        mw.mask_features(torch.ones(2, 3), torch.tensor([0.1]))
    with pytest.raises(TypeError):
        mw.mask_features([1.0, 2.0], 0.1)


def test_review_edge_cases():
    # NaN rates are rejected, not silently treated as 0.
    with pytest.raises(ValueError, match="nan"):
        mw.sample_mask(torch.ones(1, 3, dtype=torch.bool), torch.tensor([float("nan")]))
    with pytest.raises(ValueError):
        mw.sample_mask(torch.ones(1, 3, dtype=torch.bool), float("nan"))
    # Random ids must fit the ids' dtype.
    with pytest.raises(ValueError, match="int16"):
        mw.corrupt(
            torch.ones(1, 3, dtype=torch.int16),
            torch.ones(1, 3, dtype=torch.bool),
            mask_id=4,
            vocab_size=100000,
        )
    # A masked inf becomes 0, not NaN.
    x = torch.tensor([[float("inf"), 1.0]])
    xm, m = mw.mask_features(x, 1.0)
    assert torch.equal(xm, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="batch"):
        mw.mask_features(torch.ones(2, 3), torch.tensor([0.1, 0.2]), dims=0)
    with pytest.raises(TypeError, match="bool"):
        mw.lm_labels(torch.ones(1, 3, dtype=torch.long), prompt_mask=torch.ones(1, 3))
    with pytest.raises(TypeError, match="dims"):
        mw.nn.FeatureMask(0.1, dims="last")
