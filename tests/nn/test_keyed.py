"""``keyed=True``: a masker draws from counter-based keys (seed, rank, DataLoader worker, call,
row) instead of a ``torch.Generator``; its call counter is part of its state."""

from __future__ import annotations

import copy

import pytest
import torch

import maskwise.nn as mnn
from maskwise.functional import mask_patches
from maskwise.random import KeyedGenerator, hash_keys


def test_keyed_draws_are_a_function_of_seed_call_and_row() -> None:
    x = torch.randn(3, 16, 4)
    pm = mnn.PatchMask(0.5, keyed=True, seed=5)
    first, second = pm(x)[1], pm(x)[1]
    assert int(pm.calls) == 2 and not torch.equal(first, second)
    for call, mask in enumerate((first, second)):
        keys = hash_keys(5, 0, -1, call, torch.arange(3))  # rank 0, no DataLoader worker
        assert torch.equal(mask, mask_patches(3, 16, 0.5, generator=KeyedGenerator(keys)))
    ids = torch.randint(4, 30, (2, 8))
    state = torch.get_rng_state()
    mnn.TokenMask(0.3, mask_id=3, keyed=True, seed=0)(ids)
    assert torch.equal(torch.get_rng_state(), state)  # global generator untouched


def test_keyed_state_dict_restores_the_counter() -> None:
    x = torch.randn(2, 3, 16, 16)
    a = mnn.Erase(1.0, keyed=True, seed=1)
    a(x)
    saved = copy.deepcopy(a.state_dict())
    expected = a(x)[1]
    b = mnn.Erase(1.0, keyed=True, seed=9)
    b.load_state_dict(saved)
    assert int(b.calls) == 1 and torch.equal(b(x)[1], expected)
    # A checkpoint saved before keyed= existed (no counter) still loads.
    del saved["_extra_state"]["calls"]
    b.load_state_dict(saved)
    assert int(b.calls) == 0


def test_keyed_checks_and_repr() -> None:
    with pytest.raises(TypeError, match="keyed must be a bool.*'yes'"):
        mnn.FeatureMask(0.5, keyed="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="return_mask must be a bool"):
        mnn.FeatureMask(0.5, return_mask=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch="):
        mnn.FeatureMask(0.5, keyed=True).generator(torch.device("cpu"))
    assert "keyed=True" in repr(mnn.SpecAugment(keyed=True, seed=0))
    assert "keyed" not in repr(mnn.SpecAugment(seed=0))


def test_keyed_follows_the_module_to_its_device_and_stays_out_of_state_keys() -> None:
    m = mnn.TokenMask(0.3, mask_id=3, keyed=True, seed=0)
    assert "calls" in dict(m.named_buffers()) and "calls" not in m.state_dict()
    assert set(m.state_dict()) == set(mnn.TokenMask(0.3, mask_id=3, seed=0).state_dict())
