"""Argument checks shared by the public functions.

Every check raises ``ValueError`` or ``TypeError`` with the offending value and the accepted range,
so a user sees what they passed. Checks that would need a device-to-host copy (the values inside a
CUDA tensor) are only done for CPU tensors; on other devices values are clamped instead.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "as_rate",
    "check_bool_2d",
    "check_probability",
    "check_split",
    "check_long",
    "check_mean_length",
    "not_special",
    "special_ids_tensor",
    "valid_from_attention_mask",
]


def check_flag(name: str, value: bool) -> bool:
    """``value`` if it is a bool (an int or None is a caller's mistake, not a flag)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool ({value!r} given).")
    return value


def check_probability(name: str, value: float) -> float:
    """Return ``value`` as a float after checking it lies in [0, 1] (NaN is rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1] ({value!r} given).")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"The value of {name} must be between 0.0 and 1.0 ({value} given).")
    return value


def check_split(replace_prob: float, random_prob: float) -> tuple[float, float]:
    """Check the [MASK] / random-token probabilities of a corruption (each in [0, 1], sum <= 1)."""
    replace_prob = check_probability("replace_prob", replace_prob)
    random_prob = check_probability("random_prob", random_prob)
    if replace_prob + random_prob > 1.0 + 1e-9:
        raise ValueError(
            f"replace_prob + random_prob must be at most 1 ({replace_prob} + {random_prob} given)."
        )
    return replace_prob, random_prob


def check_mean_length(mean_length: float) -> None:
    """Span lengths are at least 1, so their mean must be a finite number >= 1."""
    if (
        isinstance(mean_length, bool)
        or not isinstance(mean_length, numbers.Real)
        or not 1.0 <= mean_length < float("inf")
    ):
        raise ValueError(f"mean_length must be a finite number >= 1 ({mean_length!r} given).")


def as_rate(rate: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Turn a float or (B,) tensor rate into a float64 (B, 1) column on ``device``.

    Float64 keeps ``round(rate * n)`` exact for the counts used by the ``exact=True`` paths.
    """
    if isinstance(rate, torch.Tensor):
        if rate.dim() == 0:
            rate = rate.reshape(1).expand(batch)
        if rate.dim() != 1 or rate.shape[0] != batch:
            raise ValueError(
                f"rate must be a float or a tensor of shape (B,) = ({batch},) "
                f"(tensor of shape {tuple(rate.shape)} given)."
            )
        if not rate.is_floating_point():
            raise TypeError(f"rate tensor must be floating point ({rate.dtype} given).")
        if rate.device.type == "cpu" and rate.numel() > 0:
            bad = ~((rate >= 0) & (rate <= 1))  # catches NaN too
            if bool(bad.any()):
                raise ValueError(
                    f"Every rate must be between 0.0 and 1.0 ({rate[bad].tolist()[:5]} given)."
                )
        return rate.to(device=device, dtype=torch.float64).clamp(0.0, 1.0).unsqueeze(1)
    return torch.full(
        (batch, 1), check_probability("rate", rate), dtype=torch.float64, device=device
    )


def check_bool_2d(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ({type(x).__name__} given).")
    if x.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor ({x.dtype} given).")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (B, N) ({tuple(x.shape)} given).")
    return x


def check_long(name: str, x: torch.Tensor, dim: int | None = 2) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ({type(x).__name__} given).")
    if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor ({x.dtype} given).")
    if dim is not None and x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions (shape {tuple(x.shape)} given).")
    return x


def special_ids_tensor(
    special_ids: Iterable[int] | torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Sorted, unique int64 tensor of special ids (may be empty)."""
    if special_ids is None:
        return torch.empty(0, dtype=torch.long, device=device)
    if isinstance(special_ids, torch.Tensor):
        ids = special_ids.to(device=device, dtype=torch.long).flatten()
    else:
        ids_list = [int(i) for i in special_ids]
        ids = torch.tensor(ids_list, dtype=torch.long, device=device)
    return torch.unique(ids)  # sorted


@functools.lru_cache(maxsize=32)
def _id_tensor(ids: tuple[int, ...], device: str) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long, device=device)


def not_special(
    input_ids: torch.Tensor, special_ids: Iterable[int] | torch.Tensor | None
) -> torch.Tensor | None:
    """Bool mask of positions whose id is not special, or None when there are no special ids.

    Special ids are grouped into runs of consecutive ids and each run costs one or two
    comparisons with Python scalars (``[0, 1, 2, 3]`` is one ``ids > 3``; T5's 100 sentinels are
    one run), several times faster than ``torch.isin`` on CPU. More than 8 runs, or ids held in
    a CUDA tensor (reading them would sync), go through ``torch.isin``.
    """
    if special_ids is None:
        return None
    if isinstance(special_ids, torch.Tensor) and special_ids.device.type != "cpu":
        ids = special_ids.to(input_ids.device)
        return ~torch.isin(input_ids, ids) if ids.numel() else None
    values = special_ids.tolist() if isinstance(special_ids, torch.Tensor) else special_ids
    ids_list = sorted({int(i) for i in values})
    if not ids_list:
        return None
    runs: list[list[int]] = []
    for i in ids_list:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    if len(runs) > 8:
        return ~torch.isin(input_ids, _id_tensor(tuple(ids_list), str(input_ids.device)))
    keep: torch.Tensor | None = None
    for lo, hi in runs:
        if lo == hi:
            cond = input_ids != lo
        elif lo <= 0:  # token ids are non-negative
            cond = input_ids > hi
        else:
            cond = (input_ids < lo) | (input_ids > hi)
        keep = cond if keep is None else keep.logical_and_(cond)
    return keep


def valid_from_attention_mask(
    attention_mask: torch.Tensor | None, shape: Sequence[int], device: torch.device
) -> torch.Tensor:
    """Bool (B, L) of real tokens from an HF-style attention mask (1 = real), or all True."""
    if attention_mask is None:
        return torch.ones(tuple(shape), dtype=torch.bool, device=device)
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(shape)} "
            f"({tuple(attention_mask.shape)} given)."
        )
    return attention_mask.to(device).bool()
