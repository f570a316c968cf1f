"""Specs that depend on positions only (the same mask for every sample): full, causal, sliding
window, chunked. Query positions are ``at.p`` (bottom-right alignment, see
:mod:`maskwise.attention.base`)."""

from __future__ import annotations

import torch

from maskwise.attention.base import BlockFlags, Blocks, Pairs, Structure, check_size
from maskwise.attention.spec import AttentionSpec

__all__ = ["Causal", "Chunked", "Full", "SlidingWindow"]

Tensor = torch.Tensor


def _positions(Q: int, KV: int, device: torch.device) -> Tensor:
    """(1, Q) int64 query positions ``q + KV - Q``."""
    return torch.arange(KV - Q, KV, device=device).unsqueeze(0)


class Full(AttentionSpec):
    """Every query attends every key."""

    def allowed(self, at: Pairs) -> Tensor:
        return (at.q >= 0) & (at.kv >= 0)

    def blocks(self, at: Blocks) -> BlockFlags:
        t = at.ones()
        return BlockFlags(t, t)

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor]:
        z = torch.zeros(1, Q, dtype=torch.long, device=device)
        return z, z + KV

    @property
    def structure(self) -> Structure:
        return Structure()

    def __repr__(self) -> str:
        return "full()"


class Causal(AttentionSpec):
    """Query at position ``p`` attends keys ``0 .. p``."""

    def allowed(self, at: Pairs) -> Tensor:
        return at.kv <= at.p

    def blocks(self, at: Blocks) -> BlockFlags:
        any_ = at.ks[None, :] <= (at.pe[:, None] - 1)
        all_ = (at.ke[None, :] - 1) <= at.ps[:, None]
        return BlockFlags(any_.unsqueeze(0), all_.unsqueeze(0))

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor]:
        hi = (_positions(Q, KV, device) + 1).clamp_(min=0)  # keys 0 .. p; none before 0
        return torch.zeros_like(hi), hi

    @property
    def structure(self) -> Structure:
        return Structure(causal=True)

    def __repr__(self) -> str:
        return "causal()"


class SlidingWindow(AttentionSpec):
    """Query at position ``p`` attends keys ``p - size + 1 .. p``: ``size`` keys, itself included
    (Hugging Face and xFormers' convention; FlashAttention's ``window_size=(w, 0)`` and
    attention-gym's ``q - kv <= w`` admit ``w + 1``). Causal by construction."""

    def __init__(self, size: int) -> None:
        self.size = check_size("size", size)

    def allowed(self, at: Pairs) -> Tensor:
        p = at.p
        return (at.kv <= p) & (at.kv > p - self.size)

    def blocks(self, at: Blocks) -> BlockFlags:
        w = self.size
        p_lo, p_hi = at.ps[:, None], at.pe[:, None] - 1  # (nQ, 1) first and last query position
        k_lo, k_hi = at.ks[None, :], at.ke[None, :] - 1
        any_ = (k_lo <= p_hi) & (k_hi >= p_lo - w + 1)
        all_ = (k_hi <= p_lo) & (k_lo >= p_hi - w + 1)
        return BlockFlags(any_.unsqueeze(0), all_.unsqueeze(0))

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor]:
        p = _positions(Q, KV, device)
        return (p - self.size + 1).clamp_(min=0), (p + 1).clamp_(min=0)

    def __repr__(self) -> str:
        return f"sliding_window({self.size})"


class Chunked(AttentionSpec):
    """Bidirectional attention inside consecutive chunks of ``size`` positions (block-diagonal);
    ``causal() & chunked(n)`` is chunked causal attention (as Llama 4's chunked layers)."""

    def __init__(self, size: int) -> None:
        self.size = check_size("size", size)

    def allowed(self, at: Pairs) -> Tensor:
        s = self.size
        return torch.div(at.p, s, rounding_mode="floor") == torch.div(
            at.kv, s, rounding_mode="floor"
        )

    def blocks(self, at: Blocks) -> BlockFlags:
        s = self.size
        cq_lo, cq_hi = at.ps // s, (at.pe - 1) // s
        ck_lo, ck_hi = at.ks // s, (at.ke - 1) // s
        any_ = (cq_lo[:, None] <= ck_hi[None, :]) & (ck_lo[None, :] <= cq_hi[:, None])
        one_q, one_k = (cq_lo == cq_hi)[:, None], (ck_lo == ck_hi)[None, :]
        all_ = one_q & one_k & (cq_lo[:, None] == ck_lo[None, :])
        return BlockFlags(any_.unsqueeze(0), all_.unsqueeze(0))

    def intervals(self, Q: int, KV: int, device: torch.device) -> tuple[Tensor, Tensor]:
        s = self.size
        start = torch.div(_positions(Q, KV, device), s, rounding_mode="floor") * s
        # A query before position 0 (Q > KV) is in a chunk of no key: both bounds clamp to 0.
        return start.clamp(0, KV), (start + s).clamp_(0, KV)

    def __repr__(self) -> str:
        return f"chunked({self.size})"
