"""Bad input: a ValueError or TypeError whose message shows the offending value."""

from __future__ import annotations

import pytest
import torch

from maskwise import attention as A
from maskwise.attention import attend
from maskwise.nn import SpecAttention


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, None, "4"])
def test_dense_sizes(bad) -> None:
    with pytest.raises((ValueError, TypeError), match=f"q_len.*{bad!r}"):
        A.causal().dense(bad)
    if bad is not None:  # kv_len=None means kv_len = q_len
        with pytest.raises((ValueError, TypeError), match=f"kv_len.*{bad!r}"):
            A.causal().dense(4, bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_block_mask_sizes(bad: int) -> None:
    with pytest.raises(ValueError, match=f"q_len.*{bad}"):
        A.causal().block_mask(bad)
    with pytest.raises(ValueError, match=f"kv_len.*{bad}"):
        A.causal().block_mask(4, bad)
    with pytest.raises(ValueError, match=f"block_size.*{bad}"):
        A.causal().block_mask(4, block_size=bad)


@pytest.mark.parametrize("factory", [A.sliding_window, A.chunked])
@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_window_and_chunk_sizes(factory, bad) -> None:
    with pytest.raises(ValueError, match=f"size.*{bad!r}"):
        factory(bad)


def test_negative_lengths() -> None:
    with pytest.raises(ValueError, match=r"-1"):
        A.padding(torch.tensor([3, -1]))
    with pytest.raises(ValueError, match=r"-2"):
        A.prefix_lm(torch.tensor([-2]))
    with pytest.raises(ValueError, match=r"-1"):
        A.cross(torch.tensor([1]), torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"-1"):
        A.documents([[2, -1]])


def test_lengths_must_be_integers_of_shape_b() -> None:
    with pytest.raises(TypeError, match="float32"):
        A.padding(torch.tensor([3.0, 2.0]))
    with pytest.raises(TypeError, match=r"\(\)"):
        A.prefix_lm(torch.tensor(3))
    with pytest.raises(TypeError, match="bool"):
        A.cross(torch.tensor([True]), torch.tensor([1]))
    with pytest.raises(TypeError, match="float32"):
        A.documents(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(TypeError, match="int"):
        A.documents(5)
    with pytest.raises(TypeError, match="Tensor"):
        A.documents(torch.tensor([0, 0, 1]))  # ids must be (B, L)


def test_lengths_longer_than_the_sequence() -> None:
    with pytest.raises(ValueError, match=r"<= 4.*5"):
        A.padding(torch.tensor([5, 2])).dense(4)
    with pytest.raises(ValueError, match=r"<= 4.*6"):
        A.prefix_lm(torch.tensor([6])).dense(4)
    with pytest.raises(ValueError, match=r"q_lengths.*<= 2.*3"):
        A.cross(torch.tensor([3]), torch.tensor([1])).dense(2, 5)
    with pytest.raises(ValueError, match=r"kv_lengths.*<= 5.*6"):
        A.cross(torch.tensor([1]), torch.tensor([6])).dense(2, 5)
    with pytest.raises(ValueError, match=r"sum to 7 > 6"):
        A.documents([[3, 4]]).dense(6)
    with pytest.raises(ValueError, match=r"length 5.*6"):
        A.padding(torch.tensor([[1, 1, 1, 0, 0]])).dense(6)
    with pytest.raises(ValueError, match=r"length 3.*4"):
        A.documents(torch.tensor([[0, 0, 1]])).dense(4)
    # the same checks guard block_mask
    with pytest.raises(ValueError, match=r"<= 4.*5"):
        A.padding(torch.tensor([5])).block_mask(4)


def test_document_ids_must_be_sorted_with_padding_last() -> None:
    with pytest.raises(ValueError, match=r"row 1.*\[0, 1, 0\]"):
        A.documents(torch.tensor([[0, 0, 1], [0, 1, 0]]))
    with pytest.raises(ValueError, match=r"row 0.*\[0, -1, 1\]"):
        A.documents(torch.tensor([[0, -1, 1]]))


def test_cross_batch_sizes_must_match() -> None:
    with pytest.raises(ValueError, match=r"2 and 3"):
        A.cross(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


def test_combined_specs_must_have_the_same_batch() -> None:
    with pytest.raises(ValueError, match=r"2 and 3"):
        A.padding(torch.tensor([1, 2])) & A.prefix_lm(torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match=r"3 and 1"):
        A.documents([[1], [2], [3]]) | A.causal() & A.padding(torch.tensor([4]))


def test_combining_with_something_else() -> None:
    with pytest.raises(TypeError, match="int"):
        A.causal() & 3
    with pytest.raises(TypeError, match="str"):
        A.mask_mod("causal")


def _qkv(B=2, H=4, H_kv=4, Q=5, KV=5, D=8):
    return torch.randn(B, H, Q, D), torch.randn(B, H_kv, KV, D), torch.randn(B, H_kv, KV, D)


def test_attend_mask_batch_must_match_q() -> None:
    q, k, v = _qkv(B=2)
    with pytest.raises(ValueError, match=r"batch size 3.*2"):
        attend(q, k, v, A.causal() & A.padding(torch.tensor([5, 4, 3])))


def test_attend_heads_must_divide() -> None:
    q, k, v = _qkv(H=3, H_kv=2)
    with pytest.raises(ValueError, match=r"\(3\).*\(2\)"):
        attend(q, k, v, A.causal())


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_attend_needs_4d(which: str) -> None:
    q, k, v = _qkv()
    t = {"q": q, "k": k, "v": v}
    t[which] = t[which][0]  # 3-D
    with pytest.raises(ValueError, match=r"\(4, 5, 8\)"):
        attend(t["q"], t["k"], t["v"], A.causal())


def test_attend_incompatible_shapes() -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"\(2, 4, 5, 7\)"):
        attend(q[..., :7], k, v)  # head dims differ
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 8\)"):
        attend(q, k, v[:, :, :4])  # k and v lengths differ
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 8\)"):
        attend(q, k[:1], v[:1])  # batch differs


def test_attend_mask_data_must_fit_the_keys() -> None:
    q, k, v = _qkv(Q=5, KV=6)
    with pytest.raises(ValueError, match=r"length 5.*6"):
        attend(q, k, v, A.padding(torch.ones(2, 5, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"<= 6.*9"):
        attend(q, k, v, A.causal() & A.padding(torch.tensor([9, 1])))


def test_multihead_attention_arguments() -> None:
    with pytest.raises(ValueError, match=r"\(30\).*\(4\)"):
        SpecAttention(30, 4)
    with pytest.raises(ValueError, match=r"\(4\).*\(3\)"):
        SpecAttention(32, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="1.5"):
        SpecAttention(32, 4, dropout=1.5)
