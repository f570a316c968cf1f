"""The image masking modules: PatchMask, BlockPatchMask, Erase."""

import copy

import pytest
import torch

import maskwise as mw


def seeded(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# PatchMask
# --------------------------------------------------------------------------------------------


def test_patch_mask_fills_with_value():
    pm = mw.nn.PatchMask(0.75, value=-3.0, seed=0)
    x = torch.randn(4, 16, 8)
    out, mask = pm(x)
    assert mask.shape == (4, 16) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [12] * 4
    assert (out[mask] == -3.0).all()
    assert torch.equal(out[~mask], x[~mask])
    # The mask is the functional one, drawn from a generator seeded with the module's seed.
    assert torch.equal(mask, mw.mask_patches(4, 16, 0.75, generator=seeded(0)))


def test_patch_mask_learned_token_is_used_and_trained():
    pm = mw.nn.PatchMask(0.5, mask_token_dim=8, seed=1)
    assert isinstance(pm.mask_token, torch.nn.Parameter) and pm.mask_token.shape == (8,)
    assert "mask_token" in dict(pm.named_parameters())
    x = torch.randn(3, 10, 8, requires_grad=True)
    out, mask = pm(x)
    assert torch.equal(out[mask], pm.mask_token.detach().expand(int(mask.sum()), 8))
    assert torch.equal(out[~mask], x[~mask])
    weights = torch.randn(3, 10, 8)
    (out * weights).sum().backward()
    # d/d token = sum of the weights over the masked positions; x gets gradient only where visible.
    # (float32 sums in another order: an absolute tolerance, as entries can be near zero)
    assert torch.allclose(pm.mask_token.grad, weights[mask].sum(0), atol=1e-5)
    assert torch.equal(x.grad[mask], torch.zeros_like(x.grad[mask]))
    assert torch.equal(x.grad[~mask], weights[~mask])


def test_patch_mask_drop_returns_visible_patches_in_order():
    pm = mw.nn.PatchMask(0.75, drop=True, seed=2)
    B, N, D = 5, 20, 3
    x = torch.arange(N, dtype=torch.float32).view(1, N, 1).expand(B, N, D) + 100 * torch.arange(
        B
    ).view(B, 1, 1)
    out, mask = pm(x)
    assert out.shape == (B, 5, D) and mask.sum(1).tolist() == [15] * B
    ids_keep, _ = mw.keep_indices(mask)
    assert torch.equal(out, x.gather(1, ids_keep[..., None].expand(-1, -1, D)))
    for b in range(B):
        visible = [j for j in range(N) if not mask[b, j]]
        assert out[b, :, 0].tolist() == [100.0 * b + j for j in visible]  # increasing patch order


def test_patch_mask_passes_scores():
    scores = torch.stack([torch.randperm(12, generator=seeded(b)) for b in range(3)]).float()
    out, mask = mw.nn.PatchMask(0.25, hard_fraction=1.0, seed=3)(
        torch.randn(3, 12, 4), scores=scores
    )
    top3 = scores.argsort(1, descending=True).argsort(1) < 3
    assert torch.equal(mask, top3)


def test_patch_mask_eval_and_zero_rate_are_identity():
    x = torch.randn(2, 9, 4)
    for pm in (
        mw.nn.PatchMask(0.5, seed=0).eval(),
        mw.nn.PatchMask(0.0, seed=0),
        mw.nn.PatchMask(0.5, drop=True, seed=0).eval(),
    ):
        out, mask = pm(x)
        assert out is x
        assert mask.shape == (2, 9) and mask.dtype == torch.bool and not mask.any()


def test_patch_mask_bad_input():
    pm = mw.nn.PatchMask(0.5, seed=0)
    with pytest.raises(ValueError, match=r"\(2, 9\)"):
        pm(torch.randn(2, 9))
    with pytest.raises(ValueError, match=r"\(2, 8\)"):
        pm(torch.randn(2, 9, 4), scores=torch.randn(2, 8))
    with pytest.raises(ValueError, match="1.5"):
        mw.nn.PatchMask(1.5)
    with pytest.raises(ValueError, match="2.0"):
        mw.nn.PatchMask(0.5, hard_fraction=2.0)
    with pytest.raises(TypeError, match="seed"):
        mw.nn.PatchMask(0.5, seed=1.5)


# --------------------------------------------------------------------------------------------
# BlockPatchMask
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [14, (6, 9)])
def test_block_patch_mask_counts_and_wrapper(grid):
    H, W = (grid, grid) if isinstance(grid, int) else grid
    bm = mw.nn.BlockPatchMask(0.4, grid=grid, min_block=4, value=7.0, seed=4)
    x = torch.randn(3, H * W, 5)
    out, mask = bm(x)
    k = round(0.4 * H * W)
    assert mask.shape == (3, H * W) and mask.sum(1).tolist() == [k] * 3
    assert (out[mask] == 7.0).all() and torch.equal(out[~mask], x[~mask])
    want = mw.mask_blocks(3, (H, W), k, min_block=4, generator=seeded(4)).view(3, H * W)
    assert torch.equal(mask, want)  # row-major over the grid


