"""Index batches for the experiment tasks: re-iterable and sized, so the engine can count the
steps of an epoch before it runs it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["Batches", "LengthBatches", "batched", "eval_batches"]


def batched(
    n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: shuffled with ``generator``, in order without."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i : i + batch_size]


def eval_batches(n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """``range(n)`` in order, in batches of ``batch_size`` indices."""
    for i in range(0, n, batch_size):
        yield torch.arange(i, min(n, i + batch_size))


class Batches:
    """A re-iterable, sized view of :func:`batched`: ``fetch(indices)`` of every batch."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator | None,
        fetch: Callable[[torch.Tensor], Any],
        drop_last: bool = False,
    ) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.fetch, self.drop_last = fetch, drop_last

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        for idx in batched(self.n, self.batch_size, self.generator, self.drop_last):
            yield self.fetch(idx)


class LengthBatches:
    """Shuffled batches of similar lengths, re-iterable and sized.

    Each epoch: a seeded permutation of the items is cut into pools of ``pool`` batches, each pool
    sorted by length and cut into batches, and the batches are shuffled. Little padding (the
    throughput counts real tokens only), while every batch is still a random draw of the data.

    Args:
        lengths: (N,) the sort key of every item.
        batch_size: items per batch.
        generator: the seeded generator of the shuffles.
        fetch: ``fetch(indices)`` -> the batch.
        pool: batches per sorted pool.
    """

    def __init__(
        self,
        lengths: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        fetch: Callable[[torch.Tensor], Any],
        pool: int = 50,
    ) -> None:
        self.lengths, self.batch_size, self.generator = lengths, batch_size, generator
        self.fetch, self.pool = fetch, pool

    def __len__(self) -> int:
        return math.ceil(self.lengths.numel() / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        perm = torch.randperm(self.lengths.numel(), generator=self.generator)
        batches: list[torch.Tensor] = []
        for chunk in perm.split(self.batch_size * self.pool):
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches += list(chunk.split(self.batch_size))
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield self.fetch(batches[i])
