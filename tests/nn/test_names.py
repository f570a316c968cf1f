"""Issue 12, point 10: maskwise's attention module does not take torch's name.

``torch.nn.MultiheadAttention(query, key, value, key_padding_mask=..., attn_mask=...)`` (True =
blocked) and maskwise's module (``forward(x, context=None, mask=spec)``, True = may attend) share
nothing but the name, so maskwise's is ``SpecAttention``; ``MultiheadAttention`` stays one
release as a deprecated alias that warns once."""

from __future__ import annotations

import warnings

import pytest
import torch

import maskwise.attention.modules as modules
import maskwise.nn as mnn
from maskwise.attention import causal


def test_spec_attention_is_exported_by_maskwise_nn() -> None:
    assert mnn.SpecAttention is modules.SpecAttention
    attn = mnn.SpecAttention(16, 2)
    assert attn(torch.randn(2, 5, 16), mask=causal()).shape == (2, 5, 16)
    assert "SpecAttention(" in repr(attn)


def test_multihead_attention_is_a_deprecated_alias_that_warns_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(modules, "_ALIAS_WARNED", False)
    with pytest.warns(FutureWarning, match="SpecAttention"):
        old = mnn.MultiheadAttention(16, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mnn.MultiheadAttention(16, 2)  # once only
    assert isinstance(old, mnn.SpecAttention)
    new = mnn.SpecAttention(16, 2)
    new.load_state_dict(old.state_dict())  # the same parameters: checkpoints still load
    x = torch.randn(2, 5, 16)
    assert torch.equal(new(x, mask=causal()), old(x, mask=causal()))