def test_block_patch_mask_learned_token_and_eval():
    bm = mw.nn.BlockPatchMask(0.5, grid=(4, 6), min_block=2, mask_token_dim=5, seed=5)
    x = torch.randn(2, 24, 5)
    out, mask = bm(x)
    assert mask.sum(1).tolist() == [12, 12]
    assert torch.equal(out[mask], bm.mask_token.detach().expand(24, 5))
    out.sum().backward()
    assert torch.allclose(bm.mask_token.grad, torch.full((5,), 24.0))
    bm.eval()
    out, mask = bm(x)
    assert out is x and mask.shape == (2, 24) and not mask.any()


def test_block_patch_mask_bad_shapes():
    bm = mw.nn.BlockPatchMask(0.4, grid=14, seed=0)
    with pytest.raises(ValueError, match="195"):
        bm(torch.randn(2, 195, 8))
    with pytest.raises(ValueError, match=r"\(2, 196\)"):
        bm(torch.randn(2, 196))
    with pytest.raises(ValueError, match="195"):
        bm.eval()(torch.randn(2, 195, 8))


# --------------------------------------------------------------------------------------------
# Erase
# --------------------------------------------------------------------------------------------


def test_erase_module_wraps_functional():
    er = mw.nn.Erase(0.5, scale=(0.1, 0.2), ratio=(0.5, 2.0), value=[1.0, 2.0, 3.0], seed=6)
    x = torch.randn(16, 3, 20, 20)
    out, m = er(x)
    want_out, want_m = mw.erase(
        x, p=0.5, scale=(0.1, 0.2), ratio=(0.5, 2.0), value=[1.0, 2.0, 3.0], generator=seeded(6)
    )
    assert torch.equal(m, want_m) and torch.equal(out, want_out)
    assert 0 < int(m.flatten(1).any(1).sum()) < 16


def test_erase_module_3d_and_eval():
    er = mw.nn.Erase(1.0, seed=7)
    x = torch.randn(4, 16, 16)
    out, m = er(x)
    assert m.shape == (4, 16, 16) and m.flatten(1).any(1).all()
    assert (out[m] == 0).all() and torch.equal(out[~m], x[~m])
    for mod in (er.eval(), mw.nn.Erase(0.0, seed=7)):
        out, m = mod(x)
        assert out is x and m.shape == (4, 16, 16) and not m.any()


