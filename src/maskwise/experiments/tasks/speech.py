"""Speech classification: spoken-word recognition on log-mel features with a small CNN and
SpecAugment."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskwise.experiments.batching import Batches
from maskwise.experiments.data import (
    Split,
    carve,
    frame_lengths,
    load_speech,
    speaker_of,
    speech_features,
)
from maskwise.experiments.engine import ControllerConfig, StepOutput, TrainConfig
from maskwise.experiments.models import SpecConvNet
from maskwise.experiments.registry import Option, TaskSpec
from maskwise.experiments.tasks.parts import Classifier
from maskwise.nn import DynamicMask, MaskModule, SpecAugment

__all__ = ["SPEC", "SPLITS", "SpeechClassification"]

#: ``speakers``: one speaker held out for test and one for dev, the fold chosen by the run's
#: seed; ``official``: the data's own split (FSDD: recordings 0-4 of every speaker are test).
SPLITS = ("speakers", "official")


def _spec_augment(masker: DynamicMask, x: torch.Tensor) -> torch.Tensor:
    """SpecAugment with each clip's real length: time masks fall inside the spoken frames and
    relative widths scale with them, not with the padded window."""
    return masker(x, lengths=frame_lengths(x)).spec


def _time_width(text: str) -> int | float:
    """``--time-width``: an int is frames, a number with a point a fraction of the clip."""
    value = float(text)
    if "." in text or "e" in text.lower():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"a fractional time width must lie in [0, 1] ({text} given)")
        return value
    if value < 0:
        raise ValueError(f"time width must be >= 0 ({text} given)")
    return int(value)


class SpeechClassification:
    """Spoken-word recognition on log-mel features (N, n_mels, frames) with a small CNN.

    The masker is :class:`~maskwise.nn.SpecAugment` with ``freq_masks`` frequency masks of up to
    ``freq_width`` bands and ``time_masks`` time masks of up to ``time_width`` (a float: that
    fraction of each clip's real length, so a 40-frame word loses at most 4 frames to a 0.1
    mask; an int: frames), placed inside the clip's real frames (the padding of short clips is
    never the target). The rate (the knob a schedule or controller moves) is the share of these
    masks applied: rate 1 applies them all.

    Splits: ``split="speakers"`` (default) holds out whole speakers. One speaker (``dev_speaker``,
    default the last in sorted order) is the dev set of every run: all tuning and early stopping
    read it, and it is never tested on. Of the others, a run with seed ``s`` tests on speaker
    ``s % (n - 1)`` and trains on the rest (:meth:`for_seed`; every arm run with a seed sees the
    same fold). So no speaker that chose a setting is ever a test speaker, and ``n - 1``
    evaluation seeds test every other speaker once (more seeds repeat folds: their pairs are
    not independent). This is the speaker-independent task; the official FSDD split shares its
    six speakers between train and test. ``split="official"`` uses the data's split, dev carved
    from train.

    Args:
        root: a directory of ``{label}_{speaker}_{index}.wav`` files or a CSV manifest
            (:func:`~maskwise.experiments.data.load_speech`; manifests have no speakers, so
            they take ``split="official"``).
        split: ``"speakers"`` or ``"official"``.
        n_mels, frames: the features' bands and frames (10 ms hop).
        width: the CNN's width.
        epochs: training epochs.
        freq_masks, freq_width, time_masks, time_width: SpecAugment's masks at rate 1.
        dev_speaker: the speaker split's dev speaker (default: the last in sorted order).
        seed: the seed of the carved splits (official) or the initial fold (speakers).
    """

    name = "speech-classification"
    metric = "accuracy"
    higher_is_better = True
    item_name = "clips"
    default_rates: tuple[float, ...] = (0.5, 1.0)

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "speakers",
        n_mels: int = 40,
        frames: int = 80,
        width: int = 16,
        epochs: int = 30,
        freq_masks: int = 2,
        freq_width: int = 5,
        time_masks: int = 2,
        time_width: int | float = 0.1,
        dev_speaker: str | None = None,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} ({split!r} given).")
        if split == "speakers" and Path(root).is_file():
            raise ValueError(
                f"{root}: a manifest names no speakers; use split='official' "
                "(--split official) or a folder of '{label}_{speaker}_{index}.wav' files."
            )
        # speakers: every recording is pooled (the official test indices play no part)
        items, self.classes = load_speech(root, test_indices=0 if split == "speakers" else 5)
        index = {c: i for i, c in enumerate(self.classes)}
        self.split_kind = split
        if split == "speakers":
            every = [it for k in sorted(items) for it in items[k]]
            self.all = speech_features(every, index, n_mels=n_mels, frames=frames)
            names = [speaker_of(p) for p, _ in every]
            self.speakers = sorted(set(names))
            if len(self.speakers) < 3:
                raise ValueError(
                    f"{root}: split='speakers' needs at least 3 speakers (train, dev, test); "
                    f"found {len(self.speakers)}."
                )
            self.speaker_ids = torch.tensor([self.speakers.index(n) for n in names])
            self.dev_speaker = dev_speaker or self.speakers[-1]
            if self.dev_speaker not in self.speakers:
                raise ValueError(
                    f"dev_speaker {self.dev_speaker!r} is not among the speakers {self.speakers}."
                )
            self.test_speakers = [x for x in self.speakers if x != self.dev_speaker]
            splits = self._fold(seed)
        else:
            splits = {
                k: speech_features(v, index, n_mels=n_mels, frames=frames) for k, v in items.items()
            }
            if "test" not in splits:
                splits["train"], splits["test"] = carve(splits["train"], 0.1, seed + 1)
            if "dev" not in splits:
                splits["train"], splits["dev"] = carve(splits["train"], 0.1, seed)
        self.seed = seed
        self._use(splits)
        self.n_mels, self.width = n_mels, width
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.train_config = TrainConfig(epochs=epochs, lr=2e-3, weight_decay=0.05)
        self.controller = ControllerConfig(
            target=0.9, initial_rate=0.2, min_rate=0.0, max_rate=1.0, max_delta=0.02
        )

    def _use(self, splits: dict[str, Split]) -> None:
        self.splits = splits
        self.classifier = Classifier(splits, apply_mask=_spec_augment)

    def _fold(self, seed: int) -> dict[str, Split]:
        test = self.speakers.index(self.test_speakers[seed % len(self.test_speakers)])
        dev = self.speakers.index(self.dev_speaker)
        ids = self.speaker_ids
        where = {
            "train": (ids != test) & (ids != dev),
            "dev": ids == dev,
            "test": ids == test,
        }
        return {k: self.all.subset(m.nonzero().squeeze(1)) for k, m in where.items()}

    def held_out(self) -> dict[str, str]:
        """The dev and test speakers of the current fold (speaker split only)."""
        test = self.test_speakers[self.seed % len(self.test_speakers)]
        return {"dev": self.dev_speaker, "test": test}

    def for_seed(self, seed: int) -> SpeechClassification:
        """This task on seed ``seed``'s fold (speaker split); itself for the official split."""
        if self.split_kind != "speakers" or seed == self.seed:
            return self
        other = copy.copy(self)
        other.seed = seed
        other._use(self._fold(seed))
        return other

    def describe(self) -> dict[str, Any]:
        frames = self.splits["train"].tensor.shape[-1]
        d: dict[str, Any] = {
            "sizes": self.classifier.sizes(),
            "classes": len(self.classes),
            "features": f"log-mel {self.n_mels} x {frames} frames",
            "split": self.split_kind,
            "spec_augment": {
                "freq_masks": self.freq_masks,
                "freq_width": self.freq_width,
                "time_masks": self.time_masks,
                "time_width": self.time_width,
            },
            "model": f"CNN width {self.width}",
        }
        if self.split_kind == "speakers":
            d["speakers"] = self.speakers
            d["dev_speaker"] = self.dev_speaker
            d["fold"] = "seed s: test speaker s % (n - 1) of the others, the same dev speaker"
        return d

    def build_model(self) -> nn.Module:
        return SpecConvNet(self.n_mels, len(self.classes), width=self.width)

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        return SpecAugment(
            rate,
            freq_masks=self.freq_masks,
            freq_width=self.freq_width,
            time_masks=self.time_masks,
            time_width=self.time_width,
            value="mean",
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

    def item_scores(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, Any]:
        return self.classifier.item_scores(model, split, device, limit)


SPEC = TaskSpec(
    name="speech-classification",
    help="spoken-word recognition (log-mel CNN, SpecAugment), speakers held out",
    description="Recognise spoken words from log-mel features with a small CNN, tested on "
    "speakers never heard in training (--split speakers: the fold follows the seed) or on "
    "the data's own split (--split official); masking is SpecAugment with time masks placed "
    "and sized within each clip's real length (the rate is the share of the masks applied).",
    build=SpeechClassification,
    data="speech/fsdd",
    dataset="the Free Spoken Digit Dataset (FSDD): a folder of "
    "'{label}_{speaker}_{index}.wav' files (index 0-4 is the official test split), or a CSV "
    "manifest 'path,label[,split]' (--split official)",
    options=(
        Option(
            "--split",
            "speakers: a fixed dev speaker and a held-out test speaker per seed; official: the "
            "data's split "
            "(default %(default)s)",
            default="speakers",
            choices=SPLITS,
        ),
        Option(
            "--dev-speaker",
            "--split speakers: the speaker every run selects on, never tested (default: the "
            "last in sorted order)",
        ),
        Option(
            "--time-width",
            "largest time mask: a fraction of each clip's real length (0.1) or frames (8) "
            "(default %(default)s)",
            default=0.1,
            type=_time_width,
        ),
        Option(
            "--freq-width",
            "largest frequency mask, in mel bands (default %(default)s)",
            default=5,
            type=int,
        ),
    ),
)
