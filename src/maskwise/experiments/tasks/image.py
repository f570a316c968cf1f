"""Image classification: a small ViT or CNN, inputs masked by pixel patches, BEiT blocks or
random erasing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import maskwise.functional as MF
from maskwise.experiments.batching import Batches
from maskwise.experiments.data import Split, carve, load_digits, load_idx_dir
from maskwise.experiments.engine import ControllerConfig, StepOutput, TrainConfig
from maskwise.experiments.models import ConvNet, ViT
from maskwise.experiments.registry import Option, TaskSpec
from maskwise.experiments.tasks.parts import Classifier
from maskwise.nn import DynamicMask, Erase, MaskModule, TokenDrop

__all__ = ["SPEC", "ImageClassification", "ImagePatchMask"]


#: The maskers: pixel patches, BEiT blocks, random erasing, or (ViT) patch tokens dropped.
MASKERS = ("patch", "block", "erase", "drop")


def _drop_forward(model: nn.Module, masker: DynamicMask, images: torch.Tensor) -> torch.Tensor:
    """The ViT with ``masker`` (a :class:`~maskwise.nn.TokenDrop`) between the patch embedding
    and the blocks: the model sees fewer tokens, not zero-filled ones."""
    return model(images, token_drop=masker)


class ImagePatchMask(MaskModule):
    """Mask ``round(rate * N)`` patches of a ``patch_size`` grid in pixel space, filling them with
    ``value`` (Hide-and-Seek / grid cutout).

    The pixel-space twin of :class:`~maskwise.nn.PatchMask` / :class:`~maskwise.nn.BlockPatchMask`,
    for models without patch embeddings (CNNs). Patches are uniformly random
    (:func:`~maskwise.functional.mask_patches`) or, with ``blocks=True``, BEiT rectangles of at
    least ``min_block`` patches (:func:`~maskwise.functional.mask_blocks`).

    ``per_sample=True`` draws each image's rate uniformly in ``[max(0, 2 * rate - 1),
    min(1, 2 * rate)]``, an interval centred on ``rate`` (its mean stays ``rate``): some images
    are seen nearly whole, some mostly hidden (random patches only).

    ``forward(images (B, C, H, W)) -> (masked images, mask (B, N))``,
    ``N = (H / p) * (W / p)``.
    """

    def __init__(
        self,
        rate: float,
        patch_size: int,
        *,
        value: float = 0.0,
        blocks: bool = False,
        min_block: int = 2,
        per_sample: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        if per_sample and blocks:
            raise ValueError("per_sample rates are for random patches (blocks=False).")
        self.patch_size, self.value, self.blocks, self.min_block = (
            patch_size,
            value,
            blocks,
            min_block,
        )
        self.per_sample = per_sample

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
            rate: MF.Rate = (
                (max(0.0, 2 * self.rate - 1), min(1.0, 2 * self.rate))
                if self.per_sample
                else self.rate
            )
            mask = MF.mask_patches(B, N, rate, device=images.device, generator=g)
        pixels = MF.patches_to_pixels(mask, grid, self.patch_size).unsqueeze(1)  # (B, 1, H, W)
        return images.masked_fill(pixels, self.value), mask


class ImageClassification:
    """Image classification with a small ViT (default) or CNN.

    Inputs are masked by ``masker``: ``patch`` (random pixel patches, :class:`ImagePatchMask`),
    ``block`` (BEiT blocks) or ``erase`` (random erasing; its rate is the probability of erasing
    an image). Masked pixels become the background (0 before normalisation).

    Args:
        root: ``"digits"`` (scikit-learn; fixed seeded split 60 / 15 / 25 % of 1,797 images) or
            an MNIST-format IDX directory (official test set; dev carved from train, seeded).
        train_size: subsample the training set to this many images (the small-data regime).
        masker: ``"patch"``, ``"block"``, ``"erase"`` or ``"drop"`` (ViT tokens removed).
        model: ``"vit"`` or ``"cnn"``.
        width: the CNN's width (default 16).
        epochs: training epochs (default 60 on digits, 20 on IDX data).
        dev_size: dev images carved from an IDX training set (at most half of it).
        per_sample: ``masker="patch"`` only: each image's rate drawn uniformly in an interval
            centred on the rate (``[0, 2 * rate]`` up to rate 0.5).
        seed: the seed of the splits and of the subsample.
    """

    name = "image-classification"
    metric = "accuracy"
    higher_is_better = True
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
        per_sample: bool = False,
        seed: int = 0,
    ) -> None:
        if model not in ("cnn", "vit"):
            raise ValueError(f"model must be 'cnn' or 'vit' ({model!r} given).")
        if masker not in MASKERS:
            raise ValueError(f"masker must be one of {MASKERS} ({masker!r} given).")
        if masker == "drop" and model != "vit":
            raise ValueError("masker='drop' removes patch tokens: it needs model='vit'.")
        if per_sample and masker != "patch":
            raise ValueError(f"per_sample rates need masker='patch' ({masker!r} given).")
        self.per_sample = per_sample
        self.model_kind, self.masker_kind = model, masker
        if str(root) == "digits":
            full = load_digits()["all"]
            rest, test = carve(full, 0.25, seed)
            train, dev = carve(rest, 0.2, seed + 1)
            self.patch_size, default_width, default_epochs = 2, 16, 60
            self.source = "scikit-learn digits (8x8)"
        else:
            splits = load_idx_dir(root)
            test = splits["test"]
            train, dev = carve(splits["train"], min(0.5, dev_size / len(splits["train"])), seed)
            self.patch_size, default_width, default_epochs = 4, 16, 20
            self.source = f"IDX {Path(root).name}"
        if train_size is not None:
            if not 0 < train_size <= len(train):
                raise ValueError(f"train_size must be in [1, {len(train)}] ({train_size} given).")
            g = torch.Generator().manual_seed(seed + 2)
            train = train.subset(torch.randperm(len(train), generator=g)[:train_size].sort().values)
        mean, std = float(train.tensor.mean()), float(train.tensor.std())
        self.splits = {
            k: Split((v.tensor - mean) / std, v.labels)
            for k, v in {"train": train, "dev": dev, "test": test}.items()
        }
        self.background = (0.0 - mean) / std  # masked pixels: the background (0 before scaling)
        top = max(int(s.labels.max()) for s in self.splits.values())
        self.classes = [str(i) for i in range(top + 1)]
        self.width = width or default_width
        self.classifier = Classifier(
            self.splits, masked_forward=_drop_forward if masker == "drop" else None
        )
        self.train_config = TrainConfig(epochs=epochs or default_epochs, lr=2e-3, weight_decay=0.05)
        self.controller = ControllerConfig(max_rate=0.75)
        self.default_rates: tuple[float, ...] = (
            (0.1, 0.25, 0.4) if masker != "erase" else (0.25, 0.5, 0.75)
        )

    def describe(self) -> dict[str, Any]:
        return {
            "sizes": self.classifier.sizes(),
            "classes": len(self.classes),
            "data": self.source,
            "masker": self.masker_kind + (" (per-sample rates)" if self.per_sample else ""),
            "patch_size": self.patch_size,
            "model": "ViT d=64 x2" if self.model_kind == "vit" else f"CNN width {self.width}",
        }

    def build_model(self) -> nn.Module:
        size = self.splits["train"].tensor.shape[-1]
        if self.model_kind == "vit":
            return ViT(1, len(self.classes), image_size=size, patch_size=self.patch_size, dim=64)
        # 8x8 digits: two stages; 28x28: three (28 -> 14 -> 7), or the pooled features are too
        # local to tell shirts from coats (two stages fit only 78 % of 1,000 Fashion-MNIST images).
        return ConvNet(1, len(self.classes), width=self.width, stages=2 if size <= 16 else 3)

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        if self.masker_kind == "drop":
            return TokenDrop(rate, seed=seed)
        if self.masker_kind == "erase":
            return Erase(rate, value=self.background, seed=seed)
        return ImagePatchMask(
            rate,
            self.patch_size,
            value=self.background,
            blocks=self.masker_kind == "block",
            per_sample=self.per_sample,
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
    name="image-classification",
    help="image classification (ViT or CNN; patch, block or erase masking)",
    description="Classify images with a small ViT or CNN; masking hides random pixel "
    "patches, BEiT blocks or erased rectangles (filled with the background).",
    build=ImageClassification,
    data="digits",
    builtin_data=("digits",),
    dataset="'digits' (scikit-learn's bundled 8x8 digits, the default), or an MNIST-format "
    "IDX folder such as Fashion-MNIST (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-*)",
    options=(
        Option(
            "--train-size",
            "train on a seeded random N of the training images (default: all)",
            type=int,
        ),
        Option(
            "--masker",
            "patch: random pixel patches, block: BEiT blocks, erase: random erasing, "
            "drop: ViT patch tokens removed after the embedding (default %(default)s)",
            default="patch",
            choices=MASKERS,
        ),
        Option(
            "--model",
            "vit or cnn (default %(default)s)",
            default="vit",
            choices=("vit", "cnn"),
        ),
        Option(
            "--per-sample",
            "--masker patch: each image's rate drawn uniformly in [0, 2 x rate] (centred on the "
            "rate, within [0, 1])",
            flag_only=True,
        ),
    ),
)
