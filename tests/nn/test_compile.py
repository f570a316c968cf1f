"""Issue 12, point 9: what ``torch.compile(fullgraph=True)`` traces, pinned with Dynamo.

A ``torch.Generator`` is opaque to Dynamo, so a masker compiles only with ``keyed=True`` (its
draws are then integer hashing on tensors). The cases below compile without a graph break and
give exactly the masks of the same module run eagerly; the known breaks (each a change to
``maskwise.functional`` or a trait of torch) are listed as expected failures with their cause.
Backend ``"eager"`` (Dynamo's capture only) keeps the tests fast; one case runs AOTAutograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import maskwise.nn as mnn
from maskwise.dynamic import ReliabilityController, cosine

pytestmark = pytest.mark.slow  # Dynamo traces each case: ~0.5 s each
DYNAMO = torch._dynamo.exc.TorchDynamoException  # a graph break under fullgraph=True

K = dict(keyed=True, seed=0)
IDS = torch.randint(5, 50, (4, 12), generator=torch.Generator().manual_seed(0))
TOKENS = torch.randn(4, 1 + 16, 8, generator=torch.Generator().manual_seed(1))  # [CLS] + 16
IMAGES = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
SPEC = torch.randn(4, 40, 60, generator=torch.Generator().manual_seed(3))
LENGTHS = torch.tensor([60, 41, 17, 60])

# name -> (make the module, its inputs)
Case = tuple[Callable[[], nn.Module], tuple[Any, ...]]
COMPILES: dict[str, Case] = {
    "FeatureMask": (lambda: mnn.FeatureMask(0.3, dims=-1, **K), (TOKENS,)),
    "TokenMask": (lambda: mnn.TokenMask(0.3, mask_id=4, special_ids=[0, 1], **K), (IDS,)),
    "PatchMask": (lambda: mnn.PatchMask(0.5, mask_token_dim=8, **K), (TOKENS,)),
    "PatchMask(drop, prefix)": (
        lambda: mnn.PatchMask(0.5, drop=True, num_prefix_tokens=1, **K),
        (TOKENS,),
    ),
    "BlockPatchMask": (lambda: mnn.BlockPatchMask(0.4, grid=4, min_block=2, **K), (TOKENS[:, 1:],)),
    "SpecAugment(lengths)": (lambda: mnn.SpecAugment(policy="LD", **K), (SPEC, LENGTHS)),
    "TimeSpanMask": (lambda: mnn.TimeSpanMask(0.4, span=4, **K), (TOKENS,)),
    "Erase": (lambda: mnn.Erase(0.7, value="random", **K), (IMAGES,)),
    "Erase(one image)": (
        lambda: mnn.Erase(0.7, batched=False, return_mask=False, **K),
        (IMAGES[0],),
    ),
    "SpecAugment": (lambda: mnn.SpecAugment(policy="LD", value="mean", **K), (SPEC,)),
    "DynamicMask(schedule)": (
        lambda: mnn.DynamicMask(mnn.TokenMask(0.0, mask_id=4, **K), cosine(0.1, 0.5, 3)),
        (IDS,),
    ),
}

# name -> (make, inputs, why it breaks and what would fix it)
BREAKS: dict[str, tuple[Callable[[], nn.Module], tuple[Any, ...], str]] = {
    "default generator": (
        lambda: mnn.TokenMask(0.3, mask_id=4, seed=0),
        (IDS,),
        "torch.Generator is opaque to Dynamo: use keyed=True",
    ),
    "TokenMask(80/10/10)": (
        lambda: mnn.TokenMask(
            0.3, mask_id=4, vocab_size=50, replace_prob=0.8, random_prob=0.1, **K
        ),
        (IDS,),
        "corrupt: the allowed random ids come from nonzero() (a data-dependent shape)",
    ),
    "SpecAugment(rate 0.3)": (
        lambda: mnn.SpecAugment(0.3, policy="LD", **K),
        (SPEC,),
        "0.3 * 2 masks is not whole: the module rounds the count with a CPU generator draw",
    ),
}


def _tensors(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple) else [out]


def _assert_same(eager: Any, compiled: Any) -> None:
    for a, b in zip(_tensors(eager), _tensors(compiled), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a, b)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.parametrize("name", sorted(COMPILES))
def test_keyed_masker_compiles_without_graph_breaks(name: str) -> None:
    make, inputs = COMPILES[name]
    eager, compiled = make(), make()
    if isinstance(compiled, mnn.DynamicMask):
        compiled.masker.load_state_dict(eager.masker.state_dict())  # one mask token, if any
    else:
        compiled.load_state_dict(eager.state_dict())
    run = torch.compile(compiled, fullgraph=True, backend="eager")
    for _ in range(3):  # new masks every call, the same as eagerly (the rate may move)
        _assert_same(eager(*inputs), run(*inputs))


def test_keyed_masker_compiles_through_aot_autograd_with_its_counter() -> None:
    eager, compiled = (mnn.PatchMask(0.5, drop=True, num_prefix_tokens=1, **K) for _ in range(2))
    run = torch.compile(compiled, fullgraph=True, backend="aot_eager")
    first, second = run(TOKENS), run(TOKENS)
    _assert_same(eager(TOKENS), first)
    _assert_same(eager(TOKENS), second)
    assert int(compiled.calls) == 2 and not torch.equal(first[1], second[1])


def test_dynamic_mask_with_a_controller_compiles_its_masker() -> None:
    # The controller's rate is read from shared memory once per step (a host read); compile the
    # masker in place and let DynamicMask set its rate eagerly.
    def make() -> mnn.DynamicMask:
        c = ReliabilityController(0.3, target=0.5, direction="seed", min_rate=0.0, max_rate=0.9)
        return mnn.DynamicMask(mnn.TokenMask(0.3, mask_id=4, **K), c)

    eager, compiled = make(), make()
    compiled.masker.compile(fullgraph=True, backend="eager")
    for accuracy in (1.0, 0.0, 1.0):
        _assert_same(eager(IDS), compiled(IDS))
        eager.controller.update(accuracy)
        compiled.controller.update(accuracy)
    assert isinstance(compiled.masker, mnn.TokenMask)


@pytest.mark.parametrize(
    "make, inputs",
    [
        (lambda: mnn.TokenMask(0.3, mask_id=4, seed=0), (IDS,)),
        (lambda: mnn.SpecAugment(policy="LD", seed=0), (SPEC, LENGTHS)),
        (lambda: mnn.TimeSpanMask(0.4, span=4, seed=0), (TOKENS, LENGTHS[:4].clamp_max(17))),
    ],
    ids=["TokenMask", "SpecAugment", "TimeSpanMask"],
)
def test_every_masker_compiles_in_eval(make: Callable[[], nn.Module], inputs: Any) -> None:
    m = make().eval()
    out = torch.compile(m, fullgraph=True, backend="eager")(*inputs)
    assert _tensors(out)[0] is not None


@pytest.mark.filterwarnings("ignore:.*lru_cache:UserWarning")  # Dynamo on corrupt's id cache
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(reason=BREAKS[n][2], raises=DYNAMO)) for n in BREAKS],
)
def test_known_graph_breaks(name: str) -> None:
    make, inputs, _ = BREAKS[name]
    torch.compile(make(), fullgraph=True, backend="eager")(*inputs)


@pytest.mark.parametrize(
    "name", ["FeatureMask", "PatchMask(drop, prefix)", "BlockPatchMask", "Erase"]
)
def test_keyed_masker_compiles_with_inductor(name: str) -> None:
    """The default backend too: the keyed hash's int64 constants once overflowed Inductor's
    index arithmetic (OverflowError) or corrupted the heap on CPU."""
    if name not in COMPILES:
        pytest.skip(f"{name} is not a compiling case")
    make, inputs = COMPILES[name]
    eager, compiled = make(), make()
    compiled.load_state_dict(eager.state_dict())
    run = torch.compile(compiled, fullgraph=True)
    for _ in range(2):  # masks exactly; fused float arithmetic (random fill) to rounding
        for a, b in zip(_tensors(eager(*inputs)), _tensors(run(*inputs)), strict=True):
            if a.is_floating_point():
                torch.testing.assert_close(a, b)
            else:
                assert torch.equal(a, b)
