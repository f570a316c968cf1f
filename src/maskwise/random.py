"""Randomness for maskwise: one entry point for every draw, two kinds of source.

Every random function in maskwise draws through :func:`uniform` or :func:`integers`, which accept

* a ``torch.Generator`` (or ``None`` for torch's global generator), the usual stateful stream; or
* a :class:`KeyedGenerator`, a *counter-based* source: the numbers of row ``b`` are a pure function
  of ``keys[b]``, of how many draws were made before, and of the position inside the row. A mask
  drawn with it depends on nothing else: not on which other rows share the batch, not on how much
  padding the batch has, not on the DataLoader worker, the number of workers, where a run resumed,
  or the device (the hash is the same integer arithmetic on CPU and CUDA).

The collators use :class:`KeyedGenerator` with ``keys = hash_keys(seed, epoch, example_index)``,
which makes every mask a pure function of ``(seed, epoch, example index)``.

The hash is SplitMix64's finaliser (Steele, Lea and Flood, 2014) on int64 tensors; right shifts
are made logical with a bit mask because torch's ``>>`` on int64 is arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "DeviceGenerators",
    "distributed_rank",
    "KeyedGenerator",
    "hash_keys",
    "integers",
    "mix64",
    "seed_from_global",
    "uniform",
]


def _signed(x: int) -> int:
    """Reinterpret an unsigned 64-bit constant as a signed int64."""
    return x - (1 << 64) if x >= (1 << 63) else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_GOLDEN_T = torch.tensor(_GOLDEN, dtype=torch.long)  # the same, for tensor arithmetic
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser, elementwise on an int64 tensor (wrapping arithmetic).

    >>> int(mix64(torch.tensor([1]))[0]) & (2**64 - 1) == 0x5692161D100B05E5
    True
    """
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def hash_keys(*parts: int | torch.Tensor) -> torch.Tensor:
    """Hash integers or int64 tensors (broadcast together) into one int64 key per element.

    The order of ``parts`` matters. Used to build :class:`KeyedGenerator` keys, e.g.
    ``hash_keys(seed, epoch, index)``.

    >>> a = hash_keys(0, 1, torch.tensor([5, 6]))
    >>> b = hash_keys(0, 1, torch.tensor([6]))
    >>> bool(a[1] == b[0]), bool(a[0] == a[1])
    (True, False)
    """
    device = next((p.device for p in parts if isinstance(p, torch.Tensor)), torch.device("cpu"))
    key = torch.zeros((), dtype=torch.long, device=device)
    for p in parts:
        p_t = torch.as_tensor(p, device=device)
        if p_t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"hash_keys takes integers ({p_t.dtype} given).")
        key = mix64(key * 31 + _GOLDEN + p_t.to(torch.long))
    return key


