"""Experiments: train small models on real data without masking, with static masking and with
dynamic masking, and report whether masking reduced overfitting (``maskwise demo`` and
``maskwise run``). Not imported by ``import maskwise``; needs the ``experiments`` extra.

* :mod:`~maskwise.experiments.engine`: the :class:`Task` protocol and the training engine;
* :mod:`~maskwise.experiments.tasks`: the six tasks, built from small shared parts;
* :mod:`~maskwise.experiments.registry`: the tasks ``maskwise run`` knows and their data;
* :mod:`~maskwise.experiments.data`: loaders for the data formats;
* :mod:`~maskwise.experiments.tokenizers`, :mod:`~maskwise.experiments.metrics`,
  :mod:`~maskwise.experiments.decoding`, :mod:`~maskwise.experiments.batching`: text tokens,
  BLEU / ROUGE, greedy decoding with key/value caches, batches;
* :mod:`~maskwise.experiments.models`: the small models;
* :mod:`~maskwise.experiments.report`: the comparison runner, results JSON / Markdown / plots.

Packing token sequences into rows is library code: :mod:`maskwise.packing`.
"""

from maskwise.experiments.engine import (
    ControllerConfig,
    RunResult,
    Task,
    TrainConfig,
    Variant,
    train_run,
)
from maskwise.experiments.report import compare

__all__ = [
    "ControllerConfig",
    "RunResult",
    "Task",
    "TrainConfig",
    "Variant",
    "compare",
    "train_run",
]
