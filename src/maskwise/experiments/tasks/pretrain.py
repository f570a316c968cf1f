"""Pretraining then fine-tuning: a small BERT-style encoder pretrained with masked language
modelling on unlabeled text (Hugging Face ``Trainer``, :mod:`maskwise.experiments.pretraining`),
then fine-tuned for text classification under the evidence protocol.

The fine-tuning runs through the experiment engine (:mod:`maskwise.experiments.engine`), not
``Trainer``: the engine already gives every arm dev selection, paired seeds, the masking
variants (``[MASK]`` tokens, dropped tokens, masked-view consistency, the dynamic controller),
parallel workers and ``--reuse``; the model is ``transformers.BertForSequenceClassification``
loaded from the pretrained checkpoint. :func:`run` (the task's ``maskwise run``) writes:

* ``pretraining/``: every pretraining arm's curves (training loss, held-out MLM loss, rate over
  steps) and its fixed-mask held-out MLM loss (``pretrain.json``, ``pretrain.md``, a plot);
* ``finetune/``: the masking arms of fine-tuning from the ``--init`` checkpoint (none,
  ``[MASK]`` tokens, dropped tokens, consistency, dynamic) compared with none;
* ``pretraining-arms/``: fine-tuning without masking from every pretraining arm and from scratch,
  compared with the ``--init`` checkpoint (the pretraining arms' downstream accuracy).

``maskwise report`` reads both results folders.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskwise.experiments.batching import Batches
from maskwise.experiments.data import Split, carve_list, load_text_classification
from maskwise.experiments.engine import ControllerConfig, StepOutput, TrainConfig
from maskwise.experiments.pretraining import (
    PRETRAIN_ARMS,
    EncoderConfig,
    PretrainConfig,
    bert_config,
    cached_wordpiece,
    encode_mlm,
    pretrain,
)
from maskwise.experiments.registry import Option, TaskSpec
from maskwise.experiments.tasks.parts import Classifier, TokenMasking
from maskwise.experiments.tasks.text import MASKERS, drop_tokens_from_attention, trim_padding
from maskwise.experiments.tokenizers import PAD
from maskwise.nn import DynamicMask, MaskModule

__all__ = ["INITS", "SPEC", "PretrainFinetune", "read_corpus", "run"]

#: Where fine-tuning starts: from scratch, or from a pretraining arm's checkpoint.
INITS = ("scratch", *PRETRAIN_ARMS)


def read_corpus(folder: str | Path) -> list[str]:
    """The non-empty lines of every ``.txt`` file under ``folder`` (sorted by path), one text a
    line: an unlabeled corpus.

    Raises:
        ValueError: ``folder`` is not a folder, or holds no ``.txt`` file with text.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(
            f"--corpus {folder}: not a folder (a folder of .txt files, one text a line)."
        )
    texts = []
    for path in sorted(root.rglob("*.txt")):
        texts += [line.strip() for line in path.read_text(errors="replace").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"--corpus {folder}: no .txt file with text in it.")
    return texts


def _arms(text: str | Sequence[str]) -> tuple[str, ...]:
    arms = [a.strip() for a in text.split(",")] if isinstance(text, str) else list(text)
    arms = [a for a in arms if a]
    bad = [a for a in arms if a not in PRETRAIN_ARMS]
    if bad or not arms:
        raise ValueError(
            f"pretrain_arms must be among {', '.join(PRETRAIN_ARMS)} ({text!r} given)."
        )
    return tuple(dict.fromkeys(arms))


