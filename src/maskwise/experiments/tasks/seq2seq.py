"""Encoder-decoder tasks: translation (BLEU) and summarization (ROUGE), one task class
(:class:`Seq2SeqTask`) built by :func:`translation` and :func:`summarization` from their data,
their metric and their :class:`Seq2SeqConfig` defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskwise.attention import causal, cross, padding
from maskwise.experiments.batching import LengthBatches, eval_batches
from maskwise.experiments.data import Pairs, load_summarization, load_translation
from maskwise.experiments.decoding import beam_decode, greedy_decode
from maskwise.experiments.engine import ControllerConfig, StepOutput, TrainConfig
from maskwise.experiments.items import bleu_statistics, fingerprint
from maskwise.experiments.metrics import bleu_score, rouge_items, rouge_scores
from maskwise.experiments.models import Seq2Seq
from maskwise.experiments.registry import Option, TaskSpec
from maskwise.experiments.tasks.parts import TokenMasking
from maskwise.experiments.tokenizers import BOS, EOS, IGNORE, PAD, UNK, BPETokenizer
from maskwise.nn import DynamicMask, MaskModule

__all__ = [
    "MASK_SIDES",
    "SUMMARIZATION_DEFAULTS",
    "SUMMARIZATION_SPEC",
    "TRANSLATION_DEFAULTS",
    "TRANSLATION_SPEC",
    "PairSplit",
    "Seq2SeqConfig",
    "Seq2SeqTask",
    "summarization",
    "translation",
]

EVAL_BATCH = 256  # pairs per teacher-forced evaluation batch
SAMPLES = 3  # test items whose outputs every run's report shows
MASK_SIDES = ("both", "source", "target")  # what the masker replaces (Seq2SeqConfig.mask_side)
DECODE_BATCH = 512  # pairs per greedy decoding batch

#: ``score(hypotheses, references) -> metrics`` (detokenised text).
Score = Callable[[list[str], list[list[str]]], dict[str, float]]


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Sizes of the data, the model, training, selection and decoding of a :class:`Seq2SeqTask`.

    Attributes:
        train_size: the first N training pairs (None: all).
        vocab_size: the joint BPE vocabulary, trained on the training split.
        max_src, max_tgt: tokens kept per source; most target tokens (the ``[EOS]`` included,
            and the decoding length).
        dim, heads, layers, dropout: the model (``layers`` encoder + ``layers`` decoder blocks).
        batch_size, epochs, lr: training.
        select_size: dev items scored every epoch (model selection).
        train_eval_size: training items scored once at the end (the train-test gap).
        max_eval: cut dev and test to this many items (None: whole; tests and smoke runs).
        no_repeat_ngram: decoding's n-gram blocking (0: none).
        beam: ``> 1``: the selected model's dev and test outputs are also beam-searched with
            this many beams (:func:`~maskwise.experiments.decoding.beam_decode`), scored as
            ``<metric>_beam`` beside the greedy metric (1: greedy only).
        length_penalty: beam search's length penalty.
        mask_side: what masking replaces by ``[MASK]``: ``"both"`` (source tokens and decoder
            inputs, one draw), ``"source"`` (source-side word dropout only) or ``"target"``
            (decoder inputs only).
    """

    train_size: int | None
    vocab_size: int = 3000
    max_src: int = 40
    max_tgt: int = 40
    dim: int = 96
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    batch_size: int = 32
    epochs: int = 6
    lr: float = 2e-3
    select_size: int = 300
    train_eval_size: int = 500
    max_eval: int | None = None
    no_repeat_ngram: int = 0
    beam: int = 4
    length_penalty: float = 1.0
    mask_side: str = "both"

    def __post_init__(self) -> None:
        if self.mask_side not in MASK_SIDES:
            raise ValueError(f"mask_side must be one of {MASK_SIDES} ({self.mask_side!r} given).")
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1 ({self.beam} given).")
        if self.dim < 1 or self.layers < 1 or self.dim % self.heads:
            raise ValueError(
                f"dim must be a positive multiple of heads={self.heads} and layers >= 1 "
                f"(dim={self.dim}, layers={self.layers} given)."
            )


