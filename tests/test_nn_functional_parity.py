"""Every ``maskwise.nn`` masker is its functional plus state: with the module's seed as the
functional's generator, both return exactly the same tensors (timm-style, driven by a registry
of every masker the package exports, so a new module without a case here fails)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import maskwise.functional as F
import maskwise.nn as mnn
from maskwise.random import KeyedGenerator, hash_keys

SEED = 7


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(SEED)


def _ids() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    am = torch.ones_like(ids)
    am[1, 8:] = 0
    am[3, 3:] = 0
    ids[0, 0] = 1  # a special id
    return ids.masked_fill(am == 0, 0), am


def _fill(x: torch.Tensor, mask: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    return x.masked_fill(mask.unsqueeze(-1), value)


X = torch.randn(3, 64, 8, generator=torch.Generator().manual_seed(2))
IMAGES = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
SPEC = torch.randn(3, 40, 60, generator=torch.Generator().manual_seed(4))  # a 60-frame clip
LENGTHS = torch.tensor([60, 41, 17])

# name -> (module, call of the module, call of the functional with a generator)
Case = tuple[Callable[[], Any], Callable[[Any], Any], Callable[[torch.Generator], Any]]


def _token_functional(g: torch.Generator) -> Any:
    ids, am = _ids()
    mask = F.mask_tokens(ids, 0.3, special_ids=[0, 1], attention_mask=am, generator=g)
    out, _ = F.corrupt(
        ids, mask, mask_id=4, vocab_size=50, replace_prob=0.8, random_prob=0.1,
        special_ids=[0, 1], generator=g,
    )  # fmt: skip
    return out, mask


def _time_spans_functional(g: torch.Generator) -> Any:
    mask = F.mask_time_spans(LENGTHS, 60, 0.4, span=5, generator=g)
    return _fill(X[:, :60], mask), mask


def _spec_augment_rate_functional(g: torch.Generator) -> Any:
    # rate 0.3 of 2 frequency and 10 time masks: 0.6 -> 0 or 1 and 3, rounded with one draw
    # each from the generator before the masks.
    u = torch.rand(2, dtype=torch.float64, generator=g).tolist()
    return F.spec_augment(
        SPEC, freq_masks=math.floor(0.6 + u[0]), freq_width=6, time_masks=3, time_width=8,
        value="mean", lengths=LENGTHS, generator=g,
    )  # fmt: skip


def _prefix_functional(g: torch.Generator) -> Any:
    patches = F.mask_patches(3, 62, 0.5, generator=g)
    mask = torch.cat([torch.zeros(3, 2, dtype=torch.bool), patches], 1)  # 2 prefix tokens
    return X.gather(1, F.keep_indices(mask)[0].unsqueeze(-1).expand(-1, -1, 8)), mask


def _keyed_token_functional(g: torch.Generator) -> Any:
    ids, am = _ids()
    mask = F.mask_tokens(ids, 0.3, special_ids=[0, 1], attention_mask=am, generator=_keyed(4))
    return ids.masked_fill(mask, 4), mask  # replace_prob=1: corrupt draws nothing


def _keyed(batch: int) -> KeyedGenerator:
    """The source of the first call of a ``keyed=True`` module: (seed, rank, worker, call, row)
    with rank 0 and no DataLoader worker (-1)."""
    return KeyedGenerator(hash_keys(SEED, 0, -1, 0, torch.arange(batch)))


CASES: dict[str, Case] = {
    "FeatureMask": (
        lambda: mnn.FeatureMask(0.3, dims=-1, seed=SEED),
        lambda m: m(X),
        lambda g: F.mask_features(X, 0.3, dims=-1, generator=g),
    ),
    "TokenMask": (
        lambda: mnn.TokenMask(
            0.3,
            mask_id=4,
            special_ids=[0, 1],
            vocab_size=50,
            replace_prob=0.8,
            random_prob=0.1,
            seed=SEED,
        ),  # fmt: skip
        lambda m: m(*_ids()),
        _token_functional,
    ),
    "PatchMask": (
        lambda: mnn.PatchMask(0.5, value=-1.0, seed=SEED),
        lambda m: m(X),
        lambda g: (lambda mk: (_fill(X, mk, -1.0), mk))(F.mask_patches(3, 64, 0.5, generator=g)),
    ),
    "PatchMask(drop)": (
        lambda: mnn.PatchMask(0.25, drop=True, seed=SEED),
        lambda m: m(X),
        lambda g: (
            lambda mk: (X.gather(1, F.keep_indices(mk)[0].unsqueeze(-1).expand(-1, -1, 8)), mk)
        )(F.mask_patches(3, 64, 0.25, generator=g)),
    ),
    "PatchMask(prefix)": (
        lambda: mnn.PatchMask(0.5, drop=True, num_prefix_tokens=2, seed=SEED),
        lambda m: m(X),
        _prefix_functional,
    ),
    "PatchMask(keyed)": (
        lambda: mnn.PatchMask(0.5, keyed=True, seed=SEED),
        lambda m: m(X),
        lambda g: (lambda mk: (_fill(X, mk), mk))(F.mask_patches(3, 64, 0.5, generator=_keyed(3))),
    ),
    "BlockPatchMask": (
        lambda: mnn.BlockPatchMask(0.4, grid=8, seed=SEED),
        lambda m: m(X),
        lambda g: (lambda mk: (_fill(X, mk), mk))(
            F.mask_blocks(3, (8, 8), round(0.4 * 64), generator=g).view(3, 64)
        ),
    ),
    "Erase": (
        lambda: mnn.Erase(0.7, value="random", seed=SEED),
        lambda m: m(IMAGES),
        lambda g: F.erase(IMAGES, p=0.7, value="random", generator=g),
    ),
    "Erase(one image)": (
        lambda: mnn.Erase(0.7, batched=False, seed=SEED),
        lambda m: m(IMAGES[0]),
        lambda g: F.erase(IMAGES[0], p=0.7, batched=False, generator=g),
    ),
    "SpecAugment(rate)": (
        lambda: mnn.SpecAugment(
            0.3, freq_masks=2, freq_width=6, time_masks=10, time_width=8, value="mean", seed=SEED
        ),  # fmt: skip
        lambda m: m(SPEC, lengths=LENGTHS),
        _spec_augment_rate_functional,
    ),
    "SpecAugment(policy)": (  # the policy's time width (100) is capped at the 60-frame clip
        lambda: mnn.SpecAugment(policy="LD", seed=SEED),
        lambda m: m(SPEC, lengths=LENGTHS),
        lambda g: F.spec_augment(SPEC, policy="LD", lengths=LENGTHS, generator=g),
    ),
    "SpecAugment": (
        lambda: mnn.SpecAugment(
            freq_masks=2, freq_width=6, time_masks=3, time_width=0.1, value="mean", seed=SEED
        ),  # fmt: skip
        lambda m: m(SPEC, lengths=LENGTHS),
        lambda g: F.spec_augment(
            SPEC,
            freq_masks=2,
            freq_width=6,
            time_masks=3,
            time_width=0.1,
            value="mean",
            lengths=LENGTHS,
            generator=g,
        ),  # fmt: skip
    ),
    "TimeSpanMask": (
        lambda: mnn.TimeSpanMask(0.4, span=5, seed=SEED),
        lambda m: m(X[:, :60], lengths=LENGTHS),
        _time_spans_functional,
    ),
    "TokenDrop": (  # returns (kept, index) when asked, the kept tokens alone otherwise
        lambda: mnn.TokenDrop(0.25, num_prefix_tokens=1, seed=SEED),
        lambda m: m(X, return_indices=True),
        lambda g: F.drop_tokens(X, 0.25, num_prefix_tokens=1, generator=g),
    ),
    "TokenMask(keyed)": (
        lambda: mnn.TokenMask(0.3, mask_id=4, special_ids=[0, 1], keyed=True, seed=SEED),
        lambda m: m(*_ids()),
        _keyed_token_functional,
    ),
}


def _maskers() -> set[str]:
    return {
        name
        for name, obj in vars(mnn).items()
        if inspect.isclass(obj) and issubclass(obj, mnn.MaskModule) and obj is not mnn.MaskModule
    }


def test_every_masker_has_a_parity_case() -> None:
    covered = {name.split("(")[0] for name in CASES}
    assert _maskers() <= covered, f"no parity case for {_maskers() - covered}"


def _flat(out: Any) -> list[torch.Tensor]:
    return [t for t in (out if isinstance(out, tuple) else (out,)) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_returns_exactly_what_its_functional_returns(name: str) -> None:
    make, call_module, call_functional = CASES[name]
    got, want = _flat(call_module(make())), _flat(call_functional(_gen()))
    assert len(got) == len(want) >= 2
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_with_return_mask_false_returns_the_output_alone(name: str) -> None:
    if name == "TokenDrop":
        pytest.skip("TokenDrop returns the kept tokens alone unless return_indices=True")
    make, call_module, call_functional = CASES[name]
    m = make()
    m.return_mask = False
    got, want = call_module(m), _flat(call_functional(_gen()))[0]
    assert isinstance(got, torch.Tensor) and torch.equal(got, want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_in_eval_masks_nothing(name: str) -> None:
    make, call_module, _ = CASES[name]
    m = make().eval()
    out = call_module(m)
    if name == "TokenDrop":  # keeps every token, in order
        assert torch.equal(out[0], X) and torch.equal(out[1][0], torch.arange(X.shape[1]))
        return
    masks = [t for t in _flat(out) if t.dtype == torch.bool]
    assert masks and not any(bool(t.any()) for t in masks)
