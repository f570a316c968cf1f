"""What the masking collators share: padding, seeding and state read by DataLoader workers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info

from maskwise.collators.padding import pad_examples, right_to_left
from maskwise.dynamic.rates import check_rate_source, resolve_rate
from maskwise.random import KeyedGenerator, distributed_rank, hash_keys, seed_from_global

__all__ = ["MaskingCollator"]

_MAX_WORKER_SLOTS = 256  # batch counters; worker ids beyond share a counter (streams differ by id)


class _SharedState:
    """State every DataLoader worker reads at each batch: rate, epoch and batches per worker.

    Lives in shared memory, so writes in the training process are seen by forked or spawned
    workers, persistent ones included.
    """

    def __init__(self, rate: float) -> None:
        self.values = torch.tensor(
            [rate, 0.0, 0.0], dtype=torch.float64
        ).share_memory_()  # rate, epoch, step
        # batches[0]: main process; batches[w + 1]: DataLoader worker w. Each slot has one writer.
        self.batches = torch.zeros(_MAX_WORKER_SLOTS + 1, dtype=torch.long).share_memory_()


class MaskingCollator:
    """Padding, seeding and shared state common to the collators."""

    def __init__(
        self,
        *,
        rate: Any,
        pad_id: int,
        pad_to_multiple_of: int | None,
        padding_side: str,
        seed: int | None,
        index_key: str | None,
        return_index: bool,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left' ({padding_side!r} given).")
        self._source: Any = None  # a schedule or controller giving the rate, if any
        self._state = _SharedState(0.0)
        self.rate = rate
        self.pad_id = int(pad_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side
        self.seed = seed_from_global() if seed is None else int(seed)
        self.index_key = index_key
        self.return_index = return_index

    # The rate and epoch are properties over shared memory so workers see every change.
    @property
    def rate(self) -> float:
        """The current rate: the shared float, or the schedule at the shared step, or the
        controller's shared rate (read in whichever process collates)."""
        source = self._source
        if source is None:
            return float(self._state.values[0])
        return resolve_rate(source, int(self._state.values[2]))

    @rate.setter
    def rate(self, value: Any) -> None:
        """A rate source: a float, a schedule (``rate(step)``, stepped by :meth:`set_step`) or a
        controller."""
        value = check_rate_source(value)
        if callable(value):
            self._source = value
        else:
            self._source = None
            self._state.values[0] = value

    @property
    def step(self) -> int:
        return int(self._state.values[2])

    def set_step(self, step: int) -> None:
        """Set the training step a schedule rate is read at (shared with the workers)."""
        self._state.values[2] = float(int(step))

    @property
    def epoch(self) -> int:
        return int(self._state.values[1])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that keys the masks (call at the start of every epoch)."""
        self._state.values[1] = float(int(epoch))

    def _generator(self, batch: dict[str, torch.Tensor]) -> torch.Generator | KeyedGenerator:
        epoch = self.epoch
        if self.index_key is not None and self.index_key in batch:
            idx = batch[self.index_key].long()
            return KeyedGenerator(hash_keys(self.seed, epoch, idx))
        info = get_worker_info()
        worker = -1 if info is None else info.id
        slot = 0 if info is None else 1 + info.id % _MAX_WORKER_SLOTS
        # A fresh generator per batch, seeded by how many batches this slot drew before: the
        # stream is a function of (seed, epoch, rank, worker, counter), so re-created workers
        # never replay old masks and a collator restored from state_dict continues exactly.
        done = int(self._state.batches[slot])
        self._state.batches[slot] += 1
        key = hash_keys(self.seed, epoch, distributed_rank(), worker, done)
        return torch.Generator().manual_seed(int(key) & (2**63 - 1))

    def _pad(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        # Always right-padded while masking: a token's position in its row then does not depend
        # on the batch width, which keyed masks need. Left padding is applied at the end.
        return pad_examples(
            examples,
            pad_id=self.pad_id,
            pad_to_multiple_of=self.pad_to_multiple_of,
            padding_side="right",
        )

    def _finish(
        self,
        batch: dict[str, torch.Tensor],
        lengths: torch.Tensor,
        keys: Iterable[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Drop the index unless asked for; move right padding to the left for ``keys``
        (default: every (B, W) field)."""
        if self.index_key is not None and not self.return_index:
            batch.pop(self.index_key, None)
        if self.padding_side == "left":
            for key in list(batch) if keys is None else keys:
                value = batch[key]
                if value.dim() == 2 and value.shape[1] > 0:
                    batch[key] = right_to_left(value, lengths)
        return batch

    def state_dict(self) -> dict[str, Any]:
        source = self._source
        return {
            "seed": self.seed,
            "rate": self.rate,
            "epoch": self.epoch,
            "step": self.step,
            "batches": self._state.batches.clone(),
            "rate_source": source.state_dict() if hasattr(source, "state_dict") else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seed = int(state["seed"])
        if self._source is None:
            self.rate = float(state["rate"])
        elif state.get("rate_source") is not None and hasattr(self._source, "load_state_dict"):
            self._source.load_state_dict(state["rate_source"])
        self.set_epoch(int(state["epoch"]))
        self.set_step(int(state.get("step", 0)))
        self._state.batches.copy_(state["batches"])
