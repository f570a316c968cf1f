"""Language modelling: a decoder-only transformer on a text file or a folder of documents, with
input-token noising (``[MASK]`` or unigram); documents optionally packed into rows
(:mod:`maskwise.packing`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskwise.attention import AttentionSpec, causal, documents, drop_keys
from maskwise.experiments.batching import Batches, eval_batches
from maskwise.experiments.data import read_documents, split_documents
from maskwise.experiments.decoding import greedy_generate
from maskwise.experiments.engine import ControllerConfig, StepOutput, TrainConfig
from maskwise.experiments.items import fingerprint
from maskwise.experiments.models import DecoderLM
from maskwise.experiments.registry import Option, TaskSpec
from maskwise.experiments.tasks.parts import TokenMasking
from maskwise.experiments.tokenizers import BOS, EOS, IGNORE, BPETokenizer, CharTokenizer
from maskwise.nn import DynamicMask, MaskModule
from maskwise.packing import PackedRows, pack_rows, pad_rows, pieces_of

__all__ = ["LAYOUTS", "NOISES", "SPEC", "LanguageModeling", "lm_spec"]

LAYOUTS = ("stream", "pack", "pad")
#: Input noising: ``mask`` (blank noising: ``[MASK]``) or ``unigram`` (draws from the training
#: tokens' unigram distribution), Xie et al. 2017; targets are never noised. ``none``: no input
#: noising, for attention key dropping alone (``key_drop=True``: DropKey as its own arm).
NOISES = ("mask", "unigram", "none")
TRAIN_CHARS = 100_000  # default training text: the small-data regime (see LanguageModeling)
EVAL_BATCH = 64  # rows per evaluation batch
SAMPLE_PROMPTS = 3  # test prompts continued in every run's report
SAMPLE_CHARS = 80  # characters of each prompt


def lm_spec(layout: str, doc_ids: torch.Tensor) -> AttentionSpec:
    """The attention mask of a layout: ``causal() & documents(doc_ids)`` for packed rows;
    ``causal()`` for stream and padded rows (one document per row, padding only at the end, so no
    real query ever sees a padded key under the causal rule: the cheaper kernel is exact)."""
    return causal() & documents(doc_ids) if layout == "pack" else causal()


class LanguageModeling:
    """Decoder-only transformer LM with input-token noising.

    Data: a UTF-8 file (documents separated by blank lines) or a folder (one file per document),
    split contiguously: train = the first 85 % of the characters, dev = 85-90 % (model selection),
    test = the last 10 % (tiny-shakespeare's conventional validation split). ``train_chars`` keeps
    the first documents of train up to that many characters (default 100k: the small-data regime,
    where the unmasked model overfits within the budget: train loss 2.0 against test 2.39 on
    tiny-shakespeare, so regularisation has something to do).

    Layouts (``layout``): ``"stream"`` (default: the split's text as one stream cut into rows,
    ``causal()``, as nanoGPT), ``"pack"`` (documents as ``[BOS] text [EOS]``, cut into pieces of
    at most ``seq_len`` predictions, packed into rows under ``causal() & documents(...)``,
    positions restart per document: :func:`maskwise.packing.pack_rows`) and ``"pad"`` (the same
    pieces, one per row, padded: the baseline that packing is measured against). Evaluation uses
    the same layout, unmasked.

    Masking: :class:`~maskwise.nn.TokenMask` replaces a ``rate`` of the input tokens by
    ``[MASK]`` (``noise="mask"``, blank noising) or by draws from the training tokens' unigram
    distribution (``noise="unigram"``, Xie et al. 2017); targets are unchanged. The dynamic
    variant steers the rate by the training step's next-token accuracy and weights tokens by
    their running loss as targets (a :class:`~maskwise.dynamic.DifficultyTracker` over the
    vocabulary). With ``key_drop=True``
    masked variants also drop attention keys at the same rate (``causal() & drop_keys(rate)``).

    Defaults (about 60 s per run on one CPU core; ~21k tokens / s): characters, rows of 64,
    batch 16, a 3-layer d=96 model, 10 epochs of 100k characters (1,000 steps, lr 1.5e-3: small
    batches and many steps; rows of 128 x 32 reached only the bigram plateau, loss 2.5, in the same
    time). A GPU setting: ``train_chars=None, seq_len=256, batch_size=64, dim=384, layers=6,
    epochs=20`` (nanoGPT's shakespeare-char size).

    Controller (dynamic variant): accuracy of the training step's next-token predictions,
    ``curriculum`` direction, target 0.36, a little below the unmasked model's late-training
    step accuracy (0.39, measured over the last tenth of a default run), initial rate 0.05,
    bounds [0, 0.4], at most 0.005 per step. No floor: early on the model is far below the
    target, masking would only slow it down, and the rate stays at 0 until the model fits its
    training text better than the target (about 60 % into the run).
    """

    name = "language-modeling"
    metric = "perplexity"
    higher_is_better = False
    item_name = "tokens"
    default_rates: tuple[float, ...] = (0.05, 0.1, 0.2)

    def __init__(
        self,
        root: str | Path,
        *,
        layout: str = "stream",
        tokens: str = "char",
        vocab_size: int = 2000,
        seq_len: int = 64,
        batch_size: int = 16,
        train_chars: int | None = TRAIN_CHARS,
        dim: int = 96,
        heads: int = 4,
        layers: int = 3,
        dropout: float = 0.1,
        epochs: int = 10,
        lr: float = 1.5e-3,
        key_drop: bool = False,
        noise: str = "mask",
    ) -> None:
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES} ({noise!r} given).")
        if noise == "none" and not key_drop:
            raise ValueError("noise='none' masks nothing without key_drop=True (DropKey alone).")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'stream', 'pack' or 'pad' ({layout!r} given).")
        if tokens not in ("char", "bpe"):
            raise ValueError(f"tokens must be 'char' or 'bpe' ({tokens!r} given).")
        self.source = str(root)
        docs = split_documents(read_documents(root))
        if train_chars is not None:
            kept, total = [], 0
            for d in docs["train"]:
                if total >= train_chars:
                    break
                kept.append(d)
                total += len(d)
            docs["train"] = kept
        self.docs = docs
        self.tokenizer: CharTokenizer | BPETokenizer = (
            CharTokenizer("\n\n".join(docs["train"]))
            if tokens == "char"
            else BPETokenizer(docs["train"], vocab_size, kind="bytes")
        )
        self.vocab = self.tokenizer.get_vocab_size()
        self.layout, self.tokens, self.seq_len, self.batch_size = (
            layout,
            tokens,
            seq_len,
            batch_size,
        )
        self.dim, self.heads, self.layers, self.dropout = dim, heads, layers, dropout
        self.key_drop = key_drop
        self.rows = {split: self.make_rows(d, layout) for split, d in docs.items()}
        self.chars = {split: sum(len(x) for x in d) for split, d in docs.items()}
        self.noise = noise
        unigram = None
        if noise == "unigram":
            unigram = TokenMasking.counts(self.rows["train"].targets, self.vocab)
        self.masking = TokenMasking(self.vocab, unigram=unigram)
        self.train_config = TrainConfig(epochs=epochs, lr=lr, weight_decay=0.1)
        self.controller = ControllerConfig(
            target=0.36, initial_rate=0.05, min_rate=0.0, max_rate=0.4, max_delta=0.005
        )

    def make_rows(self, docs: Sequence[str], layout: str) -> PackedRows:
        """Rows of ``docs`` in ``layout`` (``seq_len`` predictions per row)."""
        if layout == "stream":
            seq = self.tokenizer.encode("\n\n".join(docs) + "\n\n")
            return pad_rows(pieces_of([seq], self.seq_len), self.seq_len)
        seqs = [
            torch.cat([torch.tensor([BOS]), self.tokenizer.encode(d), torch.tensor([EOS])])
            for d in docs
        ]
        p = pieces_of(seqs, self.seq_len)
        return pack_rows(p, self.seq_len) if layout == "pack" else pad_rows(p, self.seq_len)

    def describe(self) -> dict[str, Any]:
        key_drop = " + attention key dropping at the same rate" if self.key_drop else ""
        noising = {"mask": "[MASK] noising", "unigram": "unigram noising", "none": "no noising"}
        setting = (
            f"decoder d={self.dim} x{self.layers}, {self.tokens} (vocab {self.vocab}), "
            f"{self.chars['train'] // 1000}k train chars, {noising[self.noise]}"
            + (" + key dropping" if self.key_drop else "")
        )
        return {
            "setting": setting,
            "data": self.source,
            "layout": self.layout,
            "characters": self.chars,
            "documents": {k: len(v) for k, v in self.docs.items()},
            "rows": {k: len(v) for k, v in self.rows.items()},
            "target_tokens": {k: v.tokens for k, v in self.rows.items()},
            "tokens": f"{self.tokens} (vocab {self.vocab})",
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "model": f"decoder-only transformer d={self.dim} x{self.layers}, {self.heads} heads",
            "masking": "attention key dropping only (DropKey), no input noising"
            if self.noise == "none"
            else f"input-token noising ({self.noise}: "
            + ("[MASK]" if self.noise == "mask" else "unigram draws")
            + " replace inputs, targets unchanged)"
            + key_drop,
            "split": "train first 85% of characters (capped), dev 85-90%, test last 10%",
        }

    def build_model(self) -> nn.Module:
        return DecoderLM(
            self.vocab,
            dim=self.dim,
            heads=self.heads,
            layers=self.layers,
            max_len=self.seq_len,
            dropout=self.dropout,
        )

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        return self.masking.make_masker(rate, seed)

    def num_keys(self) -> int:
        return self.masking.vocab

    def fetch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs, targets, document ids, positions (B, L) of rows ``idx``, and the number of
        targets (counted here, on the host)."""
        r = self.rows[split]
        targets = r.targets[idx]
        return r.inputs[idx], targets, r.doc_ids[idx], r.positions[idx], (targets != IGNORE).sum()

    def train_batches(self, epoch: int, generator: torch.Generator) -> Batches:
        return Batches(
            len(self.rows["train"]), self.batch_size, generator, lambda i: self.fetch("train", i)
        )

    def forward(
        self,
        model: nn.Module,
        ids: torch.Tensor,
        doc_ids: torch.Tensor,
        positions: torch.Tensor,
        extra: AttentionSpec | None = None,
    ) -> torch.Tensor:
        """Logits (B, L, V) under the layout's mask (and ``extra``, e.g. key dropping)."""
        spec = lm_spec(self.layout, doc_ids)
        if extra is not None:
            spec = spec & extra
        return model(ids, spec, positions if self.layout != "stream" else None)

    def train_step(
        self, model: nn.Module, masker: DynamicMask | None, batch: Any, device: torch.device
    ) -> StepOutput:
        n = int(batch[-1])  # counted on the host by fetch: no device sync
        ids, labels, doc_ids, pos = (t.to(device) for t in batch[:-1])
        extra = None
        if masker is not None:
            step = int(masker.step) if self.key_drop else 0
            if self.noise == "none":  # DropKey alone: the DynamicMask is the rate and the step
                masker.masker.rate = rate = masker.current_rate()
                if masker.monitor is not None:
                    masker.monitor.record(step, rate=rate)
                masker.step += 1
            else:
                ids = self.masking.apply(masker, ids)
            if self.key_drop and masker.masker.rate > 0:
                extra = drop_keys(masker.masker.rate, seed=masker.masker.generators.seed)
                extra.step = step
        logits = self.forward(model, ids, doc_ids, pos, extra)  # (B, L, V)
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

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        """Mean next-token loss, perplexity and accuracy over every target of ``split`` (of its
        first ``limit`` rows)."""
        total, correct, count = 0.0, 0, 0
        rows = len(self.rows[split]) if limit is None else min(len(self.rows[split]), limit)
        for idx in eval_batches(rows, EVAL_BATCH):
            *batch, n = self.fetch(split, idx)
            ids, labels, doc_ids, pos = (t.to(device) for t in batch)
            logits = self.forward(model, ids, doc_ids, pos)
            total += float(
                F.cross_entropy(
                    logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
                )
            )
            correct += int((logits.argmax(-1) == labels).sum())
            count += int(n)
        loss = total / max(1, count)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "accuracy": correct / max(1, count),
        }

    def final_metrics(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        return self.evaluate(model, split, device, limit)

    @torch.no_grad()
    def item_scores(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, Any]:
        """``[loss_sum, targets]`` of every row of ``split`` (its first ``limit``), kind
        ``"perplexity"`` (:mod:`maskwise.experiments.items`): summed, the split's perplexity."""
        values: list[list[float]] = []
        rows = len(self.rows[split]) if limit is None else min(len(self.rows[split]), limit)
        for idx in eval_batches(rows, EVAL_BATCH):
            *batch, _ = self.fetch(split, idx)
            ids, labels, doc_ids, pos = (t.to(device) for t in batch)
            logits = self.forward(model, ids, doc_ids, pos)
            loss = F.cross_entropy(
                logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
            )  # (B, L)
            counts = (labels != IGNORE).sum(1)
            values += [[float(a), int(c)] for a, c in zip(loss.sum(1).tolist(), counts.tolist())]
        items = fingerprint(self.rows[split].inputs[:rows], self.rows[split].targets[:rows])
        return {"kind": "perplexity", "items": items, "values": values}

    def samples(self, model: nn.Module, device: torch.device) -> list[dict[str, str]]:
        """Greedy continuations of :data:`SAMPLE_PROMPTS` fixed test prompts (each the
        :data:`SAMPLE_CHARS` characters from a line start at 0, 1/3 and 2/3 of the test text),
        with the text that really follows, as long as the output."""
        text = "\n\n".join(self.docs["test"])
        max_new = SAMPLE_CHARS if self.tokens == "char" else SAMPLE_CHARS // 4
        out = []
        for k in range(SAMPLE_PROMPTS):
            line = re.compile(r"\n+(?=\S)").search(text, k * len(text) // SAMPLE_PROMPTS)
            start = line.end() if k and line is not None else 0
            end = start + SAMPLE_CHARS
            generated = self.generate(model, text[start:end], max_new=max_new, device=device)
            out.append(
                {
                    "input": text[start:end],
                    "reference": text[end : end + len(generated)],
                    "output": generated,
                }
            )
        return out

    @torch.no_grad()
    def generate(
        self, model: nn.Module, prompt: str, max_new: int = 64, device: torch.device | str = "cpu"
    ) -> str:
        """Greedy continuation of ``prompt`` (a decoding check; sampling is not needed here).

        The context is the last ``seq_len`` tokens; in the document layouts the prompt starts a
        document (``[BOS]`` first) and generation stops at ``[EOS]``. Uses the model's key/value
        caches (:func:`~maskwise.experiments.decoding.greedy_generate`).
        """
        if not isinstance(model, DecoderLM):
            raise TypeError(f"generate needs a DecoderLM ({type(model).__name__} given).")
        ids = self.tokenizer.encode(prompt)
        if self.layout != "stream":
            ids = torch.cat([torch.tensor([BOS]), ids])
        out = greedy_generate(
            model,
            ids.to(device).unsqueeze(0),
            max_new,
            max_len=self.seq_len,
            eos_id=EOS if self.layout != "stream" else None,
        )
        return self.tokenizer.decode(out[0].tolist())


def _build(
    data: str, *, train_size: int, tokens: str, pack: bool, key_drop: bool, noise: str
) -> Any:
    return LanguageModeling(
        data,
        layout="pack" if pack else "stream",
        tokens=tokens,
        train_chars=train_size,
        key_drop=key_drop,
        noise=noise,
    )


SPEC = TaskSpec(
    name="language-modeling",
    help="character / BPE language modelling (decoder-only transformer, input noising)",
    description="Train a small decoder-only transformer on a text; masking replaces input "
    "tokens by [MASK] (targets unchanged); the metric is test perplexity.",
    build=_build,
    data="lm/tinyshakespeare",
    dataset="tiny-shakespeare's input.txt (any UTF-8 text file with documents separated "
    "by blank lines, or a folder with one document per file)",
    options=(
        Option(
            "--train-size",
            "the first N training characters (default %(default)s)",
            default=TRAIN_CHARS,
            type=int,
        ),
        Option(
            "--tokens",
            "char: characters, bpe: byte-level BPE (default %(default)s)",
            default="char",
            choices=("char", "bpe"),
        ),
        Option(
            "--pack",
            "pack documents into rows under causal() & documents(...) "
            "(default: the text as one stream under causal())",
            flag_only=True,
        ),
        Option(
            "--key-drop",
            "masked variants also drop attention keys at the masking rate",
            flag_only=True,
        ),
        Option(
            "--noise",
            "mask: noised inputs become [MASK]; unigram: draws from the training tokens' "
            "unigram distribution; none: no input noising, only --key-drop (DropKey alone) "
            "(default %(default)s)",
            default="mask",
            choices=NOISES,
        ),
    ),
)