class PretrainFinetune:
    """Fine-tune a BERT-style encoder for sentence classification, from scratch or from an MLM
    checkpoint (:meth:`prepare` pretrains or loads every checkpoint).

    Args:
        root: a folder of text-classification split files (SST-2, TREC, any in those formats).
        corpus: a folder of ``.txt`` files, the pretraining text; default: the whole training
            split's texts (never dev or test; all of them also with ``train_size``).
        train_size: fine-tune on a seeded random subset of this many training sentences.
        masker: the fine-tuning masker: ``"mask"`` (``[MASK]``) or ``"drop"`` (from attention).
        init: where fine-tuning starts, one of :data:`INITS`.
        pretrain_arms: the pretraining arms to train (comma-separated or a sequence).
        pretrain_steps, pretrain_batch, pretrain_lr: the pretraining budget and optimiser.
        hidden, layers: the encoder's width and depth (heads of width 64).
        vocab_size: the WordPiece vocabulary, trained on the pretraining text.
        max_len: tokens per text, ``[CLS]`` and ``[SEP]`` included.
        epochs, lr: fine-tuning epochs and learning rate.
        heldout_fraction: the share of the pretraining text held out for the MLM loss.
        cache: the checkpoint cache folder (default
            :func:`~maskwise.experiments.pretraining.cache_root`).
        seed: the seed of the data splits carved here and of pretraining.
    """

    name = "pretrain-finetune"
    metric = "accuracy"
    higher_is_better = True
    item_name = "examples"
    default_rates: tuple[float, ...] = (0.1, 0.2)

    def __init__(
        self,
        root: str | Path,
        *,
        corpus: str | Path | None = None,
        train_size: int | None = None,
        masker: str = "mask",
        init: str = "token",
        pretrain_arms: str | Sequence[str] = PRETRAIN_ARMS,
        pretrain_steps: int = 500,
        pretrain_batch: int = 64,
        pretrain_lr: float = 1e-3,
        hidden: int = 128,
        layers: int = 2,
        vocab_size: int = 5000,
        max_len: int = 64,
        epochs: int = 6,
        lr: float = 5e-4,
        heldout_fraction: float = 0.05,
        cache: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        if masker not in MASKERS:
            raise ValueError(f"masker must be one of {MASKERS} ({masker!r} given).")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS} ({init!r} given).")
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1) ({heldout_fraction} given).")
        self.pretrain_arms = _arms(pretrain_arms)
        if init != "scratch" and init not in self.pretrain_arms:
            self.pretrain_arms = (init, *self.pretrain_arms)
        texts, self.classes = load_text_classification(root, seed=seed)
        # The whole training split is the default unlabeled text, also with --train-size (the
        # labelled subset): pretraining on text without its labels is the point of the stage.
        unlabeled = read_corpus(corpus) if corpus is not None else list(texts["train"].texts)
        if train_size is not None:
            n = len(texts["train"])
            if not 0 < train_size <= n:
                raise ValueError(f"train_size must be in [1, {n}] ({train_size} given).")
            g = torch.Generator().manual_seed(seed + 2)
            texts["train"] = texts["train"].subset(torch.randperm(n, generator=g)[:train_size])
        self.corpus_name = str(corpus) if corpus is not None else "the training split's texts"
        train, held = carve_list(unlabeled, heldout_fraction, seed)
        if not held or not train:
            raise ValueError(
                f"the pretraining text ({len(unlabeled)} texts) is too small to hold out "
                f"{heldout_fraction:.0%} for the MLM loss."
            )
        self.corpus_train, self.corpus_heldout = train, held
        self.tokenizer = cached_wordpiece(train, vocab_size, cache=cache)
        self.encoder = EncoderConfig(self.tokenizer.get_vocab_size(), hidden, layers, max_len)
        self.pretrain_config = PretrainConfig(
            steps=pretrain_steps, batch_size=pretrain_batch, lr=pretrain_lr, seed=seed
        )
        self.init, self.masker_kind, self.cache = init, masker, cache
        self.checkpoints: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.splits = {k: Split(self.encode(v.texts), v.labels) for k, v in texts.items()}
        self.masking = TokenMasking(self.encoder.vocab_size)
        self.train_config = TrainConfig(epochs=epochs, lr=lr, weight_decay=0.01)
        self.controller = ControllerConfig()
        self._classifier()

    def _classifier(self) -> None:
        drop = self.masker_kind == "drop"
        self.classifier = Classifier(
            self.splits,
            forward=self.forward,
            apply_mask=drop_tokens_from_attention if drop else self.masking.apply,
            keys_of=self.masking.input_keys,
            prepare=trim_padding,
        )

    def variant(self, *, init: str | None = None, masker: str | None = None) -> PretrainFinetune:
        """This task with another ``init`` or ``masker`` (data, tokenizer, checkpoints shared)."""
        other = copy.copy(self)
        if init is not None:
            if init not in INITS:
                raise ValueError(f"init must be one of {INITS} ({init!r} given).")
            other.init = init
        if masker is not None:
            if masker not in MASKERS:
                raise ValueError(f"masker must be one of {MASKERS} ({masker!r} given).")
            other.masker_kind = masker
            other._classifier()
        return other

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, max_len) ids ``[CLS] tokens [SEP]``, padded with ``PAD``."""
        rows = encode_mlm(self.tokenizer, [t or "?" for t in texts], self.encoder.max_len)
        ids = torch.zeros(len(texts), self.encoder.max_len, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
        return ids

    @staticmethod
    def forward(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=(ids != PAD).long()).logits

    def pretrain_settings(self, arm: str) -> PretrainConfig:
        """The pretraining settings of ``arm``."""
        steps = self.pretrain_config.steps
        if self.train_config.max_steps is not None:  # --fast: a smoke test of both stages
            steps = min(steps, self.train_config.max_steps)
        return PretrainConfig(
            arm,
            steps=steps,
            batch_size=self.pretrain_config.batch_size,
            lr=self.pretrain_config.lr,
            eval_every=max(1, min(100, steps // 4)),
            seed=self.pretrain_config.seed,
        )

    def prepare(self, *, jobs: int = 1, quiet: bool = True) -> dict[str, dict[str, Any]]:
        """Pretrain (or load from the cache) every checkpoint :attr:`pretrain_arms` names;
        ``jobs > 1`` trains that many arms at once in worker processes. Returns the records."""
        from maskwise.experiments.tasks.pretrain_run import pretrain_all

        self.records = pretrain_all(self, jobs=jobs, quiet=quiet)
        self.checkpoints = {arm: r["checkpoint"] for arm, r in self.records.items()}
        return self.records

    def pretrain_one(self, arm: str, progress: Any = None) -> dict[str, Any]:
        """Pretrain (or load) one arm's checkpoint; its record, with ``checkpoint``."""
        folder, record = pretrain(
            self.pretrain_settings(arm),
            self.encoder,
            self.tokenizer,
            self.corpus_train,
            self.corpus_heldout,
            cache=self.cache,
            device=self.train_config.device,
            progress=progress,
        )
        return {**record, "checkpoint": str(folder)}

    def describe(self) -> dict[str, Any]:
        init = "from scratch" if self.init == "scratch" else f"pretrained ({self.init})"
        return {
            "sizes": self.classifier.sizes(),
            "classes": len(self.classes),
            "vocab": self.encoder.vocab_size,
            "max_len": self.encoder.max_len,
            "masker": self.masker_kind,
            "model": f"BERT d={self.encoder.hidden} x{self.encoder.layers}",
            "init": self.init,
            "checkpoint": Path(self.checkpoints.get(self.init, "")).name or None,
            "corpus": self.corpus_name,
            "pretrain": dataclasses.asdict(
                self.pretrain_settings(self.init if self.init != "scratch" else "token")
            ),
            "setting": f"BERT d={self.encoder.hidden} x{self.encoder.layers} {init}, "
            f"{len(self.splits['train'])} train examples",
        }

    def build_model(self) -> nn.Module:
        from transformers import BertForSequenceClassification
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the new head's "newly initialized" notice
        hf_logging.disable_progress_bar()
        cfg = bert_config(self.encoder, num_labels=len(self.classes))
        if self.init == "scratch":
            return BertForSequenceClassification(cfg)
        if self.init not in self.checkpoints:
            raise ValueError(
                f"no pretrained checkpoint for init {self.init!r}: call prepare() first."
            )
        return BertForSequenceClassification.from_pretrained(
            self.checkpoints[self.init], num_labels=len(self.classes)
        )

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        return self.masking.make_masker(rate, seed)

    def num_keys(self) -> int:
        return self.masking.vocab

    def num_examples(self) -> int:
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


