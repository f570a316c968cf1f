"""Collators for ``DataLoader`` and Hugging Face ``Trainer``: padding + masking in one call.

No ``transformers`` import is needed: ``from_tokenizer`` only reads attributes of the tokenizer.

Randomness and reproducibility
------------------------------
A collator owns a ``seed`` and draws its masks in one of two ways:

* **Keyed by example** (recommended): when every example carries its dataset index under
  ``index_key`` (``"idx"`` by default; wrap a dataset with :class:`IndexedDataset`, or use
  ``datasets.Dataset.map(..., with_indices=True)``), the masks of example ``i`` come from
  :class:`maskwise.random.KeyedGenerator` with a key that depends on nothing but the seed, the
  epoch, ``i`` and, with ``redraw="always"`` (the default), how many times ``i`` was collated
  before: the ``k``-th mask of example ``i`` is a pure function of ``(seed, epoch, i, k)``. It
  does not depend on the batch the example lands in, on padding, on the number of DataLoader
  workers, on which worker runs it, or on where a run resumed (the draw counters are in
  ``state_dict``). Masks therefore change every time an example comes back, with no call to
  :meth:`~MaskingCollator.set_epoch` (``transformers.Trainer`` never makes one). With
  ``redraw="epoch"`` the key is ``(seed, epoch, i)``: the same masks until ``set_epoch``
  changes the epoch (e.g. fixed masks for an evaluation set; call ``set_epoch`` every epoch
  otherwise, as with ``DistributedSampler``).
* **Per-worker streams**: otherwise each batch draws from a ``torch.Generator`` seeded with
  ``(seed, epoch, rank, worker id, batches its worker drew before)``, where rank is the
  ``torch.distributed`` rank (0 without it) and the worker id is -1 in the main process. Workers
  and ranks never share a stream, runs with the same seed and number of workers draw the same
  masks, and re-created (non-persistent) workers do not repeat the previous epoch's masks. These
  masks do depend on the number of workers; only keyed masks do not. Use one collator object per
  DataLoader that runs at the same time (train and eval loaders one after the other are fine).

The draw counters live in shared memory, one per example: ``num_examples=len(dataset)`` sizes
them exactly (4 bytes per example); without it a table of 2**20 counters is used, in which
indices beyond share counters (with a warning). A sampler that visits every example once per
epoch (the default samplers, ``DistributedSampler``) never gives one example to two workers at
once, so the counts are exact; with a sampler that draws with replacement the masks are still
new every time but may depend on timing. Under ``torch.distributed`` each rank counts its own
draws and the rank joins the key, so an example that moves to another rank is never given a
mask it had before (keyed masks then depend on the rank an example lands on).

The rate may be a float, a schedule (``maskwise.dynamic.cosine(...)``, read at the step set by
:meth:`~MaskingCollator.set_step`) or a ``ReliabilityController`` (its rate lives in shared
memory, so updates in the training process reach the workers). The rate, epoch and step live in
a small shared-memory tensor that every worker reads at each batch, so ``collator.rate = r``,
``set_epoch(e)`` or ``set_step(s)`` in the training process reaches DataLoader workers,
persistent ones included, from the next batch they collate; batches already prefetched
(``prefetch_factor`` per worker) keep the values they were made with. A schedule or controller
set after persistent workers started is new to them: it is pickled into shared memory and
unpickled by each worker (a controller by handle, so it stays live); one that cannot be pickled
(a lambda) is announced by a warning, and those workers keep the rate it had when it was set.

Layout: :mod:`~maskwise.collators.padding` (``pad_examples``, ``IndexedDataset``),
:mod:`~maskwise.collators.state` (what is shared with the workers),
:mod:`~maskwise.collators.base` (``MaskingCollator``: rate, epoch, seeding, draw counters),
:mod:`~maskwise.collators.mlm` and :mod:`~maskwise.collators.t5`.
"""

from maskwise.collators.base import MaskingCollator
from maskwise.collators.mlm import MLMCollator
from maskwise.collators.padding import IndexedDataset, pad_examples
from maskwise.collators.t5 import T5Collator

__all__ = ["IndexedDataset", "MLMCollator", "MaskingCollator", "T5Collator", "pad_examples"]
