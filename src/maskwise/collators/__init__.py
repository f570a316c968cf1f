"""Collators for ``DataLoader`` and Hugging Face ``Trainer``: padding + masking in one call.

No ``transformers`` import is needed: ``from_tokenizer`` only reads attributes of the tokenizer.

Randomness and reproducibility
------------------------------
A collator owns a ``seed`` and draws its masks in one of two ways:

* **Keyed by example** (recommended): when every example carries its dataset index under
  ``index_key`` (``"idx"`` by default; wrap a dataset with :class:`IndexedDataset`, or use
  ``datasets.Dataset.map(..., with_indices=True)``), the masks of example ``i`` are a pure
  function of ``(seed, epoch, i)`` through :class:`maskwise.random.KeyedGenerator`. They do not
  depend on the batch the example lands in, on padding, on the number of DataLoader workers, on
  which worker runs it, or on where a run resumed.
* **Per-worker streams**: otherwise each batch draws from a ``torch.Generator`` seeded with
  ``(seed, epoch, rank, worker id, batches its worker drew before)``, where rank is the
  ``torch.distributed`` rank (0 without it) and the worker id is -1 in the main process. Workers
  and ranks never share a stream, runs with the same seed and number of workers draw the same
  masks, and re-created (non-persistent) workers do not repeat the previous epoch's masks. These
  masks do depend on the number of workers; only keyed masks do not. Use one collator object per
  DataLoader that runs at the same time (train and eval loaders one after the other are fine).

The rate may be a float, a schedule (``maskwise.dynamic.cosine(...)``, read at the step set by
:meth:`set_step`) or a ``ReliabilityController`` (its rate lives in shared memory, so updates in
the training process reach the workers).

The epoch comes from :meth:`set_epoch`: call it at the start of every epoch, as with
``DistributedSampler`` (``maskwise.integrations.hf.MaskwiseCallback`` does it for Hugging Face
``Trainer``, which does not). Without it keyed masks repeat every epoch, i.e. static masking.
The rate and epoch live in a small shared-memory tensor that every worker reads at each batch,
so ``collator.rate = r`` or ``collator.set_epoch(e)`` in the training process reaches DataLoader
workers, persistent ones included, from the next batch they collate; batches already prefetched
(``prefetch_factor`` per worker) keep the values they were made with.

Layout: :mod:`~maskwise.collators.padding` (``pad_examples``, ``IndexedDataset``),
:mod:`~maskwise.collators.base` (``MaskingCollator``: rate, epoch, seeding, shared state),
:mod:`~maskwise.collators.mlm` and :mod:`~maskwise.collators.t5`.
"""

from maskwise.collators.base import MaskingCollator
from maskwise.collators.mlm import MLMCollator
from maskwise.collators.padding import IndexedDataset, pad_examples
from maskwise.collators.t5 import T5Collator

__all__ = ["IndexedDataset", "MLMCollator", "MaskingCollator", "T5Collator", "pad_examples"]