#: Translation defaults (Multi30k de->en; about a minute per run on one CPU core): the first
#: 4,000 of 29,000 training pairs (the low-resource regime, where the model starts to overfit
#: within the budget), sentences cut to 40 tokens, 6 epochs (750 steps). A GPU setting:
#: ``train_size=None, dim=256, layers=3, vocab_size=8000, epochs=20, batch_size=128``.
TRANSLATION_DEFAULTS = Seq2SeqConfig(train_size=4000)

#: Summarization defaults (about 60-80 s per run on one CPU core): at most 2,000 training items,
#: sources cut to 128 tokens, summaries to 40, batch 16, 4 epochs (500 steps); the metric of each
#: epoch on the first 100 dev items. Decoding blocks repeated 4-grams of BPE tokens (as
#: ``no_repeat_ngram_size`` in BART's summarization setting): plain greedy output of these small
#: models loops ("... the new new new new ...") until the length limit, which halved ROUGE-L on
#: DialogSum dev (9.8 against 19.4 with blocking, the same model). A GPU setting:
#: ``train_size=None, max_src=512, dim=256, layers=3, vocab_size=8000, epochs=30``.
SUMMARIZATION_DEFAULTS = Seq2SeqConfig(
    train_size=2000,
    max_src=128,
    batch_size=16,
    epochs=4,
    select_size=100,
    train_eval_size=300,
    no_repeat_ngram=4,
)


@dataclass
class PairSplit:
    """Encoded pairs: ``src`` (N, S) and ``tgt_in`` / ``labels`` (N, T) padded (``PAD`` /
    ``-100``), their lengths (N,), and the texts for the metric."""

    src: torch.Tensor
    src_len: torch.Tensor
    tgt_in: torch.Tensor
    labels: torch.Tensor
    tgt_len: torch.Tensor
    sources: list[str]
    references: list[list[str]]

    def __len__(self) -> int:
        return self.src.shape[0]


def _least(a: int | None, b: int | None) -> int | None:
    """The smaller of two limits, None meaning no limit."""
    return b if a is None else a if b is None else min(a, b)


