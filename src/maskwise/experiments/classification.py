"""Classification tasks: text (token masking), images (patch / block / erase masking) and speech
(SpecAugment on log-mel features). One base class holds the shared batching, training step and
evaluation; the subclasses load their data and choose their model and masker."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import maskwise.functional as MF
from maskwise.experiments import data as D
from maskwise.experiments.engine import (
    Batches,
    ControllerConfig,
    StepOutput,
    Task,
    TokenTask,
    TrainConfig,
)
from maskwise.experiments.models import ConvNet, SpecConvNet, TextClassifier, ViT
from maskwise.nn import DynamicMask, Erase, MaskModule, SpecAugment

__all__ = ["ImageClassification", "ImagePatchMask", "SpeechClassification", "TextClassification"]

EVAL_BATCH = 512


class _Classification(Task):
    """Shared parts: ``self.splits[split]`` holds tensors (inputs, labels); accuracy and loss."""

    metric = "accuracy"
    higher_is_better = True
    batch_size = 32
    splits: dict[str, D.Split]
    classes: list[str]

    def describe(self) -> dict[str, Any]:
        return {"sizes": {k: len(v) for k, v in self.splits.items()}, "classes": len(self.classes)}

    def fetch(self, split: str, idx: torch.Tensor) -> tuple[Any, torch.Tensor]:
        s = self.splits[split]
        return s.inputs[idx], s.labels[idx]

    def train_batches(self, epoch: int, generator: torch.Generator) -> Batches:
        return Batches(
            len(self.splits["train"]), self.batch_size, generator, lambda i: self.fetch("train", i)
        )

    def forward(self, model: nn.Module, x: Any) -> torch.Tensor:
        return model(x)

    def apply_mask(self, masker: DynamicMask, x: Any) -> Any:
        return masker(x)[0]

    def to_device(self, x: Any, device: torch.device) -> Any:
        return x.to(device)

    def train_step(
        self, model: nn.Module, masker: DynamicMask | None, batch: Any, device: torch.device
    ) -> StepOutput:
        x, y = batch
        x, y = self.to_device(x, device), y.to(device)
        keys = self.keys_of(x) if masker is not None and masker.tracker is not None else {}
        if masker is not None:
            x = self.apply_mask(masker, x)
        logits = self.forward(model, x)
        return StepOutput(F.cross_entropy(logits, y), logits.detach(), y, items=len(y), **keys)

    def keys_of(self, x: Any) -> dict[str, torch.Tensor]:
        """Difficulty-tracker keys of the unmasked inputs (none by default)."""
        return {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        n = len(self.splits[split])
        correct, loss = 0, 0.0
        for idx in _eval_batches(n):
            x, y = self.fetch(split, idx)
            x, y = self.to_device(x, device), y.to(device)
            logits = self.forward(model, x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
        return {"accuracy": correct / n, "loss": loss / n}


def _eval_batches(n: int) -> Any:
    for i in range(0, n, EVAL_BATCH):
        yield torch.arange(i, min(n, i + EVAL_BATCH))


# ----------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD = 0  # [MASK] is id 4, TokenTask.mask_id


def train_wordpiece(texts: list[str], vocab_size: int) -> Any:
    """A lower-cased WordPiece tokenizer trained on ``texts`` (special tokens get ids 0-4)."""
    try:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    except ImportError as e:  # pragma: no cover
        raise ImportError("text tasks need tokenizers: pip install 'maskwise[experiments]'") from e
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


class TextClassification(TokenTask, _Classification):
    """Sentence classification with a small transformer encoder; input tokens masked (replaced by
    ``[MASK]``; padding and special tokens never masked). The dynamic variant adds per-token
    difficulty weights: the running loss of the examples a token occurs in."""

    name = "text-classification"
    item_name = "examples"
    default_rates = (0.1, 0.2, 0.3)

    def __init__(
        self,
        root: str | Path,
        *,
        vocab_size: int = 8000,
        max_len: int = 64,
        dim: int = 64,
        layers: int = 2,
        epochs: int = 10,
        seed: int = 0,
    ) -> None:
        self.splits_text, self.classes = D.load_text_classification(root, seed=seed)
        self.tokenizer = train_wordpiece(self.splits_text["train"].inputs, vocab_size)
        self.vocab = self.tokenizer.get_vocab_size()
        self.max_len, self.dim, self.layers = max_len, dim, layers
        self.splits = {
            k: D.Split(self._encode(v.inputs), v.labels) for k, v in self.splits_text.items()
        }
        self.train_config = TrainConfig(epochs=epochs, lr=1e-3, weight_decay=0.01)
        self.controller = ControllerConfig(target=0.9, min_rate=0.1, max_rate=0.6)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, enc in enumerate(self.tokenizer.encode_batch(texts, add_special_tokens=False)):
            row = enc.ids[: self.max_len] or [1]
            ids[i, : len(row)] = torch.tensor(row)
        return ids

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "vocab": self.vocab,
            "max_len": self.max_len,
            "model": f"transformer d={self.dim} x{self.layers}",
        }

    def fetch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, y = super().fetch(split, idx)
        width = int((ids != PAD).sum(1).max())
        return ids[:, : max(1, width)], y

    def build_model(self) -> nn.Module:
        return TextClassifier(
            self.vocab, len(self.classes), dim=self.dim, layers=self.layers, max_len=self.max_len
        )

    def apply_mask(self, masker: DynamicMask, ids: torch.Tensor) -> torch.Tensor:
        return masker(ids, attention_mask=ids != PAD)[0]

    def keys_of(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"keys": ids, "key_valid": ids >= len(SPECIALS)}

    def forward(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return model(ids, ids != PAD)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


class ImagePatchMask(MaskModule):
    """Mask ``round(rate * N)`` patches of a ``patch_size`` grid in pixel space (B, C, H, W),
    filling them with ``value`` (Hide-and-Seek / grid cutout): the pixel-space twin of
    :class:`~maskwise.nn.PatchMask` / :class:`~maskwise.nn.BlockPatchMask`, for models without
    patch embeddings (CNNs). Patches are uniformly random (:func:`~maskwise.functional.mask_patches`)
    or, with ``blocks=True``, BEiT rectangles of at least ``min_block`` patches
    (:func:`~maskwise.functional.mask_blocks`).

    ``forward(images) -> (masked images, mask (B, N))``, ``N = (H / p) * (W / p)``.
    """

    def __init__(
        self,
        rate: float,
        patch_size: int,
        *,
        value: float = 0.0,
        blocks: bool = False,
        min_block: int = 2,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.patch_size, self.value, self.blocks, self.min_block = (
            patch_size,
            value,
            blocks,
            min_block,
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, H, W = images.shape
        grid = (H // self.patch_size, W // self.patch_size)
        N = grid[0] * grid[1]
        if not self.training or self.rate == 0.0:
            return images, torch.zeros(B, N, dtype=torch.bool, device=images.device)
        g = self.generator(images.device)
        if self.blocks:
            mask = MF.mask_blocks(
                B,
                grid,
                round(self.rate * N),
                min_block=self.min_block,
                device=images.device,
                generator=g,
            ).view(B, N)
        else:
            mask = MF.mask_patches(B, N, self.rate, device=images.device, generator=g)
        pixels = MF.patches_to_pixels(mask, grid, self.patch_size).unsqueeze(1)  # (B, 1, H, W)
        return images.masked_fill(pixels, self.value), mask


class ImageClassification(_Classification):
    """Image classification with a small CNN; inputs masked by ``masker``: ``patch`` (random
    pixel patches, :class:`ImagePatchMask`), ``block`` (BEiT blocks) or ``erase`` (random
    erasing; its rate is the probability of erasing an image).

    Data: ``"digits"`` (scikit-learn; fixed seeded split 60 / 15 / 25 % of 1,797 images) or an
    MNIST-format IDX directory (official test set; dev carved from train, seeded).
    ``train_size`` subsamples the training set (the small-data regime).
    """

    name = "image-classification"
    item_name = "images"

    def __init__(
        self,
        root: str | Path = "digits",
        *,
        train_size: int | None = None,
        masker: str = "patch",
        model: str = "vit",
        width: int | None = None,
        epochs: int | None = None,
        dev_size: int = 2000,
        seed: int = 0,
    ) -> None:
        if model not in ("cnn", "vit"):
            raise ValueError(f"model must be 'cnn' or 'vit' ({model!r} given).")
        self.model_kind = model
        if masker not in ("patch", "block", "erase"):
            raise ValueError(f"masker must be 'patch', 'block' or 'erase' ({masker!r} given).")
        self.masker_kind = masker
        if str(root) == "digits":
            full = D.load_digits()["all"]
            rest, test = D.carve(full, 0.25, seed)
            train, dev = D.carve(rest, 0.2, seed + 1)
            self.patch_size, default_width, default_epochs = 2, 16, 60
            self.source = "scikit-learn digits (8x8)"
        else:
            splits = D.load_idx_dir(root)
            test = splits["test"]
            train, dev = D.carve(splits["train"], min(0.5, dev_size / len(splits["train"])), seed)
            self.patch_size, default_width, default_epochs = 4, 16, 20
            self.source = f"IDX {Path(root).name}"
        if train_size is not None:
            if not 0 < train_size <= len(train):
                raise ValueError(f"train_size must be in [1, {len(train)}] ({train_size} given).")
            g = torch.Generator().manual_seed(seed + 2)
            train = train.subset(torch.randperm(len(train), generator=g)[:train_size].sort().values)
        mean, std = float(train.inputs.mean()), float(train.inputs.std())
        self.splits = {
            k: D.Split((v.inputs - mean) / std, v.labels)
            for k, v in {"train": train, "dev": dev, "test": test}.items()
        }
        self.background = (0.0 - mean) / std  # masked pixels become background (0 before scaling)
        self.classes = [
            str(i) for i in range(int(max(int(s.labels.max()) for s in self.splits.values())) + 1)
        ]
        self.width = width or default_width
        self.train_config = TrainConfig(epochs=epochs or default_epochs, lr=2e-3, weight_decay=0.05)
        self.controller = ControllerConfig(target=0.9, min_rate=0.1, max_rate=0.75)
        self.default_rates = (0.1, 0.25, 0.4) if masker != "erase" else (0.25, 0.5, 0.75)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "data": self.source,
            "masker": self.masker_kind,
            "patch_size": self.patch_size,
            "model": "ViT d=64 x2" if self.model_kind == "vit" else f"CNN width {self.width}",
        }

    def build_model(self) -> nn.Module:
        if self.model_kind == "vit":
            size = self.splits["train"].inputs.shape[-1]
            return ViT(1, len(self.classes), image_size=size, patch_size=self.patch_size, dim=64)
        # 8x8 digits: two stages; 28x28: three (28 -> 14 -> 7), or the pooled features are too
        # local to tell shirts from coats (two stages fit only 78 % of 1,000 Fashion-MNIST images).
        size = self.splits["train"].inputs.shape[-1]
        return ConvNet(1, len(self.classes), width=self.width, stages=2 if size <= 16 else 3)

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        if self.masker_kind == "erase":
            return Erase(rate, value=self.background, seed=seed)
        return ImagePatchMask(
            rate,
            self.patch_size,
            value=self.background,
            blocks=self.masker_kind == "block",
            seed=seed,
        )


# ----------------------------------------------------------------------------------------------
# Speech
# ----------------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("MASKWISE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "maskwise"
    )
    return Path(base)


def speech_features(
    items: list[tuple[Path, str]],
    labels: dict[str, int],
    *,
    n_mels: int,
    frames: int,
    cache: bool = True,
) -> D.Split:
    """Log-mel features (N, n_mels, frames) of WAV files, cropped / padded (with the clip's
    minimum) to ``frames``, cached on disk by a hash of the paths, sizes and settings."""
    key = hashlib.sha1(
        repr((n_mels, frames, [(str(p), p.stat().st_size) for p, _ in items])).encode()
    ).hexdigest()[:16]
    path = _cache_dir() / f"logmel-{key}.pt"
    if cache and path.is_file():
        x = torch.load(path)
    else:
        feats = []
        for p, _ in items:
            wav, sr = D.read_wav(p)
            m = D.log_mel(wav, sr, n_mels=n_mels)
            T = m.shape[1]
            if T >= frames:
                start = (T - frames) // 2
                m = m[:, start : start + frames]
            else:
                m = F.pad(m, (0, frames - T), value=float(m.min()))
            feats.append(m)
        x = torch.stack(feats)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(x, path)
    return D.Split(x, torch.tensor([labels[lab] for _, lab in items]))


class SpeechClassification(_Classification):
    """Spoken-word recognition on log-mel features with a small CNN and SpecAugment.

    The masker is :class:`~maskwise.nn.SpecAugment` with two frequency masks of up to
    ``freq_width`` bands and ``round(rate * 10)`` time masks of up to ``time_width`` frames: the
    rate (the knob the controller moves) scales the number of time masks, so rates run 0-1.
    """

    name = "speech-classification"
    item_name = "clips"
    default_rates = (0.2, 0.5, 1.0)

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
        items, self.classes = D.load_speech(root)
        index = {c: i for i, c in enumerate(self.classes)}
        splits = {
            k: speech_features(v, index, n_mels=n_mels, frames=frames) for k, v in items.items()
        }
        if "test" not in splits:
            splits["train"], splits["test"] = D.carve(splits["train"], 0.1, seed + 1)
        if "dev" not in splits:
            splits["train"], splits["dev"] = D.carve(splits["train"], 0.1, seed)
        self.splits = splits
        self.n_mels, self.width, self.freq_width, self.time_width = (
            n_mels,
            width,
            freq_width,
            time_width,
        )
        self.train_config = TrainConfig(epochs=epochs, lr=2e-3, weight_decay=0.05)
        self.controller = ControllerConfig(
            target=0.9, initial_rate=0.2, max_rate=1.0, max_delta=0.02
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "features": f"log-mel {self.n_mels} x {self.splits['train'].inputs.shape[-1]} frames",
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
            seed=seed,
        )

    def apply_mask(self, masker: DynamicMask, x: torch.Tensor) -> torch.Tensor:
        return masker(x).spec


def with_epochs(task: Task, epochs: int) -> Task:
    task.train_config = replace(task.train_config, epochs=epochs)
    return task
