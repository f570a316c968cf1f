"""Speech classification: spoken-word recognition on log-mel features with a small CNN and
SpecAugment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskwise.experiments.batching import Batches
from maskwise.experiments.data import carve, load_speech, speech_features
from maskwise.experiments.engine import ControllerConfig, StepOutput, TrainConfig
from maskwise.experiments.models import SpecConvNet
from maskwise.experiments.registry import TaskSpec
from maskwise.experiments.tasks.parts import Classifier
from maskwise.nn import DynamicMask, MaskModule, SpecAugment

__all__ = ["SPEC", "SpeechClassification"]


def _spec_augment(masker: DynamicMask, x: torch.Tensor) -> torch.Tensor:
    return masker(x).spec


class SpeechClassification:
    """Spoken-word recognition on log-mel features (N, n_mels, frames) with a small CNN.

    The masker is :class:`~maskwise.nn.SpecAugment` with two frequency masks of up to
    ``freq_width`` bands and ``round(rate * 10)`` time masks of up to ``time_width`` frames: the
    rate (the knob the controller moves) scales the number of time masks, so rates run 0-1.

    Args:
        root: a directory of ``{label}_{speaker}_{index}.wav`` files or a CSV manifest
            (:func:`~maskwise.experiments.data.load_speech`); dev (and test, when the data has
            none) are carved from train, 10 % each, seeded.
        n_mels, frames: the features' bands and frames (10 ms hop).
        width: the CNN's width.
        epochs: training epochs.
        freq_width, time_width: SpecAugment's largest frequency and time masks.
        seed: the seed of the carved splits.
    """

    name = "speech-classification"
    metric = "accuracy"
    higher_is_better = True
    item_name = "clips"
    default_rates: tuple[float, ...] = (0.2, 0.5, 1.0)

    def __init__(
        self,
        root: str | Path,
        *,
        n_mels: int = 40,
        frames: int = 80,
        width: int = 16,
        epochs: int = 15,
        freq_width: int = 6,
        time_width: int = 8,
        seed: int = 0,
    ) -> None:
        items, self.classes = load_speech(root)
        index = {c: i for i, c in enumerate(self.classes)}
        splits = {
            k: speech_features(v, index, n_mels=n_mels, frames=frames) for k, v in items.items()
        }
        if "test" not in splits:
            splits["train"], splits["test"] = carve(splits["train"], 0.1, seed + 1)
        if "dev" not in splits:
            splits["train"], splits["dev"] = carve(splits["train"], 0.1, seed)
        self.splits = splits
        self.n_mels, self.width = n_mels, width
        self.freq_width, self.time_width = freq_width, time_width
        self.classifier = Classifier(splits, apply_mask=_spec_augment)
        self.train_config = TrainConfig(epochs=epochs, lr=2e-3, weight_decay=0.05)
        self.controller = ControllerConfig(
            target=0.9, initial_rate=0.2, min_rate=0.0, max_rate=1.0, max_delta=0.02
        )

    def describe(self) -> dict[str, Any]:
        frames = self.splits["train"].tensor.shape[-1]
        return {
            "sizes": self.classifier.sizes(),
            "classes": len(self.classes),
            "features": f"log-mel {self.n_mels} x {frames} frames",
            "model": f"CNN width {self.width}",
        }

    def build_model(self) -> nn.Module:
        return SpecConvNet(self.n_mels, len(self.classes), width=self.width)

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        return SpecAugment(
            rate,
            freq_masks=2,
            freq_width=self.freq_width,
            time_masks=10,
            time_width=self.time_width,
            value="mean",
            rate_scales="time_masks",  # the rule of the documented runs: rate scales time masks
            seed=seed,
        )

    def num_keys(self) -> None:
        return None

    def train_batches(self, epoch: int, generator: torch.Generator) -> Batches:
        return self.classifier.train_batches(generator)

    def train_step(
        self, model: nn.Module, masker: DynamicMask | None, batch: Any, device: torch.device
    ) -> StepOutput:
        return self.classifier.train_step(model, masker, batch, device)

    def evaluate(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        return self.classifier.evaluate(model, split, device, limit)

    def final_metrics(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        return self.classifier.evaluate(model, split, device, limit)


SPEC = TaskSpec(
    name="speech-classification",
    help="spoken-word recognition (log-mel CNN, SpecAugment)",
    description="Recognise spoken words from log-mel features with a small CNN; masking is "
    "SpecAugment (the rate scales the number of time masks).",
    build=SpeechClassification,
    data="speech/fsdd",
    dataset="the Free Spoken Digit Dataset (FSDD): a folder of "
    "'{label}_{speaker}_{index}.wav' files (index 0-4 is the test split), or a CSV "
    "manifest 'path,label[,split]'",
)
