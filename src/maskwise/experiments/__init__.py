"""Experiments: train small models on real data without masking, with static masking and with
dynamic masking, and report whether masking reduced overfitting (``maskwise demo`` and
``maskwise run``). Not imported by ``import maskwise``; needs the ``experiments`` extra.

* :mod:`~maskwise.experiments.engine`: the training engine shared by every task;
* :mod:`~maskwise.experiments.data`: loaders for the data formats;
* :mod:`~maskwise.experiments.models`: the small models;
* :mod:`~maskwise.experiments.classification`: text, image and speech classification;
* :mod:`~maskwise.experiments.report`: the comparison runner, results JSON / Markdown / plots.
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
