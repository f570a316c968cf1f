"""What a collator shares with its DataLoader workers, in shared memory.

A DataLoader worker holds a copy of the collator made when the worker started (forked, or
pickled for ``spawn``), so a plain attribute set later in the training process never reaches
it. Everything that changes during training therefore lives in tensors in shared memory, which
the workers' copies map too:

* :class:`SharedState`: the rate (when it is a float), epoch, step, which rate source is
  active, the batches each worker drew (per-worker streams), and the per-example draw counters
  of keyed masks;
* :class:`SourceMailbox`: a rate source (schedule or controller) set after the workers started
  is new to them; it is pickled into a per-worker slot of shared memory, from which each worker
  unpickles it at its next batch. Controllers pickle their shared state by handle (an fd sent
  through ``multiprocessing``'s resource sharer, as ``torch.multiprocessing`` queues do), so
  the workers follow the training process's updates; schedules pickle by value.
"""

from __future__ import annotations

import pickle
import time
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch

__all__ = ["DEFAULT_DRAW_SLOTS", "SharedState", "SourceMailbox", "shared_zeros"]

#: Draw counters of a keyed collator built without ``num_examples`` (4 MiB of shared memory).
DEFAULT_DRAW_SLOTS = 2**20
MAX_WORKER_SLOTS = 256  # batch counters; worker ids beyond share a counter (streams differ by id)
_MAIL_SLOTS = 32  # workers that can receive a new rate source (ids 0 .. 31)
_MAIL_BYTES = 4096  # largest pickled rate source (a ReliabilityController takes ~600)

# Fields of SharedState.values (float64: exact for integers below 2**53).
RATE, EPOCH, STEP, SOURCE, WORKERS, SEEN = range(6)


def shared_zeros(n: int, dtype: torch.dtype) -> torch.Tensor:
    """A zero tensor of ``n`` elements in shared memory.

    Fresh shared memory is zero-filled by the OS and its pages are committed when first
    written, so a large table of counters costs only the pages its indices touch.
    """
    nbytes = n * torch.empty((), dtype=dtype).element_size()
    try:
        storage = torch.UntypedStorage._new_shared(nbytes)
    except (AttributeError, RuntimeError):  # a torch without the private constructor
        return torch.zeros(n, dtype=dtype).share_memory_()
    return torch.empty(0, dtype=dtype).set_(storage, 0, (n,), (1,))


class SharedState:
    """Rate, epoch, step, active source, stream counters and draw counters.

    Each field has one writer at a time: the training process writes rate, epoch, step and
    source; worker ``w`` writes its own stream counter; the draw counter of an example is
    written by the process collating it (a sampler without replacement never gives one example
    to two workers in one epoch).

    Args:
        draw_slots: size of the per-example draw counters, or None for none.
    """

    def __init__(self, draw_slots: int | None) -> None:
        # rate, epoch, step, source (-1: the float rate), workers seen, 1 + largest index drawn
        self.values = torch.tensor([0.0, 0.0, 0.0, -1.0, 0.0, 0.0], dtype=torch.float64)
        self.values.share_memory_()
        # batches[0]: main process; batches[w + 1]: DataLoader worker w. Each slot has one writer.
        self.batches = torch.zeros(MAX_WORKER_SLOTS + 1, dtype=torch.long).share_memory_()
        self.draws = None if draw_slots is None else shared_zeros(draw_slots, torch.int32)


class SourceMailbox:
    """Per-worker slots of shared memory through which rate sources reach running workers.

    A slot holds one pickled ``(source id, source)`` under a sequence lock: the writer makes the
    sequence number odd while it writes, a reader retries until it reads the same even number
    before and after the bytes.
    """

    def __init__(self) -> None:
        self.data = shared_zeros(_MAIL_SLOTS * _MAIL_BYTES, torch.uint8).view(
            _MAIL_SLOTS, _MAIL_BYTES
        )
        self.meta = torch.zeros(_MAIL_SLOTS, 3, dtype=torch.long).share_memory_()  # seq, id, n

    def post(self, source_id: int, source: Any, workers: int) -> str | None:
        """Write ``source`` to the slots of workers ``0 .. workers - 1``; return why some
        worker cannot receive it, or None."""
        problem = None
        if workers > _MAIL_SLOTS:
            problem = f"only workers 0 .. {_MAIL_SLOTS - 1} can receive it ({workers} running)"
        for w in range(min(workers, _MAIL_SLOTS)):
            try:
                # One pickle per worker: a shared tensor pickles as an fd that can be received
                # once.
                blob = bytes(ForkingPickler.dumps((source_id, source)))
            except Exception as e:  # any pickling failure means the same here
                return f"it cannot be pickled ({type(e).__name__}: {e})"
            if len(blob) > _MAIL_BYTES:
                return f"it pickles to {len(blob)} bytes, more than {_MAIL_BYTES}"
            self.meta[w, 0] += 1  # odd: being written
            self.data[w, : len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
            self.meta[w, 1] = source_id
            self.meta[w, 2] = len(blob)
            self.meta[w, 0] += 1  # even: complete
        return problem

    def receive(self, worker: int, source_id: int) -> Any:
        """Source ``source_id`` from worker ``worker``'s slot, or None when it is not there."""
        if worker >= _MAIL_SLOTS:
            return None
        for _ in range(1000):
            seq = int(self.meta[worker, 0])
            if seq % 2 == 0:
                found, n = int(self.meta[worker, 1]), int(self.meta[worker, 2])
                blob = bytes(self.data[worker, :n].tolist())
                if int(self.meta[worker, 0]) == seq:
                    break
            time.sleep(0.001)  # the training process is writing this slot
        else:
            return None
        if seq == 0 or found != source_id:
            return None
        return pickle.loads(blob)[1]
