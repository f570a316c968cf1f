import pytest
import torch

from maskwise.random import DeviceGenerators, KeyedGenerator, hash_keys, integers, mix64, uniform

M = 2**64


def splitmix_finalizer(z: int) -> int:
    z %= M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % M
    return z ^ (z >> 31)


def test_mix64_matches_python_reference():
    xs = torch.randint(-(2**63), 2**63 - 1, (500,), generator=torch.Generator().manual_seed(0))
    got = mix64(xs)
    for x, y in zip(xs.tolist(), got.tolist()):
        assert y % M == splitmix_finalizer(x % M)


def test_keyed_uniform_properties():
    g = KeyedGenerator(hash_keys(0, torch.arange(200)))
    u = uniform((200, 1000), generator=g)
    assert ((u > 0) & (u < 1)).all()
    assert abs(u.mean().item() - 0.5) < 0.003  # std 0.29 / sqrt(2e5) = 6.5e-4
    assert abs(u.var().item() - 1 / 12) < 0.002
    # Neighbouring positions and rows are uncorrelated.
    a, b = u[:, :-1].flatten(), u[:, 1:].flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.01
    # Successive draws differ.
    assert not torch.equal(u, uniform((200, 1000), generator=g))


def test_keyed_rows_depend_only_on_their_key_and_position():
    k = hash_keys(5, torch.tensor([1, 2, 3]))
    wide = uniform((3, 50), generator=KeyedGenerator(k), dtype=torch.float64)
    narrow = uniform((1, 20), generator=KeyedGenerator(k[2:]), dtype=torch.float64)
    assert torch.equal(wide[2, :20], narrow[0])


def test_keyed_integers_range_and_uniformity():
    g = KeyedGenerator(hash_keys(1, torch.arange(100)))
    x = integers((100, 1000), 7, generator=g)
    assert x.min() >= 0 and x.max() < 7
    freq = torch.bincount(x.flatten(), minlength=7).float() / x.numel()
    assert torch.allclose(freq, torch.full((7,), 1 / 7), atol=0.005)


def test_keyed_generator_errors():
    with pytest.raises(TypeError, match="int64"):
        KeyedGenerator(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="2 keys"):
        uniform((3, 4), generator=KeyedGenerator(torch.tensor([1, 2])))
    with pytest.raises(TypeError, match="generator"):
        uniform((3, 4), generator=42)
    with pytest.raises(TypeError, match="integers"):
        hash_keys(1.5)


def test_hash_keys_order_matters_and_is_deterministic():
    assert int(hash_keys(1, 2)) != int(hash_keys(2, 1))
    assert int(hash_keys(1, 2)) == int(hash_keys(1, 2))


def test_device_generators_state_round_trip():
    gens = DeviceGenerators(7)
    a = torch.rand(5, generator=gens.get("cpu"))
    state = gens.state_dict()
    b = torch.rand(5, generator=gens.get("cpu"))
    other = DeviceGenerators(0)
    other.load_state_dict(state)
    assert torch.equal(torch.rand(5, generator=other.get("cpu")), b)
    assert not torch.equal(a, b)


def test_device_generators_seed_from_global_is_reproducible():
    torch.manual_seed(3)
    s1 = DeviceGenerators().seed
    torch.manual_seed(3)
    assert DeviceGenerators().seed == s1
    with pytest.raises(TypeError):
        DeviceGenerators("1")


def test_keyed_uniform_extremes_stay_open(monkeypatch):
    # All-ones and all-zeros bits are the extremes; u must stay strictly inside (0, 1).
    g = KeyedGenerator(torch.tensor([0, 1]))
    extremes = torch.tensor([[-1, 0]], dtype=torch.long).expand(2, 2)
    monkeypatch.setattr(g, "bits", lambda shape, device=None: extremes)
    for dtype in (torch.float32, torch.float64):
        u = uniform((2, 2), generator=g, dtype=dtype)
        assert (u < 1).all() and (u > 0).all(), dtype
    with pytest.raises(TypeError, match="float32 or float64"):
        uniform((2, 2), generator=g, dtype=torch.float16)
