"""``hf_mask``: a maskwise spec as the 4-D mask a Hugging Face model uses as given, for each
attention implementation. Tiny randomly initialised models (built from configs, no downloads)
must give the outputs they give under the equivalent mask they build themselves from a 2-D
padding mask."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from maskwise.attention import causal, padding
from maskwise.attention.lowering import hf_additive_mask, hf_bool_mask, hf_mask

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.hf

VOCAB, L = 50, 9
LENGTHS = torch.tensor([9, 5, 2])


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (3, L), generator=g)
    attention_mask = (torch.arange(L) < LENGTHS.unsqueeze(1)).long()  # right padding
    return ids.masked_fill(attention_mask == 0, 0), attention_mask


def bert(impl: str) -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        attn_implementation=impl,
    )
    return transformers.BertModel(config).eval()


def llama(impl: str) -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        attn_implementation=impl,
    )
    return transformers.LlamaModel(config).eval()


def assert_equal_on_real_tokens(a: torch.Tensor, b: torch.Tensor, am: torch.Tensor) -> None:
    assert torch.isfinite(a).all()  # padded queries attend nothing: no NaN leaks to real ones
    real = am.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_encoder_under_hf_mask_equals_its_own_padding_mask(impl: str) -> None:
    model = bert(impl)
    ids, am = inputs()
    mask = hf_mask(padding(am), L, attn_implementation=impl, dtype=model.dtype)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).last_hidden_state
        theirs = model(ids, attention_mask=am).last_hidden_state
        unmasked = model(ids).last_hidden_state
    assert_equal_on_real_tokens(ours, theirs, am)
    assert not torch.allclose(ours[1, :5], unmasked[1, :5], atol=1e-3)  # the mask did something


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_decoder_under_hf_mask_equals_its_own_causal_padding_mask(impl: str) -> None:
    model = llama(impl)
    ids, am = inputs()
    mask = hf_mask(causal() & padding(am), L, attn_implementation=impl, dtype=model.dtype)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).last_hidden_state
        theirs = model(ids, attention_mask=am).last_hidden_state
    assert_equal_on_real_tokens(ours, theirs, am)


def test_hf_mask_formats() -> None:
    spec = causal() & padding(LENGTHS)
    assert torch.equal(hf_mask(spec, L, attn_implementation="sdpa"), hf_bool_mask(spec, L))
    eager = hf_mask(spec, L, attn_implementation="eager", dtype=torch.bfloat16)
    assert eager.dtype == torch.bfloat16
    assert torch.equal(eager, hf_additive_mask(spec, L, dtype=torch.bfloat16))
    flex = hf_mask(spec, L, attn_implementation="flex_attention")
    assert type(flex).__name__ == "BlockMask" and flex.shape[-2:] == (L, L)


@pytest.mark.parametrize("impl", ["flash_attention_2", "flash_attention_3", "paged_attention"])
def test_hf_mask_rejects_implementations_that_take_no_4d_mask(impl: str) -> None:
    with pytest.raises(ValueError, match=rf"attn_implementation.*{impl}"):
        hf_mask(padding(LENGTHS), L, attn_implementation=impl)
