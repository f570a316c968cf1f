"""Text and feature masking modules: :class:`TokenMask`, :class:`FeatureMask`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from maskwise import functional as F
from maskwise._checks import check_split, not_special, valid_from_attention_mask
from maskwise.functional.features import mask_shape
from maskwise.nn.base import MaskModule

__all__ = ["FeatureMask", "TokenMask"]


class FeatureMask(MaskModule):
    """Zero a random ``rate`` of a tensor's entries (or of whole slices): ``x * (1 - mask)``.

    See :func:`maskwise.functional.mask_features`.

    Args:
        rate: probability that an entry (or a slice along ``dims``) is masked.
        dims: dimensions that share a mask, e.g. ``-1`` masks whole feature vectors.
        seed, keyed, return_mask: the random source and the output, as in :class:`MaskModule`.

    ``forward(x) -> (x_masked, mask)``, or ``x_masked`` alone with ``return_mask=False``.

    >>> m = FeatureMask(0.5, dims=-1, seed=0)
    >>> x_masked, mask = m(torch.ones(2, 4, 8))
    >>> mask.shape
    torch.Size([2, 4, 1])
    >>> _ = m.eval(); bool(m(torch.ones(2, 4, 8))[1].any())
    False
    """

    takes_ranges = True  # a rate per sample: the functional takes (low, high)

    def __init__(
        self,
        rate: float,
        *,
        dims: int | Sequence[int] | None = None,
        seed: int | None = None,
        keyed: bool = False,
        return_mask: bool = True,
    ) -> None:
        super().__init__(rate, seed=seed, keyed=keyed, return_mask=return_mask)
        if dims is not None and not (
            isinstance(dims, int) or all(isinstance(d, int) for d in dims)
        ):
            raise TypeError(f"dims must be an int, a sequence of ints or None ({dims!r} given).")
        self.dims = dims

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        if not self.training or self._rate_is_zero():
            shape = mask_shape(x.shape, self.dims)
            return self._output((x, torch.zeros(shape, dtype=torch.bool, device=x.device)))
        rows = mask_shape(x.shape, self.dims)[0] if x.dim() else 1  # keyed: one key per mask row
        g = self.generator(x.device, rows)
        return self._output(F.mask_features(x, self.rate, dims=self.dims, generator=g))

    def extra_repr(self) -> str:
        return f"rate={self.rate}, dims={self.dims}{self._settings()}"


class TokenMask(MaskModule):
    """Mask tokens of ``input_ids`` in training: choose with
    :func:`~maskwise.functional.mask_tokens`, replace with :func:`~maskwise.functional.corrupt`.

    By default every chosen token becomes ``mask_id`` (``replace_prob=1``, input-token noising);
    pass ``replace_prob=0.8, random_prob=0.1, vocab_size=V`` for BERT's 80/10/10, and
    ``replace_prob=0, random_prob=1, vocab_size=V, random_weights=counts`` for unigram noising
    (Xie et al. 2017: chosen tokens replaced by draws from the training set's unigram
    distribution).

    Args:
        rate: fraction of maskable tokens to mask.
        mask_id: id written over masked tokens.
        special_ids: ids never masked (and never drawn as random replacements).
        vocab_size: vocabulary size, needed when ``random_prob > 0``.
        replace_prob: probability that a masked token becomes ``mask_id``.
        random_prob: probability that it becomes a random token.
        random_weights: optional (vocab_size,) weights of the random replacements (default:
            uniform over the non-special ids).
        exact: exact count per row instead of Bernoulli draws.
        seed, keyed, return_mask: the random source and the output, as in :class:`MaskModule`.

    ``forward(input_ids, attention_mask=None, weights=None) -> (input_ids_masked, mask)``, or
    ``input_ids_masked`` alone with ``return_mask=False`` (``weights``: optional per-token
    sampling weights, e.g. from a :class:`~maskwise.dynamic.DifficultyTracker`); the loss
    targets of masked-token prediction are ``input_ids.masked_fill(~mask, -100)``. Padding
    (``attention_mask`` 0) and ``special_ids`` are never masked (:meth:`maskable`).

    >>> tm = TokenMask(1.0, mask_id=4, special_ids=[0, 1], seed=0)
    >>> tm(torch.tensor([[1, 7, 8, 0]]))[0].tolist()
    [[1, 4, 4, 0]]
    """

    takes_ranges = True  # a rate per sample: the functional takes (low, high)

    def __init__(
        self,
        rate: float,
        *,
        mask_id: int,
        special_ids: Iterable[int] = (),
        vocab_size: int | None = None,
        replace_prob: float = 1.0,
        random_prob: float = 0.0,
        random_weights: torch.Tensor | None = None,
        exact: bool = False,
        seed: int | None = None,
        keyed: bool = False,
        return_mask: bool = True,
    ) -> None:
        super().__init__(rate, seed=seed, keyed=keyed, return_mask=return_mask)
        self.mask_id = int(mask_id)
        self.special_ids = tuple(int(i) for i in special_ids)
        self.vocab_size = vocab_size
        self.replace_prob, self.random_prob = check_split(replace_prob, random_prob)
        if self.random_prob > 0 and vocab_size is None:
            raise ValueError("vocab_size is required when random_prob > 0 (None given).")
        if random_weights is not None and (vocab_size is None or self.random_prob == 0):
            raise ValueError(
                "random_weights weight random replacements: vocab_size is required and "
                f"random_prob must be > 0 (vocab_size={vocab_size}, random_prob={random_prob})."
            )
        self.random_weights: torch.Tensor | None
        self.register_buffer("random_weights", random_weights, persistent=False)  # moves with .to
        self.exact = exact

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        if not self.training or self._rate_is_zero():
            nothing = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
            return self._output((input_ids, nothing))
        g = self.generator(input_ids.device, input_ids.shape[0])
        mask = F.mask_tokens(
            input_ids,
            self.rate,
            special_ids=self.special_ids,
            attention_mask=attention_mask,
            exact=self.exact,
            weights=weights,
            generator=g,
        )
        out, _ = F.corrupt(
            input_ids,
            mask,
            mask_id=self.mask_id,
            vocab_size=self.vocab_size,
            replace_prob=self.replace_prob,
            random_prob=self.random_prob,
            special_ids=self.special_ids,
            random_weights=self.random_weights,
            generator=g,
        )
        return self._output((out, mask))

    def maskable(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bool (B, L): the real tokens (``attention_mask``) whose id is not special."""
        real = valid_from_attention_mask(attention_mask, input_ids.shape, input_ids.device)
        plain = not_special(input_ids, self.special_ids)
        return real if plain is None else real & plain

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, mask_id={self.mask_id}, replace_prob={self.replace_prob}, "
            f"random_prob={self.random_prob}, exact={self.exact}"
            f"{', unigram' if self.random_weights is not None else ''}{self._settings()}"
        )
