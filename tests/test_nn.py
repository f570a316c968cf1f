import copy

import pytest
import torch

import maskwise as mw


def test_feature_mask_train_eval_and_repr():
    m = mw.nn.FeatureMask(0.5, dims=-1, seed=0)
    x = torch.randn(4, 10, 8)
    xm, mask = m(x)
    assert mask.shape == (4, 10, 1) and mask.any() and (~mask).any()
    assert torch.equal(xm, x * (~mask))
    m.eval()
    x2, mask2 = m(x)
    assert x2 is x and not mask2.any() and mask2.shape == (4, 10, 1)
    assert "rate=0.5" in repr(m) and "seed=0" in repr(m)


def test_token_mask_bert_split_and_specials():
    tm = mw.nn.TokenMask(
        0.5,
        mask_id=3,
        special_ids=[0, 1, 2],
        vocab_size=30,
        replace_prob=0.8,
        random_prob=0.1,
        seed=1,
    )
    ids = torch.randint(4, 30, (64, 40))
    ids[:, 0] = 1
    am = torch.ones_like(ids)
    am[:, 30:] = 0
    out, mask = tm(ids, attention_mask=am)
    assert not mask[:, 0].any() and not mask[:, 30:].any()
    assert torch.equal(out[~mask], ids[~mask])
    assert abs(mask[:, 1:30].float().mean().item() - 0.5) < 0.03
    assert not torch.isin(out, torch.tensor([0, 1, 2]))[mask].any()


def test_module_state_dict_restores_generator():
    a = mw.nn.TokenMask(0.3, mask_id=3, seed=11)
    ids = torch.randint(4, 30, (8, 20))
    a(ids)
    state = copy.deepcopy(a.state_dict())
    expected = a(ids)[1]
    b = mw.nn.TokenMask(0.3, mask_id=3, seed=99)
    b.load_state_dict(state)
    assert torch.equal(b(ids)[1], expected)


def test_modules_are_seeded_and_leave_global_rng_alone():
    ids = torch.randint(4, 30, (8, 20))
    state = torch.get_rng_state()
    m1 = mw.nn.TokenMask(0.3, mask_id=3, seed=5)(ids)[1]
    m2 = mw.nn.TokenMask(0.3, mask_id=3, seed=5)(ids)[1]
    assert torch.equal(m1, m2)
    assert torch.equal(torch.get_rng_state(), state)


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="1.5"):
        mw.nn.FeatureMask(1.5)
    with pytest.raises(ValueError, match="vocab_size"):
        mw.nn.TokenMask(0.1, mask_id=3, replace_prob=0.8, random_prob=0.1)
    with pytest.raises(ValueError, match="at most 1"):
        mw.nn.TokenMask(0.1, mask_id=3, replace_prob=0.9, random_prob=0.2, vocab_size=10)


@pytest.mark.gpu
def test_token_mask_on_cuda():
    tm = mw.nn.TokenMask(0.5, mask_id=3, special_ids=[0], seed=0).cuda()
    ids = torch.randint(4, 30, (8, 20), device="cuda")
    out, mask = tm(ids)
    assert out.device.type == "cuda" and mask.device.type == "cuda"
    assert 0.3 < mask.float().mean().item() < 0.7