class Seq2SeqTask:
    """A text-to-text task with a small encoder-decoder transformer, trained from scratch.

    Tokens: one joint BPE vocabulary for source and target (tied embeddings). Masks: ``padding``
    in the encoder, ``causal() & padding`` in the decoder, ``cross`` between them.

    Masking: one :class:`~maskwise.nn.TokenMask` over the source and the decoder inputs side by
    side (``cat([src, tgt_in], 1)``, one draw, one rate): source tokens and decoder inputs are
    replaced by ``[MASK]`` at the same rate (source noising + word dropout), labels unchanged;
    ``mask_side="source"`` or ``"target"`` masks one side only.
    One call per step keeps the :class:`~maskwise.nn.DynamicMask` step count, its monitor and the
    tracker's weights (by token id, joint vocabulary) in one place.

    Selection: every epoch :meth:`evaluate` computes the loss (teacher forcing) and the task's
    metric (greedy decoding) on the first ``select_size`` dev items, cheap enough per epoch; the
    selected model is then measured on the whole dev and test splits and on the first
    ``train_eval_size`` training items (for the train-test gap) by :meth:`final_metrics`.
    Decoding is greedy (argmax) up to ``max_tgt`` tokens, with no-repeat-n-gram blocking when
    ``no_repeat_ngram > 0``; with ``beam > 1`` the selected model's dev and test outputs are
    beam-searched as well (``<metric>_beam``: whether the cheaper greedy measurement ranks the
    arms as beam search does).

    Args:
        raw: ``{"train", "dev", "test"}`` of ``(source, references)``; training uses each item's
            first reference.
        name, metric: the task's name and metric (a key of ``score``'s result).
        score: ``score(hypotheses, references) -> metrics``.
        source: what the data is, for the report.
        config: sizes (:class:`Seq2SeqConfig`).
        controller: the dynamic variant's controller settings.
    """

    higher_is_better = True
    item_name = "tokens"
    default_rates: tuple[float, ...] = (0.1, 0.2, 0.3)

    def __init__(
        self,
        raw: Pairs,
        *,
        name: str,
        metric: str,
        score: Score,
        source: str,
        config: Seq2SeqConfig,
        controller: ControllerConfig,
    ) -> None:
        self.name, self.metric, self.score, self.source = name, metric, score, source
        self.config = c = config
        if c.train_size is not None:
            raw["train"] = raw["train"][: c.train_size]
        if c.max_eval is not None:
            raw["dev"], raw["test"] = raw["dev"][: c.max_eval], raw["test"][: c.max_eval]
        self.raw = raw
        texts = [s for s, _ in raw["train"]] + [r[0] for _, r in raw["train"]]
        self.tokenizer = BPETokenizer(texts, c.vocab_size, kind="text")
        self.vocab = self.tokenizer.get_vocab_size()
        self.splits = {k: self.encode(v) for k, v in raw.items()}
        self.masking = TokenMasking(self.vocab)
        self.train_config = TrainConfig(epochs=c.epochs, lr=c.lr, weight_decay=0.01)
        self.controller = controller

    def encode(self, items: list[tuple[str, list[str]]]) -> PairSplit:
        """Pad-encode pairs (data preparation, once): source truncated to ``max_src`` tokens;
        decoder input ``[BOS] t_1 .. t_k`` and labels ``t_1 .. t_k [EOS]``,
        ``k <= max_tgt - 1``."""
        src_ids = self.tokenizer.encode_batch([s for s, _ in items])
        tgt_ids = self.tokenizer.encode_batch([r[0] for _, r in items])
        N, S, T = len(items), self.config.max_src, self.config.max_tgt
        src = torch.full((N, S), PAD, dtype=torch.long)
        tgt_in = torch.full((N, T), PAD, dtype=torch.long)
        labels = torch.full((N, T), IGNORE, dtype=torch.long)
        src_len = torch.zeros(N, dtype=torch.long)
        tgt_len = torch.zeros(N, dtype=torch.long)
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
            s = s[:S] or [UNK]
            t = t[: T - 1]
            src[i, : len(s)] = torch.tensor(s)
            tgt_in[i, : len(t) + 1] = torch.tensor([BOS] + t)
            labels[i, : len(t) + 1] = torch.tensor(t + [EOS])
            src_len[i], tgt_len[i] = len(s), len(t) + 1
        sources, references = [s for s, _ in items], [r for _, r in items]
        return PairSplit(src, src_len, tgt_in, labels, tgt_len, sources, references)

    def describe(self) -> dict[str, Any]:
        c = self.config
        blocking = f", no repeated {c.no_repeat_ngram}-grams of tokens" if c.no_repeat_ngram else ""
        model = f"encoder-decoder transformer d={c.dim} x{c.layers}+{c.layers}, {c.heads} heads"
        side = {"both": "source + decoder inputs", "source": "source", "target": "decoder inputs"}
        return {
            "setting": f"{model}, {len(self.splits['train'])} train pairs, "
            f"masking {side[c.mask_side]}",
            "data": self.source,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "target_tokens": {k: int(v.tgt_len.sum()) for k, v in self.splits.items()},
            "tokens": f"joint BPE (vocab {self.vocab}), trained on the training split",
            "max_src": c.max_src,
            "max_tgt": c.max_tgt,
            "batch_size": c.batch_size,
            "model": model,
            "masking": {
                "both": "[MASK] over source tokens and decoder inputs, one rate",
                "source": "[MASK] over source tokens (source-side word dropout)",
                "target": "[MASK] over decoder inputs",
            }[c.mask_side],
            "decoding": f"greedy, at most {c.max_tgt} tokens{blocking}"
            + (
                f"; dev and test also by beam search ({c.beam} beams, length penalty "
                f"{c.length_penalty:g}): {self.metric}_beam"
                if c.beam > 1
                else ""
            ),
            "selection": f"dev {self.metric} on the first {c.select_size} dev items each epoch",
            "train_metrics_on": f"the first {c.train_eval_size} training items",
        }

    def build_model(self) -> nn.Module:
        c = self.config
        return Seq2Seq(
            self.vocab,
            dim=c.dim,
            heads=c.heads,
            enc_layers=c.layers,
            dec_layers=c.layers,
            max_len=max(c.max_src, c.max_tgt + 1),
            dropout=c.dropout,
        )

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        return self.masking.make_masker(rate, seed)

    def num_keys(self) -> int:
        return self.masking.vocab

    def fetch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``src`` (B, S), ``src_len``, ``tgt_in`` (B, T), ``labels`` (B, T), ``tgt_len`` of the
        pairs ``idx``, cut to the batch's longest source and target."""
        s = self.splits[split]
        src_len, tgt_len = s.src_len[idx], s.tgt_len[idx]
        S, T = int(src_len.max()), int(tgt_len.max())
        return s.src[idx, :S], src_len, s.tgt_in[idx, :T], s.labels[idx, :T], tgt_len

    def train_batches(self, epoch: int, generator: torch.Generator) -> LengthBatches:
        s = self.splits["train"]
        sort_key = s.src_len * (self.config.max_tgt + 1) + s.tgt_len  # source, then target length
        return LengthBatches(
            sort_key, self.config.batch_size, generator, lambda i: self.fetch("train", i)
        )

    @staticmethod
    def logits(
        model: Any,
        src: torch.Tensor,
        src_len: torch.Tensor,
        tgt_in: torch.Tensor,
        tgt_len: torch.Tensor,
    ) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) under the three masks."""
        memory = model.encode(src, padding(src_len))  # (B, S, E)
        return model.decode(tgt_in, memory, causal() & padding(tgt_len), cross(tgt_len, src_len))

    def train_step(
        self, model: nn.Module, masker: DynamicMask | None, batch: Any, device: torch.device
    ) -> StepOutput:
        n = int(batch[-1].sum())  # target tokens, counted on the host
        src, src_len, tgt_in, labels, tgt_len = (t.to(device) for t in batch)
        side = self.config.mask_side
        if masker is not None and side == "source":
            src = self.masking.apply(masker, src)
        elif masker is not None and side == "target":
            tgt_in = self.masking.apply(masker, tgt_in)
        elif masker is not None:
            both = torch.cat([src, tgt_in], 1)  # (B, S + T): one draw for source and decoder inputs
            both = self.masking.apply(masker, both)
            src, tgt_in = both.split([src.shape[1], tgt_in.shape[1]], 1)
        logits = self.logits(model, src, src_len, tgt_in, tgt_len)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        keys, key_valid = self.masking.target_keys(labels)
        return StepOutput(
            loss,
            logits.detach(),
            labels,
            items=n,
            keys=keys,
            key_valid=key_valid,
            prediction=logits,
        )

    def _limit(self, split: str, limit: int | None) -> int:
        n = len(self.splits[split])
        return n if limit is None else min(limit, n)

    @torch.no_grad()
    def loss_of(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> float:
        """Mean teacher-forced loss per target token over the first ``limit`` items."""
        total, count = 0.0, 0
        for idx in eval_batches(self._limit(split, limit), EVAL_BATCH):
            src, src_len, tgt_in, labels, tgt_len = (t.to(device) for t in self.fetch(split, idx))
            logits = self.logits(model, src, src_len, tgt_in, tgt_len)
            total += float(
                F.cross_entropy(
                    logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
                )
            )
            count += int(tgt_len.sum())
        return total / max(1, count)

    @torch.no_grad()
    def decode(
        self,
        model: nn.Module,
        split: str,
        device: torch.device,
        limit: int | None = None,
        batch_size: int = DECODE_BATCH,
        beam: int = 1,
    ) -> list[str]:
        """Greedy (``beam=1``) or beam-search outputs of the first ``limit`` items of
        ``split``, detokenised."""
        if not isinstance(model, Seq2Seq):
            raise TypeError(f"decode needs a Seq2Seq model ({type(model).__name__} given).")
        c = self.config
        texts: list[str] = []
        for idx in eval_batches(self._limit(split, limit), max(1, batch_size // beam)):
            src, src_len, *_ = self.fetch(split, idx)
            src, src_len = src.to(device), src_len.to(device)
            if beam > 1:
                out = beam_decode(
                    model,
                    src,
                    src_len,
                    c.max_tgt,
                    beam=beam,
                    length_penalty=c.length_penalty,
                    no_repeat_ngram=c.no_repeat_ngram,
                )
            else:
                out = greedy_decode(model, src, src_len, c.max_tgt, c.no_repeat_ngram)
            ids = out.tolist()
            rows = [r[: r.index(EOS)] if EOS in r else r for r in ids]
            texts += self.tokenizer.decode_batch(rows)
        return texts

    def metrics(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        """Loss and ``score`` of the first ``limit`` items of ``split``."""
        hyps = self.decode(model, split, device, limit)
        refs = self.splits[split].references[: len(hyps)]
        return {"loss": self.loss_of(model, split, device, limit), **self.score(hyps, refs)}

    def item_scores(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, Any]:
        """Per-item statistics of the greedy outputs of ``split`` (:mod:`~maskwise.experiments.
        items`): BLEU's sentence statistics (kind ``"bleu"``), or each item's ROUGE-L F1 x 100
        against its first reference (kind ``"mean"``)."""
        hyps = self.decode(model, split, device, limit)
        s = self.splits[split]
        refs = s.references[: len(hyps)]
        items = fingerprint(s.sources[: len(hyps)], [r[0] for r in refs])
        if self.metric == "bleu":
            return {"kind": "bleu", "items": items, "values": bleu_statistics(hyps, refs)}
        return {"kind": "mean", "items": items, "values": rouge_items(hyps, refs, self.metric)}

    def samples(self, model: nn.Module, device: torch.device) -> list[dict[str, str]]:
        """The outputs on the first :data:`SAMPLES` test items, with their first reference."""
        test = self.splits["test"]
        hyps = self.decode(model, "test", device, limit=SAMPLES)
        return [
            {"input": test.sources[i], "reference": test.references[i][0], "output": h}
            for i, h in enumerate(hyps)
        ]

    def evaluate(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        """Per-epoch selection: loss and metric on the first ``select_size`` items of ``split``
        (at most ``limit``)."""
        return self.metrics(model, split, device, _least(self.config.select_size, limit))

    def final_metrics(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        """Every dev and test item; the first ``train_eval_size`` training items (at most
        ``limit`` of each)."""
        own = self.config.train_eval_size if split == "train" else None
        metrics = self.metrics(model, split, device, _least(own, limit))
        if split != "train" and self.config.beam > 1:
            hyps = self.decode(model, split, device, limit, beam=self.config.beam)
            refs = self.splits[split].references[: len(hyps)]
            metrics[f"{self.metric}_beam"] = self.score(hyps, refs)[self.metric]
        return metrics


def translation(
    root: str | Path,
    *,
    src_lang: str = "de",
    tgt_lang: str = "en",
    target_file: str | Path | None = None,
    **sizes: Any,
) -> Seq2SeqTask:
    """Translation (default Multi30k de->en), scored by BLEU.

    BLEU: sacrebleu on detokenised greedy output against the raw references, the whole test
    split. Controller: training-step token accuracy (teacher forcing, on masked inputs),
    ``curriculum``, target 0.32 (the unmasked model reaches 0.35 over the last tenth of a default
    run), initial rate 0.1, bounds [0, 0.5], at most 0.005 per step.

    Args:
        root: a folder of ``<split>.<lang>[.gz]`` files, or a source file
            (:func:`~maskwise.experiments.data.load_translation`).
        src_lang, tgt_lang: the language suffixes of the files.
        target_file: with a source file as ``root``: its aligned target file.
        **sizes: fields of :class:`Seq2SeqConfig` replacing :data:`TRANSLATION_DEFAULTS`'.
    """
    raw = load_translation(root, src_lang, tgt_lang, target_file=target_file)
    return Seq2SeqTask(
        raw,
        name="translation",
        metric="bleu",
        score=bleu_score,
        source=f"{root} ({src_lang}->{tgt_lang})",
        config=replace(TRANSLATION_DEFAULTS, **sizes),
        controller=ControllerConfig(
            target=0.32, initial_rate=0.1, min_rate=0.0, max_rate=0.5, max_delta=0.005
        ),
    )


def summarization(
    root: str | Path,
    *,
    source_field: str | None = None,
    target_field: str | None = None,
    **sizes: Any,
) -> Seq2SeqTask:
    """Abstractive summarization (SciTLDR-A: abstract -> TLDR; DialogSum: dialogue -> summary),
    scored by ROUGE.

    Training uses each item's first reference (SciTLDR's author TLDR). Metric (selection and the
    table): ROUGE-L F1 x 100 against each item's first reference (DialogSum test: ``summary1``),
    so that train, dev and test are scored alike and the train-test gap means something;
    ROUGE-1 / 2 beside it, and ``rouge*_max`` (:func:`rouge_scores`). Controller: training-step
    token accuracy, ``curriculum``, target 0.14 (the unmasked model reaches 0.15 over the last
    tenth of a default SciTLDR run: it is still underfitting), initial rate 0.1, bounds
    [0, 0.5], at most 0.005 per step.

    Args:
        root: a folder of JSONL splits or one JSONL file
            (:func:`~maskwise.experiments.data.load_summarization`).
        source_field, target_field: the JSON fields (default: detected).
        **sizes: fields of :class:`Seq2SeqConfig` replacing :data:`SUMMARIZATION_DEFAULTS`'.
    """
    raw, fields = load_summarization(root, source_field, target_field)
    return Seq2SeqTask(
        raw,
        name="summarization",
        metric="rougeL",
        score=rouge_scores,
        source=f"{root} ({fields[0]} -> {fields[1]})",
        config=replace(SUMMARIZATION_DEFAULTS, **sizes),
        controller=ControllerConfig(
            target=0.14, initial_rate=0.1, min_rate=0.0, max_rate=0.5, max_delta=0.005
        ),
    )


def _options(defaults: Seq2SeqConfig, items: str, metric: str) -> tuple[Option, ...]:
    """The options both tasks share: training size, model size, masking side, beam."""
    return (
        Option(
            "--train-size",
            f"the first N training {items} (default %(default)s)",
            default=defaults.train_size,
            type=int,
        ),
        Option("--dim", "model width (default %(default)s)", defaults.dim, int),
        Option(
            "--layers",
            "encoder and decoder blocks each (default %(default)s)",
            defaults.layers,
            int,
        ),
        Option(
            "--mask-side",
            "both: source tokens and decoder inputs; source: source-side word dropout; "
            "target: decoder inputs only (default %(default)s)",
            default=defaults.mask_side,
            choices=MASK_SIDES,
        ),
        Option(
            "--beam",
            f"beam size of the final dev / test decoding, scored as {metric}_beam beside the "
            "greedy metric (1: greedy only; default %(default)s)",
            default=defaults.beam,
            type=int,
        ),
    )


TRANSLATION_SPEC = TaskSpec(
    name="translation",
    help="translation (encoder-decoder transformer, BLEU)",
    description="Translate with a small encoder-decoder transformer over a joint BPE "
    "vocabulary; masking replaces source tokens and decoder inputs by [MASK]; the metric is "
    "BLEU of greedy decoding.",
    build=translation,
    data="mt/multi30k",
    dataset="Multi30k (task 1, de-en): line-aligned train.de.gz / train.en.gz, val.*, "
    "test_2016_flickr.* (any '<split>.<lang>[.gz]' files)",
    options=(
        *_options(TRANSLATION_DEFAULTS, "pairs", "bleu"),
        Option("--src-lang", "source language suffix of the files (default %(default)s)", "de"),
        Option("--tgt-lang", "target language suffix of the files (default %(default)s)", "en"),
        Option(
            "--target-file",
            "with --data SOURCE_FILE: the aligned target file (default: the source name "
            "with the language suffix swapped)",
        ),
    ),
)

SUMMARIZATION_SPEC = TaskSpec(
    name="summarization",
    help="summarization (encoder-decoder transformer, ROUGE)",
    description="Summarize with a small encoder-decoder transformer over a joint BPE "
    "vocabulary; masking replaces source tokens and decoder inputs by [MASK]; the metric is "
    "ROUGE-L of greedy decoding (no repeated 4-grams).",
    build=summarization,
    data="summarization/scitldr",
    dataset="SciTLDR-A (or DialogSum): JSONL splits train.jsonl / dev.jsonl / test.jsonl "
    "with source and target fields",
    options=(
        *_options(SUMMARIZATION_DEFAULTS, "items", "rougeL"),
        Option("--source-field", "the JSONL source field (default: detected)"),
        Option("--target-field", "the JSONL target field (default: detected)"),
    ),
)
