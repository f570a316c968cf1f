"""``SpecAttention``: multi-head attention whose mask is a spec, with an optional key/value
cache for decoding (``MultiheadAttention`` is its deprecated former name)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from maskwise._checks import check_probability
from maskwise.attention.attend import attend
from maskwise.attention.spec import AttentionSpec

__all__ = ["KVCache", "MultiheadAttention", "SpecAttention"]


class KVCache(nn.Module):
    """Keys and values of the positions seen so far, for incremental decoding.

    Holds (B, H_kv, max_len, D) buffers (not saved in ``state_dict``) and the number of
    positions filled; :meth:`update` appends and returns every key and value so far.

    >>> cache = KVCache(2, 8, num_kv_heads=1, head_dim=4)
    >>> k, v = cache.update(torch.ones(2, 1, 3, 4), torch.ones(2, 1, 3, 4))
    >>> k.shape, cache.size
    (torch.Size([2, 1, 3, 4]), 3)
    """

    def __init__(
        self,
        batch_size: int,
        max_len: int,
        *,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.k: torch.Tensor
        self.v: torch.Tensor
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.size = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k``, ``v`` (B, H_kv, L, D); return the keys and values of every position so
        far, (B, H_kv, size, D)."""
        B, H, _, D = self.k.shape
        if k.dim() != 4 or (k.shape[0], k.shape[1], k.shape[3]) != (B, H, D) or v.shape != k.shape:
            raise ValueError(
                f"keys {tuple(k.shape)} do not fit the cache {tuple(self.k.shape)} "
                "(batch, heads and head size must match)."
            )
        end = self.size + k.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"the cache holds {self.max_len} positions; {end} needed "
                f"(setup_cache(max_len=...))."
            )
        self.k[:, :, self.size : end] = k
        self.v[:, :, self.size : end] = v
        self.size = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        """Forget every position (the buffers stay allocated)."""
        self.size = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Row ``b`` takes the keys and values of row ``index[b]`` (beam search: each beam
        continues the hypothesis it extends); ``index`` (B,) int64, rows may repeat.

        >>> cache = KVCache(2, 4, num_kv_heads=1, head_dim=1)
        >>> _ = cache.update(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1), torch.zeros(2, 1, 1, 1))
        >>> cache.reorder(torch.tensor([1, 1]))
        >>> cache.k[:, 0, 0, 0].tolist()
        [2.0, 2.0]
        """
        if index.shape != (self.k.shape[0],):
            raise ValueError(
                f"index must have shape ({self.k.shape[0]},) ({tuple(index.shape)} given)."
            )
        index, n = index.to(self.k.device), self.size  # only the filled positions move
        self.k[:, :, :n] = self.k[:, :, :n].index_select(0, index)
        self.v[:, :, :n] = self.v[:, :, :n].index_select(0, index)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.k.shape)}, size={self.size}"


class SpecAttention(nn.Module):
    """Multi-head attention whose mask is a :mod:`maskwise.attention` spec.

    Not a drop-in for ``torch.nn.MultiheadAttention`` (hence the name): that module takes
    ``(query, key, value)`` with ``attn_mask`` / ``key_padding_mask`` where True = blocked, and
    returns ``(output, weights)``; this one takes ``x`` (and ``context`` for cross-attention),
    a spec where True = may attend, and returns the output.

    Self-attention (``forward(x, mask=spec)``) or cross-attention
    (``forward(x, context=memory, mask=cross(...))``), with grouped-query attention when
    ``num_kv_heads < num_heads``. The kernel is chosen by :func:`~maskwise.attention.attend`
    from the spec's structure: SDPA's causal kernel for ``causal()``, FlexAttention or
    variable-length kernels for structured masks where available, dense SDPA otherwise. Query
    rows with nothing to attend (padding) get zeros from the attention, so their output is
    ``out_proj``'s bias.

    Incremental decoding: after :meth:`setup_cache`, self-attention appends each call's keys and
    values to a :class:`KVCache` and attends over every cached position (``mask`` is then for
    the Q new queries x all cached keys, bottom-right aligned: ``causal()`` for a multi-token
    prefill, None for one new token); cross-attention projects ``context`` on the first call
    after setup or :meth:`reset_cache` and reuses those keys and values afterwards.

    Args:
        embed_dim: model width E.
        num_heads: query heads H (E must be divisible by H).
        num_kv_heads: key/value heads (default H; must divide H).
        dropout: attention dropout in training.
        bias: biases in the projections.
        kdim: width of ``context`` for cross-attention (default E).

    Shapes: ``x`` (B, L, E), ``context`` (B, S, kdim) -> (B, L, E).

    >>> from maskwise.attention import causal, padding
    >>> attn = SpecAttention(32, 4, num_kv_heads=2)
    >>> x = torch.randn(2, 10, 32)
    >>> attn(x, mask=causal() & padding(torch.tensor([10, 7]))).shape
    torch.Size([2, 10, 32])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})."
            )
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})."
            )
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = check_probability("dropout", dropout)
        kdim = embed_dim if kdim is None else kdim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(kdim, num_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.cache: KVCache | None = None

    # -- key/value cache ---------------------------------------------------------------------
    def setup_cache(
        self,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """Start caching keys and values: ``max_len`` is the most positions the cache holds (the
        decoded length for self-attention, the context length for cross-attention). Default
        dtype and device: those of the projections."""
        w = self.k_proj.weight
        self.cache = KVCache(
            batch_size,
            max_len,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            dtype=dtype or w.dtype,
            device=device or w.device,
        )
        return self.cache

    def reset_cache(self) -> None:
        """Empty the cache (keeps its buffers): the next call starts a new sequence."""
        if self.cache is not None:
            self.cache.reset()

    def remove_cache(self) -> None:
        """Stop caching: back to full-sequence attention."""
        self.cache = None

    def reorder_cache(self, index: torch.Tensor) -> None:
        """:meth:`KVCache.reorder` of the cache, if any (beam search)."""
        if self.cache is not None:
            self.cache.reorder(index)

    # -- forward -------------------------------------------------------------------------------
    def _heads(self, proj: nn.Linear, x: torch.Tensor, heads: int) -> torch.Tensor:
        """(B, L, E_in) -> (B, heads, L, head_dim) through one of the projections."""
        B, L, _ = x.shape
        return proj(x).view(B, L, heads, self.head_dim).transpose(1, 2)

    def _keys_values(
        self, x: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.cache
        if context is not None and cache is not None and cache.size > 0:
            return cache.k[:, :, : cache.size], cache.v[:, :, : cache.size]  # projected context
        src = x if context is None else context
        k = self._heads(self.k_proj, src, self.num_kv_heads)  # (B, Hkv, S, Dh)
        v = self._heads(self.v_proj, src, self.num_kv_heads)
        return (k, v) if cache is None else cache.update(k, v)

    def forward(
        self,
        x: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        mask: AttentionSpec | None = None,
        backend: str = "auto",
    ) -> torch.Tensor:
        B, L, _ = x.shape
        q = self._heads(self.q_proj, x, self.num_heads)  # (B, H, L, Dh)
        k, v = self._keys_values(x, context)  # (B, Hkv, S, Dh)
        dropout = self.dropout if self.training else 0.0
        out = attend(q, k, v, mask, dropout_p=dropout, backend=backend)  # (B, H, L, Dh)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, self.embed_dim))

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_kv_heads={self.num_kv_heads}, dropout={self.dropout}"
        )


_ALIAS_WARNED = False


class MultiheadAttention(SpecAttention):
    """Deprecated name of :class:`SpecAttention` (it shares ``torch.nn.MultiheadAttention``'s
    name but not its call signature nor its mask convention); warns once, then behaves
    exactly as :class:`SpecAttention`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        global _ALIAS_WARNED
        if not _ALIAS_WARNED:
            _ALIAS_WARNED = True
            warnings.warn(
                "maskwise's MultiheadAttention is now SpecAttention (same arguments, same "
                "parameters); the old name, which torch.nn.MultiheadAttention also has with "
                "another signature, will be removed.",
                FutureWarning,
                stacklevel=2,
            )
        super().__init__(*args, **kwargs)