def run(task: PretrainFinetune, **kwargs: Any) -> dict[str, Any]:
    """``maskwise run pretrain-finetune``: both stages
    (:func:`maskwise.experiments.tasks.pretrain_run.run`)."""
    from maskwise.experiments.tasks.pretrain_run import run as run_all

    return run_all(task, **kwargs)


SPEC = TaskSpec(
    name="pretrain-finetune",
    help="MLM pretraining of a small BERT (HF Trainer), then fine-tuning with or without masking",
    description="Pretrain a small BERT-style encoder with masked language modelling on unlabeled "
    "text (Hugging Face Trainer + MLMCollator + MaskwiseTrainer; arms: token 15 %, whole word, "
    "span, 30->15 % decay, dynamic), each checkpoint cached by its settings; then fine-tune it "
    "for sentence classification: the --masking arms from the --init checkpoint (plus dropped "
    "tokens when static is given), and every pretraining arm and from scratch without masking.",
    build=PretrainFinetune,
    run=run,
    data="text/sst2",
    dataset="SST-2 (GLUE) or TREC-6 as '<label> <text>' lines, one file per split with "
    "train / dev / test in its name (.tsv, .csv and .jsonl with text and label fields also "
    "work)",
    options=(
        Option(
            "--corpus",
            "a folder of .txt files (one text a line) to pretrain on (default: the training "
            "split's texts; never dev or test)",
        ),
        Option(
            "--pretrain-arms",
            "comma-separated pretraining arms from token, word, span, decay, dynamic "
            "(default %(default)s)",
            default=",".join(PRETRAIN_ARMS),
        ),
        Option(
            "--init",
            "the checkpoint the fine-tuning masking arms start from (default %(default)s)",
            default="token",
            choices=INITS,
        ),
        Option("--pretrain-steps", "MLM steps per arm (default %(default)s)", 500, int),
        Option("--pretrain-batch", "MLM batch size (default %(default)s)", 64, int),
        Option("--hidden", "encoder width (default %(default)s)", 128, int),
        Option("--layers", "encoder layers (default %(default)s)", 2, int),
        Option(
            "--train-size",
            "fine-tune on a seeded random N of the training sentences (default: all)",
            type=int,
        ),
        Option(
            "--cache",
            "the checkpoint cache folder (default $MASKWISE_CACHE/pretrain or "
            "~/.cache/maskwise/pretrain)",
        ),
    ),
)
