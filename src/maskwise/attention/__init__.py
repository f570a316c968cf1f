"""Attention masks: one spec per mask, lowered to every backend, ``attend`` and the module.

Layers, each importing only those above it: ``base`` (the :class:`MaskRule` protocol, index
grids, :class:`Structure`) -> ``lowering`` (dense, ``mask_mod``, ``BlockMask``, varlen, HF and
MHA converters) -> ``spec`` (``AttentionSpec``, ``&`` / ``|``) -> ``positional``, ``batched``,
``dropkey`` (the specs) -> ``specs`` (the factories) -> ``attend`` -> ``modules``
(``MultiheadAttention``, ``KVCache``).

>>> from maskwise.attention import causal, documents
>>> spec = causal() & documents([[3, 2]])
>>> spec.dense(5).int()[0, 0].tolist()
[[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
"""

from maskwise.attention.attend import BACKENDS, attend, choose_backend
from maskwise.attention.base import BlockFlags, Blocks, MaskRule, Pairs, Structure
from maskwise.attention.lowering import (
    HF_MASK_FORMS,
    build_block_mask,
    hf_additive_mask,
    hf_bool_mask,
    hf_mask,
    mha_attn_mask_blocked,
    mha_key_padding_mask_blocked,
    varlen_offsets,
)
from maskwise.attention.modules import KVCache, MultiheadAttention, SpecAttention
from maskwise.attention.specs import (
    AttentionSpec,
    Causal,
    Chunked,
    Cross,
    Documents,
    DropKeys,
    Full,
    MaskMod,
    Padding,
    PrefixLM,
    SlidingWindow,
    causal,
    chunked,
    cross,
    documents,
    drop_keys,
    full,
    mask_mod,
    padding,
    prefix_lm,
    sliding_window,
)

__all__ = [
    "BACKENDS",
    "HF_MASK_FORMS",
    "AttentionSpec",
    "BlockFlags",
    "Blocks",
    "Causal",
    "Chunked",
    "Cross",
    "Documents",
    "DropKeys",
    "Full",
    "KVCache",
    "MaskRule",
    "MaskMod",
    "MultiheadAttention",
    "Padding",
    "Pairs",
    "PrefixLM",
    "SlidingWindow",
    "SpecAttention",
    "Structure",
    "attend",
    "build_block_mask",
    "causal",
    "choose_backend",
    "chunked",
    "cross",
    "documents",
    "drop_keys",
    "full",
    "hf_additive_mask",
    "hf_bool_mask",
    "hf_mask",
    "mask_mod",
    "mha_attn_mask_blocked",
    "mha_key_padding_mask_blocked",
    "padding",
    "prefix_lm",
    "sliding_window",
    "varlen_offsets",
]
