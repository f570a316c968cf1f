"""DropKey: random key dropping before the softmax, as a spec."""

from __future__ import annotations

from typing import Any

import torch

from maskwise.attention.base import BlockFlags, Blocks, Pairs
from maskwise.attention.spec import AttentionSpec
from maskwise.dynamic.rates import check_rate_source, resolve_rate
from maskwise.random import hash_keys, mix64

__all__ = ["DropKeys"]

Tensor = torch.Tensor


class DropKeys(AttentionSpec):
    """Random key dropping before the softmax (DropKey, Li et al. 2023), as a spec.

    Query ``q`` of sample ``b`` drops key ``kv`` when a counter-based hash of
    ``(seed, step, b, q, kv)`` falls below the rate: every (query, key) pair is dropped
    independently with probability ``rate``, the same for all heads. The pattern is a pure
    function of those integers, so the FlexAttention ``mask_mod`` computes it inside the kernel
    and no B x H x Q x K tensor is made (the dense fallback makes a B x 1 x Q x K one). Combine
    with a structural mask: ``causal() & drop_keys(0.1)``.

    The spec holds no per-sample data, so it does not know B: :func:`~maskwise.attention.attend`
    lowers it for the batch of its inputs (every sample its own pattern, on every backend);
    ``dense(L)`` / ``block_mask(L)`` called directly need ``batch=B`` for that, and give one
    row (sample 0's pattern, for all) without it.

    ``rate`` is a rate source (:mod:`maskwise.dynamic.rates`: a float, a schedule or a
    controller), read at :attr:`step` when the mask is lowered; call :meth:`advance` once per
    training step for a new pattern. Use it in training only (pass the structural mask alone in
    eval).

    For ``rate <= 0.5`` a block counts as non-empty without evaluating it: a block with every
    one of its ``block_size**2`` pairs dropped has probability ``rate ** (block_size**2)``.
    """

    per_sample = True  # the pattern depends on the sample index b

    def __init__(self, rate: Any, *, seed: int = 0) -> None:
        self.rate_source = check_rate_source(rate)
        self.seed, self.step = int(seed), 0

    @property
    def rate(self) -> float:
        return resolve_rate(self.rate_source, self.step)

    def advance(self) -> None:
        """Move to the next step's pattern (and the schedule's next rate)."""
        self.step += 1

    def allowed(self, at: Pairs) -> Tensor:
        key = hash_keys(self.seed, self.step).to(at.q.device)
        z = mix64(mix64(mix64(key + at.b) + at.q * 0x9E3779B9) + at.kv)
        u = ((z >> 40) & ((1 << 24) - 1)).float() * 2.0**-24  # 24 uniform bits
        return u >= self.rate

    def blocks(self, at: Blocks) -> BlockFlags:
        rate = self.rate
        t = at.ones()
        if rate == 0.0:
            return BlockFlags(t, t)
        if rate >= 1.0:
            return BlockFlags(~t, ~t)
        return BlockFlags(t, ~t, None if rate <= 0.5 else t)

    def __repr__(self) -> str:
        return f"drop_keys({self.rate_source!r}, seed={self.seed}, step={self.step})"