class KeyedGenerator:
    """Counter-based random source with one key per batch row.

    Args:
        keys: int64 tensor of shape (B,), e.g. ``hash_keys(seed, epoch, example_index)``.

    Draw ``d`` (0, 1, 2, ... in call order) gives element ``(b, *pos)`` the value
    ``mix64(mix64(keys[b] + d * C) + flat(pos) * C)``, where ``flat(pos)`` is the position's index
    in the row's row-major order. Two batches that share a row key and a row shape therefore draw
    the same numbers for that row, whatever else is in the batch. For 2-D draws ``(B, L)`` the
    value at ``(b, j)`` does not depend on ``L`` either, so padding never changes a row's mask.

    Row 8 draws the same numbers alone or next to row 7, and with more padding:

    >>> together = uniform((2, 5), generator=KeyedGenerator(torch.tensor([7, 8])))
    >>> alone = uniform((1, 3), generator=KeyedGenerator(torch.tensor([8])))
    >>> torch.equal(together[1, :3], alone[0])
    True
    """

    def __init__(self, keys: torch.Tensor) -> None:
        if not isinstance(keys, torch.Tensor) or keys.dtype != torch.long or keys.dim() != 1:
            raise TypeError(
                "KeyedGenerator keys must be an int64 tensor of shape (B,) "
                f"({getattr(keys, 'dtype', type(keys).__name__)} "
                f"{tuple(getattr(keys, 'shape', ()))} given)."
            )
        self.keys = keys
        self.draws = 0

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def bits(self, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """Return int64 random bits of ``shape`` (first dim must equal ``len(keys)``)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) == 0 or shape[0] != self.keys.shape[0]:
            raise ValueError(
                f"A KeyedGenerator with {self.keys.shape[0]} keys draws shapes "
                f"(B={self.keys.shape[0]}, ...) ({shape} requested)."
            )
        device = self.keys.device if device is None else torch.device(device)
        keys = self.keys.to(device)
        row = math.prod(shape[1:])
        offset = _signed((self.draws * (_GOLDEN % (1 << 64))) % (1 << 64))  # wrap like int64
        stream = mix64(keys + offset)  # (B,)
        self.draws += 1
        # The constant as a module-level tensor, not a Python int: Inductor folds an int64
        # literal this large into index arithmetic and overflows or corrupts the heap on CPU.
        golden = _GOLDEN_T.to(device)
        pos = torch.arange(row, dtype=torch.long, device=device) * golden  # (row,)
        return mix64(stream[:, None] + pos[None, :]).reshape(shape)

    def __repr__(self) -> str:
        return f"KeyedGenerator(rows={self.keys.shape[0]}, draws={self.draws})"


def uniform(
    shape: Sequence[int],
    *,
    generator: torch.Generator | KeyedGenerator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform numbers in the open interval (0, 1) from either kind of source.

    Open at both ends so ``log(u)`` and ``log(-log(u))`` are always finite.

    >>> g = torch.Generator().manual_seed(0)
    >>> u = uniform((2, 3), generator=g)
    >>> u.shape, bool(((u > 0) & (u < 1)).all())
    (torch.Size([2, 3]), True)
    """
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"uniform draws float32 or float64 ({dtype} given).")
    if isinstance(generator, KeyedGenerator):
        bits = generator.bits(shape, device)
        # (m + 0.5) / 2^k with m < 2^k takes k + 1 significant bits: k = 23 for float32 and 52
        # for float64 keep it exact, so u lies in [2^-(k+1), 1 - 2^-(k+1)], never 0 or 1.
        if dtype == torch.float64:
            return (_srl(bits, 12).to(torch.float64) + 0.5) * 2.0**-52
        return (_srl(bits, 41).to(torch.float32) + 0.5) * 2.0**-23
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, a maskwise KeyedGenerator or None "
            f"({type(generator).__name__} given)."
        )
    u = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    # torch.rand is [0, 1): move an exact 0 to the smallest positive value.
    return u.clamp_min_(torch.finfo(dtype).tiny)


def integers(
    shape: Sequence[int],
    high: int,
    *,
    generator: torch.Generator | KeyedGenerator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform int64 in ``[0, high)`` from either kind of source."""
    if high <= 0:
        raise ValueError(f"high must be positive ({high} given).")
    if isinstance(generator, KeyedGenerator):
        # 63 random bits modulo high: bias below high / 2**63.
        return _srl(generator.bits(shape, device), 1) % high
    return torch.randint(high, tuple(shape), generator=generator, device=device)


def distributed_rank() -> int:
    """This process's torch.distributed rank, 0 when not initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return 0


def seed_from_global() -> int:
    """A 62-bit seed drawn from torch's global generator (reproducible under
    ``torch.manual_seed``).
    """
    return int(torch.randint(0, 2**62, (), dtype=torch.long))


class DeviceGenerators:
    """One seeded ``torch.Generator`` per device, created on first use.

    Modules own one of these so that they draw on the device of their input (CPU and CUDA need
    different generators) and never touch the global generator. Under ``torch.distributed``,
    rank ``r > 0`` seeds its generators with ``hash_keys(seed, r)``. ``state_dict()`` holds the
    seed and every generator's state, so a restored module draws exactly what it would have.

    Args:
        seed: int, or None to draw one from torch's global generator.
    """

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None ({seed!r} given).")
        self.seed = seed_from_global() if seed is None else int(seed)
        self._generators: dict[str, torch.Generator] = {}

    @staticmethod
    def _key(device: torch.device | str) -> str:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return str(device)

    def get(self, device: torch.device | str) -> torch.Generator:
        key = self._key(device)
        g = self._generators.get(key)
        if g is None:
            g = torch.Generator(device=key)
            # Under torch.distributed every rank gets its own stream from the same seed, so
            # ranks holding different data never draw identical masks.
            rank = distributed_rank()
            g.manual_seed(self.seed if rank == 0 else int(hash_keys(self.seed, rank)) & (2**63 - 1))
            self._generators[key] = g
        return g

    def state_dict(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "states": {k: g.get_state() for k, g in self._generators.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.seed = int(state["seed"])  # type: ignore[call-overload]
        self._generators = {}
        for key, st in state["states"].items():  # type: ignore[attr-defined]
            self.get(key).set_state(st)

    def __repr__(self) -> str:
        return f"DeviceGenerators(seed={self.seed})"
