"""What the masking collators share: padding, seeding and state read by DataLoader workers."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info

from maskwise.collators.padding import check_pad_to_multiple_of, pad_examples, right_to_left
from maskwise.collators.state import (
    DEFAULT_DRAW_SLOTS,
    EPOCH,
    MAX_WORKER_SLOTS,
    RATE,
    SEEN,
    SOURCE,
    STEP,
    WORKERS,
    SharedState,
    SourceMailbox,
)
from maskwise.dynamic.rates import check_rate_source, resolve_rate
from maskwise.random import KeyedGenerator, distributed_rank, hash_keys, seed_from_global

__all__ = ["DEFAULT_DRAW_SLOTS", "MaskingCollator"]

_REDRAW = ("always", "epoch")


class MaskingCollator:
    """Padding, seeding, rate and the state shared with DataLoader workers, common to the
    collators.

    Args:
        rate: a rate source: a float, a schedule or a controller.
        pad_id: id used for padding.
        pad_to_multiple_of: round the padded length up to a multiple of this (an int >= 1).
        padding_side: ``"right"`` or ``"left"``.
        seed: seed of the masks (None: drawn from torch's global generator).
        index_key: example field holding its dataset index, for keyed masks (None disables).
        return_index: keep the index field in the batch.
        redraw: when the keyed mask of an example is drawn anew. ``"always"`` (default): every
            time the example is collated; the key is ``(seed, epoch, index, draw)``, where
            ``draw`` counts how many times this example was collated before, so the masks change
            every epoch although nothing calls :meth:`set_epoch` (``transformers.Trainer``
            does not). ``"epoch"``: the key is ``(seed, epoch, index)``, the same masks until
            :meth:`set_epoch` changes the epoch (e.g. fixed masks for an evaluation set).
        num_examples: number of examples of the dataset (largest index + 1), to size the draw
            counters exactly; indices outside ``[0, num_examples)`` are an error. None: a table
            of ``DEFAULT_DRAW_SLOTS`` (2**20) counters, in which indices beyond share counters
            (with a warning).
    """

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
        redraw: str = "always",
        num_examples: int | None = None,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left' ({padding_side!r} given).")
        if redraw not in _REDRAW:
            raise ValueError(f"redraw must be 'always' or 'epoch' ({redraw!r} given).")
        if num_examples is not None and (
            isinstance(num_examples, bool)
            or not isinstance(num_examples, numbers.Integral)
            or num_examples < 1
        ):
            raise ValueError(f"num_examples must be an int >= 1 or None ({num_examples!r} given).")
        self.pad_id = int(pad_id)
        self.pad_to_multiple_of = check_pad_to_multiple_of(pad_to_multiple_of)
        self.padding_side = padding_side
        self.seed = seed_from_global() if seed is None else int(seed)
        self.return_index = return_index
        # Read-only: they decide whether the shared draw counters exist, and their size.
        self._index_key = index_key
        self._redraw = redraw
        self._num_examples = None if num_examples is None else int(num_examples)
        counted = redraw == "always" and index_key is not None
        self._state = SharedState((self._num_examples or DEFAULT_DRAW_SLOTS) if counted else None)
        self._mailbox = SourceMailbox()
        # Rate sources by id, in this process. The training process holds every source it was
        # given; a worker holds those it started with and those it received since.
        self._sources: dict[int, Any] = {}
        self._pickled_rank: int | None = None
        self._warned: set[str] = set()
        self.rate = rate

    @property
    def index_key(self) -> str | None:
        """The example field holding its dataset index (None: per-worker streams)."""
        return self._index_key

    @property
    def redraw(self) -> str:
        """``"always"`` or ``"epoch"``: when an example's keyed mask is drawn anew."""
        return self._redraw

    @property
    def num_examples(self) -> int | None:
        """The dataset size the draw counters were sized for (None: ``DEFAULT_DRAW_SLOTS``)."""
        return self._num_examples

    # -- rate ----------------------------------------------------------------------------------
    # The rate, epoch and step are properties over shared memory so workers see every change.
    @property
    def rate(self) -> float:
        """The current rate: the shared float, or the schedule at the shared step, or the
        controller's shared rate (read in whichever process collates)."""
        source = self._active_source()
        if source is None:
            return float(self._state.values[RATE])
        return resolve_rate(source, self.step)

    @rate.setter
    def rate(self, value: Any) -> None:
        """A rate source: a float, a schedule (``rate(step)``, stepped by :meth:`set_step`) or a
        controller. Reaches running DataLoader workers, persistent ones included, from their
        next batch (see :mod:`maskwise.collators.state`)."""
        value = check_rate_source(value)
        self._check_rate(value)
        values = self._state.values
        if not callable(value):
            values[RATE] = value
            values[SOURCE] = -1.0
            return
        sid = next((k for k, s in self._sources.items() if s is value), None)
        if sid is None:
            sid = len(self._sources)
            self._sources[sid] = value
            workers = int(values[WORKERS])
            problem = self._mailbox.post(sid, value, workers) if workers else None
            if problem is not None:
                warnings.warn(
                    f"The new rate source {value!r} cannot reach DataLoader workers that are "
                    f"already running (persistent_workers=True): {problem}. They keep its "
                    f"current rate ({resolve_rate(value, self.step)}); workers started from "
                    "now on use the source itself. Set the rate source before the workers "
                    "start, or use a picklable schedule (maskwise.dynamic) or a controller.",
                    stacklevel=2,
                )
        # The source's rate now is what a worker that cannot receive the source falls back on.
        values[RATE] = resolve_rate(value, self.step)
        values[SOURCE] = float(sid)

    def _check_rate(self, value: Any) -> None:
        """Hook for subclasses: raise if ``value`` (a checked rate source) cannot be used."""

    def _active_source(self) -> Any:
        """The active schedule or controller, or None when the rate is the shared float."""
        sid = int(self._state.values[SOURCE])
        if sid < 0:
            return None
        source = self._sources.get(sid)
        if source is None:  # set after this worker started
            info = get_worker_info()
            source = None if info is None else self._mailbox.receive(info.id, sid)
            if source is None:
                self._warn_once(
                    "source",
                    f"DataLoader worker could not receive rate source {sid} set after it "
                    f"started; it uses the rate the source had when it was set "
                    f"({float(self._state.values[RATE])}).",
                )
                return None
            self._sources[sid] = source
        return source

    @property
    def step(self) -> int:
        return int(self._state.values[STEP])

    def set_step(self, step: int) -> None:
        """Set the training step a schedule rate is read at (shared with the workers)."""
        self._state.values[STEP] = float(int(step))

    @property
    def epoch(self) -> int:
        return int(self._state.values[EPOCH])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that keys the masks (with ``redraw="epoch"``, call it at the start of
        every epoch; with the default ``redraw="always"`` it is optional)."""
        self._state.values[EPOCH] = float(int(epoch))

    # -- randomness ----------------------------------------------------------------------------
    def _generator(self, batch: dict[str, torch.Tensor]) -> torch.Generator | KeyedGenerator:
        info = get_worker_info()
        if info is not None and self._state.values[WORKERS] < info.num_workers:
            self._state.values[WORKERS] = float(info.num_workers)
        epoch = self.epoch
        if self.index_key is not None and self.index_key in batch:
            idx = batch[self.index_key].long()
            if self.redraw == "epoch":
                return KeyedGenerator(hash_keys(self.seed, epoch, idx))
            draw = self._draw(idx)
            # Draw counts are per process group rank: under torch.distributed an example that
            # moves to another rank from one epoch to the next is drawn there for the first
            # time, so the rank is part of its key (rank 0 keys like a single process).
            rank = self._rank()
            parts = (self.seed, epoch, idx, draw) + ((rank,) if rank else ())
            return KeyedGenerator(hash_keys(*parts))
        worker = -1 if info is None else info.id
        slot = 0 if info is None else 1 + info.id % MAX_WORKER_SLOTS
        # A fresh generator per batch, seeded by how many batches this slot drew before: the
        # stream is a function of (seed, epoch, rank, worker, counter), so re-created workers
        # never replay old masks and a collator restored from state_dict continues exactly.
        done = int(self._state.batches[slot])
        self._state.batches[slot] += 1
        key = hash_keys(self.seed, epoch, distributed_rank(), worker, done)
        return torch.Generator().manual_seed(int(key) & (2**63 - 1))

    def _draw(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) how many times each example of the batch was drawn before; counts them."""
        draws = self._state.draws
        assert draws is not None  # allocated whenever redraw="always" and index_key is set
        if idx.dim() != 1:
            raise ValueError(
                f"{self.index_key!r} must hold one integer per example (shape "
                f"{tuple(idx.shape)} given)."
            )
        if bool((idx < 0).any()):
            raise ValueError(
                f"{self.index_key!r} values must be >= 0 ({idx[idx < 0].tolist()[:5]} given)."
            )
        size = draws.shape[0]
        if bool((idx >= size).any()):
            bad = idx[idx >= size].tolist()[:5]
            if self.num_examples is not None:
                raise ValueError(
                    f"{self.index_key!r} values must lie in [0, num_examples) = [0, "
                    f"{self.num_examples}) ({bad} given); pass num_examples=len(dataset)."
                )
            self._warn_once(
                "fold",
                f"{self.index_key!r} values {bad} exceed the {size} draw counters of a "
                "collator built without num_examples: examples i and i + "
                f"{size} share one, so their masks depend on which is collated first. "
                "Pass num_examples=len(dataset).",
            )
        slots = idx % size
        # Rows sharing a counter in this batch (a sampler with replacement may draw an example
        # twice in one batch) take consecutive draws, in row order.
        earlier = (slots.unsqueeze(0) == slots.unsqueeze(1)).tril(-1).sum(1)  # (B,)
        draw = draws[slots].long() + earlier
        draws.index_put_((slots,), torch.ones_like(slots, dtype=draws.dtype), accumulate=True)
        seen = int(slots.max()) + 1 if slots.numel() else 0
        if seen > self._state.values[SEEN]:
            self._state.values[SEEN] = float(seen)
        return draw

    def draw_count(self, index: int) -> int:
        """How many times example ``index`` was collated (its next keyed draw), with the
        default ``redraw="always"``; 0 otherwise."""
        draws = self._state.draws
        return 0 if draws is None else int(draws[int(index) % draws.shape[0]])

    def _rank(self) -> int:
        # A spawned worker has no process group: it uses the rank of the process that pickled it.
        if self._pickled_rank is not None and get_worker_info() is not None:
            return self._pickled_rank
        return distributed_rank()

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, stacklevel=3)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pickled_rank"] = distributed_rank()
        return state

    # -- batches -------------------------------------------------------------------------------
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
        (default: every per-token field)."""
        if self.index_key is not None and not self.return_index:
            batch.pop(self.index_key, None)
        if self.padding_side == "left":
            for key in list(batch) if keys is None else keys:
                value = batch[key]
                if value.dim() >= 2 and value.shape[1] > 0:
                    batch[key] = right_to_left(value, lengths)
        return batch

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Seed, rate, epoch, step, stream counters, the rate source's state and the draw
        counters (of the indices seen so far): a restored collator draws exactly what this one
        would have drawn next."""
        source = self._active_source()
        draws = self._state.draws
        seen = int(self._state.values[SEEN])
        return {
            "seed": self.seed,
            "rate": self.rate,
            "epoch": self.epoch,
            "step": self.step,
            "batches": self._state.batches.clone(),
            "rate_source": source.state_dict() if hasattr(source, "state_dict") else None,
            "draws": None if draws is None else draws[:seen].clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seed = int(state["seed"])
        source = self._active_source()
        if source is None:
            self.rate = float(state["rate"])
        elif state.get("rate_source") is not None and hasattr(source, "load_state_dict"):
            source.load_state_dict(state["rate_source"])
        self.set_epoch(int(state["epoch"]))
        self.set_step(int(state.get("step", 0)))
        self._state.batches.copy_(state["batches"])
        draws = self._state.draws
        if draws is not None:
            saved = state.get("draws")
            n = 0 if saved is None else int(saved.shape[0])
            if n > draws.shape[0]:
                raise ValueError(
                    f"The state holds draw counters for {n} examples, more than this "
                    f"collator's {draws.shape[0]} (num_examples={self.num_examples})."
                )
            draws.zero_()
            if saved is not None:
                draws[:n] = saved.to(draws.dtype)
            self._state.values[SEEN] = float(n)
