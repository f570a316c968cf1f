"""Token dropping: remove a random share of a token sequence instead of replacing it.

MAE's encoder sees only its visible patches and timm's ``PatchDropout`` drops patch tokens
(keeping CLS / register tokens): the model is regularised and the step is cheaper, since
attention and MLPs run on fewer tokens. :func:`drop_tokens` draws an exact count per row, so the
output stays rectangular; sequences with padding (text) drop tokens from attention instead:
``padding(attention_mask & ~masked)`` with ``masked`` from :func:`~maskwise.functional.mask_tokens`
(Cutoff's token cutoff).
"""

from __future__ import annotations

import numbers

import torch

from maskwise._checks import check_probability
from maskwise.functional.patches import keep_indices, mask_patches
from maskwise.random import KeyedGenerator

__all__ = ["drop_tokens"]


def drop_tokens(
    x: torch.Tensor,
    rate: float,
    *,
    num_prefix_tokens: int = 0,
    generator: torch.Generator | KeyedGenerator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop ``round(rate * (N - P))`` of each row's tokens, uniformly at random.

    The first ``P = num_prefix_tokens`` tokens (CLS, registers) are always kept and stay first;
    the ``K = N - P - round(rate * (N - P))`` other kept tokens follow in their original order.
    Every row keeps the same number of tokens, so the output is rectangular.

    Args:
        x: (B, N, D) tokens.
        rate: share of the non-prefix tokens to drop, a float in [0, 1] (one count for every
            row; per-row rates would make the rows ragged).
        num_prefix_tokens: leading tokens never dropped.
        generator: random source.

    Returns:
        ``(kept, index)``: kept (B, P + K, D) and the index (B, P + K) int64 of each kept token
        in ``x`` (``x.gather(1, index[..., None].expand(-1, -1, D)) == kept``), e.g. to gather
        position embeddings or to scatter outputs back.

    >>> x = torch.arange(6.0).view(1, 6, 1)                  # CLS + 5 tokens
    >>> kept, index = drop_tokens(x, 0.4, num_prefix_tokens=1,
    ...                           generator=torch.Generator().manual_seed(0))
    >>> index.shape, index[0, 0].item(), bool((index[0, 1:].diff() > 0).all())
    (torch.Size([1, 4]), 0, True)
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be (B, N, D) ({tuple(getattr(x, 'shape', ()))} given).")
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool):
        raise TypeError(
            f"rate must be a float: dropping keeps one count per row ({type(rate).__name__} given)."
        )
    rate = check_probability("rate", float(rate))
    B, N, D = x.shape
    P = num_prefix_tokens
    if isinstance(P, bool) or not isinstance(P, numbers.Integral) or not 0 <= P <= N:
        raise ValueError(f"num_prefix_tokens must be an int in [0, {N}] ({P!r} given).")
    prefix = torch.arange(P, device=x.device).expand(B, P)
    if N - P == 0:
        index = prefix
    else:
        dropped = mask_patches(B, N - P, rate, device=x.device, generator=generator)  # (B, N - P)
        keep = (N - P) - round(rate * (N - P))  # known from the rate: no host read, compiles
        ids_keep, _ = keep_indices(dropped, num_keep=keep)  # (B, K), increasing
        index = torch.cat([prefix, ids_keep + P], dim=1)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, D)), index
