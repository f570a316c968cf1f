"""Text classification: a small transformer encoder (or a deep averaging network) over WordPiece
tokens, input tokens masked by ``[MASK]`` or dropped from attention (token cutoff / word
dropout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskwise.experiments.batching import Batches
from maskwise.experiments.data import Split, load_text_classification
from maskwise.experiments.engine import ControllerConfig, StepOutput, TrainConfig
from maskwise.experiments.models import DANClassifier, TextClassifier
from maskwise.experiments.registry import Option, TaskSpec
from maskwise.experiments.tasks.parts import Classifier, TokenMasking
from maskwise.experiments.tokenizers import PAD, train_wordpiece
from maskwise.nn import DynamicMask, MaskModule

__all__ = [
    "MASKERS",
    "MODELS",
    "SPEC",
    "TextClassification",
    "drop_tokens_from_attention",
    "trim_padding",
]

#: The maskers: ``mask`` replaces tokens by ``[MASK]``; ``drop`` removes them from attention and
#: pooling (token cutoff, Shen et al. 2020).
MASKERS = ("mask", "drop")
#: The models: a transformer encoder, or a deep averaging network (Iyyer et al. 2015), whose
#: word dropout is ``masker="drop"``.
MODELS = ("transformer", "dan")


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """``ids`` (B, L) cut to its longest row (padding ``PAD`` only at the end of a row).

    >>> trim_padding(torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])).tolist()
    [[5, 6], [7, 0]]
    """
    width = int((ids != PAD).sum(1).max())
    return ids[:, : max(1, width)]


def drop_tokens_from_attention(masker: DynamicMask, ids: torch.Tensor) -> torch.Tensor:
    """``ids`` (B, L) with the tokens ``masker`` picks replaced by ``PAD``, so the model's
    attention mask (``ids != PAD``) and its mean pooling skip them: the tokens are dropped, not
    replaced by a symbol the test data never has; positions of the others are unchanged. A row
    whose every token is picked keeps its first token (a row must attend somewhere).

    >>> from maskwise.nn import TokenMask
    >>> m = DynamicMask(TokenMask(1.0, mask_id=4, seed=0), 1.0)
    >>> drop_tokens_from_attention(m, torch.tensor([[7, 8, 9, 0]])).tolist()
    [[7, 0, 0, 0]]
    """
    real = ids != PAD
    picked = masker(ids, attention_mask=real)[1] & real
    emptied = ~(real & ~picked).any(1)
    picked[emptied, 0] = False
    return ids.masked_fill(picked, PAD)


class TextClassification:
    """Sentence classification with a small transformer encoder or a deep averaging network.

    Input tokens are masked (``masker="mask"``: replaced by ``[MASK]``) or dropped
    (``masker="drop"``: removed from attention and pooling, :func:`drop_tokens_from_attention`);
    padding and special tokens are never picked. The dynamic variant adds per-token difficulty
    weights: the running loss of the examples a token occurs in.

    Args:
        root: a folder of split files (see :mod:`maskwise.experiments.data.text`).
        train_size: train on a seeded random subset of this many sentences (the small-data
            regime; the tokenizer is trained on them only).
        masker: ``"mask"`` or ``"drop"``.
        model: ``"transformer"`` (:class:`~maskwise.experiments.models.TextClassifier`) or
            ``"dan"`` (:class:`~maskwise.experiments.models.DANClassifier`: mean of the
            embeddings, ``layers`` ReLU layers of width ``dim``; with ``masker="drop"`` its
            masking is DAN's word dropout).
        vocab_size: the WordPiece vocabulary, trained on the training split.
        max_len: tokens kept per sentence.
        dim, layers: the encoder's width and depth.
        epochs: training epochs.
        seed: the seed of the dev split carved from train when there is none.
    """

    name = "text-classification"
    metric = "accuracy"
    higher_is_better = True
    item_name = "examples"
    default_rates: tuple[float, ...] = (0.1, 0.2, 0.3)

    def __init__(
        self,
        root: str | Path,
        *,
        train_size: int | None = None,
        masker: str = "mask",
        model: str = "transformer",
        vocab_size: int = 8000,
        max_len: int = 64,
        dim: int = 64,
        layers: int = 2,
        epochs: int = 10,
        seed: int = 0,
    ) -> None:
        if masker not in MASKERS:
            raise ValueError(f"masker must be one of {MASKERS} ({masker!r} given).")
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS} ({model!r} given).")
        texts, self.classes = load_text_classification(root, seed=seed)
        if train_size is not None:
            n = len(texts["train"])
            if not 0 < train_size <= n:
                raise ValueError(f"train_size must be in [1, {n}] ({train_size} given).")
            g = torch.Generator().manual_seed(seed + 2)
            keep = torch.randperm(n, generator=g)[:train_size].sort().values
            texts["train"] = texts["train"].subset(keep)
        self.masker_kind, self.model_kind = masker, model
        self.tokenizer = train_wordpiece(texts["train"].texts, vocab_size)
        self.vocab = self.tokenizer.get_vocab_size()
        self.max_len, self.dim, self.layers = max_len, dim, layers
        self.splits = {k: Split(self.encode(v.texts), v.labels) for k, v in texts.items()}
        self.masking = TokenMasking(self.vocab)
        self.classifier = Classifier(
            self.splits,
            forward=self.forward,
            apply_mask=drop_tokens_from_attention if masker == "drop" else self.masking.apply,
            keys_of=self.masking.input_keys,
            prepare=trim_padding,
        )
        self.train_config = TrainConfig(epochs=epochs, lr=1e-3, weight_decay=0.01)
        self.controller = ControllerConfig()  # the library defaults

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, max_len) token ids, padded with ``PAD``; an empty text becomes ``[UNK]``."""
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, enc in enumerate(self.tokenizer.encode_batch(texts, add_special_tokens=False)):
            row = enc.ids[: self.max_len] or [1]
            ids[i, : len(row)] = torch.tensor(row)
        return ids

    @staticmethod
    def forward(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return model(ids, ids != PAD)

    def describe(self) -> dict[str, Any]:
        return {
            "sizes": self.classifier.sizes(),
            "classes": len(self.classes),
            "vocab": self.vocab,
            "max_len": self.max_len,
            "masker": self.masker_kind,
            "model": f"{self.model_kind} d={self.dim} x{self.layers}",
        }

    def build_model(self) -> nn.Module:
        if self.model_kind == "dan":
            return DANClassifier(self.vocab, len(self.classes), dim=self.dim, layers=self.layers)
        return TextClassifier(
            self.vocab, len(self.classes), dim=self.dim, layers=self.layers, max_len=self.max_len
        )

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        return self.masking.make_masker(rate, seed)

    def num_keys(self) -> int:
        return self.masking.vocab

    def num_examples(self) -> int:
        """Training sentences: the keys of the per-example tracker (``dynamic examples``)."""
        return self.classifier.num_examples()

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
    name="text-classification",
    help="sentence classification (transformer encoder, [MASK] token masking)",
    description="Classify sentences with a small transformer encoder over a WordPiece "
    "vocabulary trained on the training split; masking replaces input tokens by [MASK] "
    "(--masker mask) or drops them from attention (--masker drop).",
    build=TextClassification,
    data="text/sst2",
    dataset="SST-2 (GLUE) or TREC-6 as '<label> <text>' lines, one file per split with "
    "train / dev / test in its name (.tsv, .csv and .jsonl with text and label fields also "
    "work)",
    options=(
        Option(
            "--train-size",
            "train on a seeded random N of the training sentences (default: all)",
            type=int,
        ),
        Option(
            "--masker",
            "mask: tokens replaced by [MASK]; drop: tokens removed from attention and pooling "
            "(token cutoff) (default %(default)s)",
            default="mask",
            choices=MASKERS,
        ),
        Option(
            "--model",
            "transformer: a transformer encoder; dan: a deep averaging network, whose word "
            "dropout is --masker drop (default %(default)s)",
            default="transformer",
            choices=MODELS,
        ),
    ),
)
