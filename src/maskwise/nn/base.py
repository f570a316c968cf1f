"""The base of the masking modules and the replacement of masked vectors."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import get_worker_info

from maskwise._checks import check_flag, check_probability
from maskwise.random import DeviceGenerators, KeyedGenerator, distributed_rank, hash_keys

__all__ = ["MaskModule", "check_flag", "check_tokens", "fill_masked", "mask_token_parameter"]


def _worker_seed() -> int:
    """The DataLoader worker's seed (drawn afresh by the loader for each iterator, reproducible
    under ``torch.manual_seed``), as an int64; -1 outside DataLoader workers, and in code that
    ``torch.compile`` traces (Dynamo does not trace ``get_worker_info``; compiled maskers run in
    the training process)."""
    if torch.compiler.is_compiling():
        return -1
    info = get_worker_info()
    return -1 if info is None else int(info.seed) % 2**63


def check_module_rate(rate: Any, *, ranges: bool) -> Any:
    """A module's rate: a float in [0, 1] or, where the masker takes per-sample rates, a range
    ``(low, high)``."""
    if isinstance(rate, (tuple, list)):
        if not ranges:
            raise ValueError(
                f"this masker takes one rate per batch, not a range ({tuple(rate)!r} given): "
                "its masks need the same count in every row."
            )
        if len(rate) != 2:
            raise ValueError(f"a rate range must be a pair (low, high) ({rate!r} given).")
        low, high = check_probability("low", rate[0]), check_probability("high", rate[1])
        if low > high:
            raise ValueError(f"a rate range needs low <= high ({rate!r} given).")
        return (low, high)
    return check_probability("rate", rate)


class MaskModule(nn.Module):
    """Base of the masking modules: a rate, a seeded random source, train/eval logic.

    ``rate`` is the module's one knob that schedules and controllers move: the masked fraction
    for most modules, the probability of erasing for :class:`Erase`, the share of the
    configured masks for :class:`SpecAugment`.

    Random source (:meth:`generator`):

    * by default a seeded ``torch.Generator`` per device. In a DataLoader worker (a masker used
      as a Dataset transform or in a ``collate_fn``) each worker draws from its own stream,
      seeded from the module's seed and the worker's seed, as torch's global generator is; the
      module's own stream, in the main process, is left alone.
    * with ``keyed=True``, a counter-based :class:`~maskwise.random.KeyedGenerator`: row ``b`` of
      the ``n``-th call draws from ``hash(seed, rank, worker, n, b)``. The same masks on CPU and
      CUDA, and no ``torch.Generator``, so the module compiles with
      ``torch.compile(fullgraph=True)`` (``torch.Generator`` is opaque to Dynamo).

    Args:
        rate: the masking rate, in [0, 1], or (for maskers whose functional takes per-row
            rates: ``TokenMask``, ``FeatureMask``, ``PatchMask`` without ``drop``,
            ``TimeSpanMask``) a range ``(low, high)``: each sample draws its own rate.
        seed: seed of the random source (None: drawn from torch's global generator).
        keyed: draw from a counter-based key instead of a ``torch.Generator``.
        return_mask: ``forward`` returns ``(output, mask)`` (or its result tuple); False returns
            the output tensor alone, for ``nn.Sequential``, torchvision-style ``Compose`` and
            Dataset transforms.

    The seed, the generators' state and the call counter are part of ``state_dict()`` (as extra
    state), so a restored module continues with exactly the masks it would have drawn.
    """

    #: whether ``rate`` may be a range ``(low, high)`` (a rate per sample)
    takes_ranges: bool = False

    def __init__(
        self,
        rate: float | tuple[float, float],
        *,
        seed: int | None = None,
        keyed: bool = False,
        return_mask: bool = True,
    ) -> None:
        super().__init__()
        self.rate = check_module_rate(rate, ranges=self.takes_ranges)
        self.generators = DeviceGenerators(seed)
        self.keyed = check_flag("keyed", keyed)
        self.return_mask = check_flag("return_mask", return_mask)
        # Calls that drew from a keyed source: a buffer, so that it follows the module's device
        # and a compiled forward increments it in the graph.
        self.calls: torch.Tensor
        self.register_buffer("calls", torch.zeros((), dtype=torch.long), persistent=False)
        self._worker_streams: tuple[int, DeviceGenerators] | None = None

    def _rate_is_zero(self) -> bool:
        """Whether the rate is the number 0 (masks nothing). A per-sample rate tensor (B,), which
        :class:`~maskwise.nn.DynamicMask` sets with ``per_sample=True``, is passed on as it is."""
        return isinstance(self.rate, (int, float)) and self.rate == 0.0

    def generator(
        self, device: torch.device, batch: int | None = None
    ) -> torch.Generator | KeyedGenerator:
        """The random source of one call drawing on ``device`` for ``batch`` rows (``batch`` is
        needed with ``keyed=True``, whose keys are per row)."""
        if self.keyed:
            if batch is None:
                raise TypeError(f"{type(self).__name__}(keyed=True) draws per row: pass batch=.")
            rows = torch.arange(batch, device=device)
            seed, rank = self.generators.seed, distributed_rank()
            keys = hash_keys(seed, rank, _worker_seed(), self.calls.to(device), rows)  # (B,)
            self.calls.add_(1)
            return KeyedGenerator(keys)
        return self._streams().get(device)

    def _streams(self) -> DeviceGenerators:
        """The module's generators, or in a DataLoader worker that worker's own: copies of one
        stream in every worker would mask the k-th item of each worker alike."""
        worker = _worker_seed()
        if worker < 0:
            return self.generators
        if self._worker_streams is None or self._worker_streams[0] != worker:
            seed = int(hash_keys(self.generators.seed, worker)) % 2**63
            self._worker_streams = (worker, DeviceGenerators(seed))
        return self._worker_streams[1]

    def maskable(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor | None:
        """Where this masker may mask for the arguments of a ``forward`` call: a bool tensor
        broadcastable to the mask ``forward`` returns (False on padding, special tokens, prefix
        tokens), or None when every position may be masked. Monitors report the masked
        fraction over these positions."""
        return None

    def _output(self, result: Any) -> Any:
        """What ``forward`` returns from ``result``, a tuple whose first item is the masked
        input: ``result`` itself, or that first item alone with ``return_mask=False``."""
        return result if self.return_mask else result[0]

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "rate": list(self.rate) if isinstance(self.rate, tuple) else self.rate,
            "generators": self.generators.state_dict(),
            "calls": int(self.calls),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        rate = state["rate"]
        self.rate = (float(rate[0]), float(rate[1])) if isinstance(rate, list) else float(rate)
        self.generators.load_state_dict(state["generators"])
        self.calls.fill_(int(state.get("calls", 0)))  # absent from checkpoints before keyed=

    def _settings(self) -> str:
        """The base settings for ``extra_repr``: those that differ from the defaults, then the
        seed."""
        keyed = ", keyed=True" if self.keyed else ""
        plain = ", return_mask=False" if not self.return_mask else ""
        return f"{keyed}{plain}, seed={self.generators.seed}"


def mask_token_parameter(dim: int | None) -> nn.Parameter | None:
    """A learned mask embedding of width ``dim`` (BEiT, SimMIM, wav2vec2's
    ``masked_spec_embed``), truncated-normal initialised; None without ``dim``."""
    if dim is None:
        return None
    token = nn.Parameter(torch.zeros(int(dim)))
    nn.init.trunc_normal_(token, std=0.02)
    return token


def fill_masked(
    x: torch.Tensor, mask: torch.Tensor, value: float, mask_token: torch.Tensor | None
) -> torch.Tensor:
    """``x`` (B, N, D) with the vectors where ``mask`` (B, N) is True replaced by ``mask_token``
    (D,) if given, else by ``value``."""
    if mask_token is None:
        return x.masked_fill(mask.unsqueeze(-1), value)
    return torch.where(mask.unsqueeze(-1), mask_token.to(x.dtype), x)


def check_tokens(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"{name} must be (B, N, D) ({tuple(getattr(x, 'shape', ()))} given).")