def test_erase_module_bad_shapes():
    er = mw.nn.Erase(1.0, seed=0)
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        er(torch.randn(16, 16))
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 8, 8\)"):
        er(torch.randn(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="1.5"):
        mw.nn.Erase(1.5)


def test_erase_module_bad_shapes_in_eval():
    # PatchMask and BlockPatchMask check shapes in eval too; a silent no-op on a wrong shape is
    # what STYLE.md asks to avoid.
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        mw.nn.Erase(1.0, seed=0).eval()(torch.randn(16, 16))


# --------------------------------------------------------------------------------------------
# Shared module behaviour: seeds, state_dict, repr, global RNG
# --------------------------------------------------------------------------------------------

MODULES = {
    "PatchMask": (lambda seed: mw.nn.PatchMask(0.6, seed=seed), lambda: torch.randn(4, 25, 3)),
    "PatchMask-drop": (
        lambda seed: mw.nn.PatchMask(0.6, drop=True, seed=seed),
        lambda: torch.randn(4, 25, 3),
    ),
    "BlockPatchMask": (
        lambda seed: mw.nn.BlockPatchMask(0.4, grid=(5, 6), min_block=4, seed=seed),
        lambda: torch.randn(4, 30, 3),
    ),
    "Erase": (
        lambda seed: mw.nn.Erase(0.7, value="random", seed=seed),
        lambda: torch.randn(8, 3, 16, 16),
    ),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_seeded_determinism_and_global_rng(name):
    make, data = MODULES[name]
    x = data()
    state = torch.get_rng_state()
    a, b = make(3), make(3)
    ma1, mb1 = a(x)[1], b(x)[1]
    ma2 = a(x)[1]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(ma1, mb1)
    assert not torch.equal(ma1, ma2)  # a new mask every step
    assert not torch.equal(ma1, make(4)(x)[1])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_state_dict_restores_generator(name):
    make, data = MODULES[name]
    x = data()
    a = make(11)
    a(x)
    saved = copy.deepcopy(a.state_dict())
    expected_out, expected_mask = a(x)
    b = make(99)
    b.load_state_dict(saved)
    out, mask = b(x)
    assert torch.equal(mask, expected_mask) and torch.equal(out, expected_out)


def test_module_state_dict_keeps_the_learned_token():
    a = mw.nn.PatchMask(0.5, mask_token_dim=4, seed=0)
    b = mw.nn.PatchMask(0.5, mask_token_dim=4, seed=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.mask_token, b.mask_token)


@pytest.mark.parametrize(
    "module, expected",
    [
        (
            mw.nn.PatchMask(0.75, drop=True, hard_fraction=0.5, seed=3),
            ["rate=0.75", "drop=True", "hard_fraction=0.5", "mask_token=False", "seed=3"],
        ),
        (mw.nn.PatchMask(0.5, mask_token_dim=4, seed=3), ["mask_token=True"]),
        (
            mw.nn.BlockPatchMask(0.4, grid=14, min_block=8, seed=3),
            ["rate=0.4", "grid=(14, 14)", "min_block=8", "seed=3"],
        ),
        (
            mw.nn.Erase(0.5, scale=(0.1, 0.2), ratio=(0.5, 2.0), value="random", seed=3),
            ["rate=0.5", "scale=(0.1, 0.2)", "ratio=(0.5, 2.0)", "value='random'"],
        ),
    ],
    ids=["PatchMask", "PatchMask-token", "BlockPatchMask", "Erase"],
)
def test_extra_repr_shows_settings(module, expected):
    text = repr(module)
    for item in expected:
        assert item in text, (item, text)


def test_erase_extra_repr_shows_seed_like_the_other_modules():
    assert "seed=3" in repr(mw.nn.Erase(0.5, seed=3))


# --------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_vision_maskers_on_cuda():
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    m = mw.mask_patches(8, 196, 0.75, device=dev, generator=g)
    assert m.device.type == "cuda" and m.sum(1).tolist() == [147] * 8
    scores = torch.rand(8, 196, device=dev)
    m = mw.mask_patches(
        8, 196, torch.full((8,), 0.5, device=dev), scores=scores, hard_fraction=1.0, generator=g
    )
    assert m.device.type == "cuda"
    assert torch.equal(m, scores.argsort(1, descending=True).argsort(1) < 98)
    ids_keep, ids_restore = mw.keep_indices(m)
    assert ids_keep.device.type == "cuda" and ids_keep.shape == (8, 98)
    b = mw.mask_blocks(8, 14, 75, device=dev, generator=g)
    assert b.device.type == "cuda" and b.sum((1, 2)).tolist() == [75] * 8
    c = mw.mask_coarse(8, (7, 10), 0.5, unit=3, device=dev, generator=g)
    assert c.device.type == "cuda" and c.shape == (8, 7, 10)
    x = torch.randn(8, 3, 32, 32, device=dev)
    out, em = mw.erase(x, p=1.0, value="random", generator=g)
    assert out.device.type == "cuda" and em.device.type == "cuda" and em.flatten(1).any(1).all()
    # KeyedGenerator: the same masks on CUDA as on CPU.
    keys = mw.random.hash_keys(0, torch.arange(8))
    cpu = mw.mask_patches(8, 196, 0.75, generator=mw.random.KeyedGenerator(keys))
    gpu = mw.mask_patches(
        8, 196, 0.75, device=dev, generator=mw.random.KeyedGenerator(keys.to(dev))
    )
    assert torch.equal(cpu, gpu.cpu())
    # Modules draw on the input's device.
    pm = mw.nn.PatchMask(0.75, drop=True, seed=0).to(dev)
    xv, mask = pm(torch.randn(4, 196, 16, device=dev))
    assert (
        xv.device.type == "cuda" and xv.shape == (4, 49, 16) and mask.sum(1).tolist() == [147] * 4
    )
    bm = mw.nn.BlockPatchMask(0.4, grid=14, mask_token_dim=16, seed=0).to(dev)
    xb, mask = bm(torch.randn(4, 196, 16, device=dev))
    assert xb.device.type == "cuda" and mask.sum(1).tolist() == [78] * 4
    er = mw.nn.Erase(1.0, seed=0)
    xe, mask = er(x)
    assert xe.device.type == "cuda" and mask.device.type == "cuda" and mask.flatten(1).any(1).all()
