"""Masked-language-model pretraining of a small BERT-style encoder with Hugging Face ``Trainer``,
cached on disk by its settings (the first stage of ``maskwise run pretrain-finetune``).

* :data:`PRETRAIN_ARMS`: how the pretraining masks, each an :class:`~maskwise.collators.MLMCollator`
  (:func:`make_collator`): ``token`` (15 % of tokens, BERT), ``word`` (15 % of whole words),
  ``span`` (15 % of tokens in spans of mean length 3, SpanBERT), ``decay`` (15 % of tokens at a
  rate decaying linearly from 30 % at step 0 to 15 % at the last step, Ankner et al. 2024) and
  ``dynamic`` (the library's default controller, :meth:`ReliabilityController.default`, with a
  15 % floor: MLM has no loss without targets, so the default's rate 0 is replaced by the floor;
  it raises the rate once the held-out MLM loss rises, holding the train / held-out gap).
* :func:`pretrain`: ``transformers.Trainer`` (``MaskwiseTrainer`` + ``MaskwiseCallback``) with
  ``eval_strategy="steps"`` on held-out text, so the controller gets ``eval_loss``; the curves
  (training loss, held-out MLM loss, rate over steps) and a fixed-mask held-out loss (the same
  15 % token masks for every arm: the comparable number) are saved with the checkpoint.
* The checkpoint lives in ``cache_root() / <hash>``, the hash of every setting, the tokenizer and
  the corpus: a second run with the same settings loads it instead of training.

Needs the ``hf`` extra (transformers, tokenizers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from maskwise.collators import MLMCollator
from maskwise.dynamic import ReliabilityController, linear_decay
from maskwise.experiments.tokenizers import MASK, NUM_SPECIALS, PAD, WORDPIECE_SPECIALS

__all__ = [
    "PRETRAIN_ARMS",
    "EncoderConfig",
    "PretrainConfig",
    "bert_config",
    "cache_root",
    "cached_wordpiece",
    "encode_mlm",
    "heldout_mlm_loss",
    "make_collator",
    "pretrain",
]

#: The pretraining arms (see the module docstring).
PRETRAIN_ARMS = ("token", "word", "span", "decay", "dynamic")
CLS, SEP = WORDPIECE_SPECIALS.index("[CLS]"), WORDPIECE_SPECIALS.index("[SEP]")
RECORD = "pretrain.json"  # the record saved beside a cached checkpoint


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The encoder's shape: BERT with ``layers`` layers of width ``hidden`` (feed-forward
    ``4 * hidden``, heads of width 64), ``max_len`` positions."""

    vocab_size: int
    hidden: int = 128
    layers: int = 2
    max_len: int = 64

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "layers", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 ({value!r} given).")
        if self.hidden % 64 and self.hidden % 32:
            raise ValueError(f"hidden must be a multiple of 32 ({self.hidden} given).")


def bert_config(enc: EncoderConfig, **kwargs: Any) -> Any:
    """The ``transformers.BertConfig`` of ``enc`` (random initialisation; nothing downloaded);
    ``kwargs`` (e.g. ``num_labels``) are added."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=enc.vocab_size,
        hidden_size=enc.hidden,
        num_hidden_layers=enc.layers,
        num_attention_heads=max(1, enc.hidden // 64),
        intermediate_size=4 * enc.hidden,
        max_position_embeddings=enc.max_len,
        pad_token_id=PAD,
        **kwargs,
    )


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run: the arm, the budget and the optimiser (AdamW, linear warm-up then
    linear decay, as BERT), evaluated on the held-out text every ``eval_every`` steps."""

    arm: str = "token"
    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    eval_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arm not in PRETRAIN_ARMS:
            raise ValueError(f"arm must be one of {PRETRAIN_ARMS} ({self.arm!r} given).")
        for name in ("steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 ({value!r} given).")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0 ({self.lr!r} given).")


def make_collator(cfg: PretrainConfig, vocab_size: int) -> tuple[MLMCollator, Any]:
    """The arm's ``MLMCollator`` (80/10/10 corruption, special ids 0-4 never masked) and its
    controller (None but for ``dynamic``).

    >>> c, _ = make_collator(PretrainConfig("decay", steps=100), 50)
    >>> c.rate, c.unit
    (0.3, 'token')
    """
    controller = None
    rate: Any = 0.15
    unit = {"word": "word", "span": "span"}.get(cfg.arm, "token")
    if cfg.arm == "decay":
        # Ankner et al. (2024): 30 % at step 0, linearly down to 15 % at the last step.
        rate = linear_decay(0.3, cfg.steps, floor=0.15)
    elif cfg.arm == "dynamic":
        # The library default with a 15 % floor: an MLM batch without targets has no loss.
        controller = ReliabilityController.default(rate=0.15, min_rate=0.15)
        rate = controller
    collator = MLMCollator(
        mask_id=MASK,
        pad_id=PAD,
        vocab_size=vocab_size,
        special_ids=range(NUM_SPECIALS),
        rate=rate,
        unit=unit,
        seed=cfg.seed,
        index_key=None,
    )
    return collator, controller


def encode_mlm(tokenizer: Any, texts: Sequence[str], max_len: int) -> list[dict[str, list[int]]]:
    """``[CLS] tokens [SEP]`` per text (cut to ``max_len``), with ``word_ids`` (-1 on the special
    tokens) for whole-word masking; empty texts are left out."""
    out = []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids = enc.ids[: max_len - 2]
        if not ids:
            continue
        words = [-1 if w is None else int(w) for w in enc.word_ids[: len(ids)]]
        out.append({"input_ids": [CLS, *ids, SEP], "word_ids": [-1, *words, -1]})
    return out


def cache_root() -> Path:
    """Where pretrained checkpoints are cached: ``$MASKWISE_CACHE/pretrain``, else
    ``$XDG_CACHE_HOME/maskwise/pretrain`` (default ``~/.cache/maskwise/pretrain``)."""
    base = os.environ.get("MASKWISE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "maskwise"
    )
    return Path(base) / "pretrain"


def cached_wordpiece(
    texts: Sequence[str], vocab_size: int, *, cache: str | Path | None = None
) -> Any:
    """:func:`~maskwise.experiments.tokenizers.train_wordpiece` of ``texts``, saved in the cache
    (``wordpiece-<hash>.json``, the hash of the texts and ``vocab_size``) and loaded from there
    on later runs. Training breaks ties between equally frequent pieces differently in every
    process (``tokenizers`` hashes with a per-process seed), so without this a rerun would get
    other token ids, and the cached checkpoints (keyed by the tokenizer) would never be reused.
    """
    from tokenizers import Tokenizer

    from maskwise.experiments.tokenizers import train_wordpiece

    h = hashlib.sha256(f"wordpiece {vocab_size}".encode())
    for t in texts:
        h.update(t.encode() + b"\n")
    root = Path(cache) if cache is not None else cache_root()
    path = root / f"wordpiece-{h.hexdigest()[:16]}.json"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        train_wordpiece(list(texts), vocab_size).save(str(tmp))
        tmp.replace(path)
    return Tokenizer.from_file(str(path))  # loaded also on the first run: one serialisation


def cache_key(
    cfg: PretrainConfig,
    enc: EncoderConfig,
    tokenizer: Any,
    train: Sequence[str],
    held: Sequence[str],
) -> str:
    """A hash of everything the checkpoint depends on: the settings, the tokenizer, the texts."""
    import transformers

    h = hashlib.sha256()
    meta = {
        "pretrain": dataclasses.asdict(cfg),
        "encoder": dataclasses.asdict(enc),
        "transformers": transformers.__version__.split(".")[0],
        "version": 1,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(tokenizer.to_str().encode())
    for part in (train, held):
        h.update(b"\x00split")
        for t in part:
            h.update(t.encode() + b"\n")
    return f"{cfg.arm}-{h.hexdigest()[:16]}"


@torch.no_grad()
def heldout_mlm_loss(
    model: Any, examples: Sequence[dict[str, list[int]]], vocab_size: int, *, batch_size: int = 128
) -> dict[str, float]:
    """The model's MLM loss and masked-token accuracy on ``examples`` under one fixed masking:
    15 % of tokens, 80/10/10, seed 1234, so every arm is scored on the same masks (the loss
    is the mean over masked tokens)."""
    cfg = PretrainConfig("token", seed=1234)
    collator, _ = make_collator(cfg, vocab_size)
    model.eval()
    total, correct, count = 0.0, 0, 0
    for i in range(0, len(examples), batch_size):
        batch = collator([dict(e) for e in examples[i : i + batch_size]])
        batch.pop("word_ids", None)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        valid = labels != -100
        total += float(
            torch.nn.functional.cross_entropy(logits[valid], labels[valid], reduction="sum")
        )
        correct += int((logits[valid].argmax(-1) == labels[valid]).sum())
        count += int(valid.sum())
    return {"mlm_loss": total / max(1, count), "mlm_accuracy": correct / max(1, count)}


class _Dataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, examples: Sequence[dict[str, list[int]]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return dict(self.examples[i])


def _curves(history: Sequence[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """``{"train_loss", "eval_loss", "rate"}``: ``[step, value]`` points of Trainer's log."""
    out: dict[str, list[list[float]]] = {"train_loss": [], "eval_loss": [], "rate": []}
    for row in history:
        step = int(row.get("step", 0))
        for key, name in (("loss", "train_loss"), ("eval_loss", "eval_loss")):
            if key in row:
                out[name].append([step, float(row[key])])
        if "maskwise_rate" in row:
            out["rate"].append([step, float(row["maskwise_rate"])])
    return out


def pretrain(
    cfg: PretrainConfig,
    enc: EncoderConfig,
    tokenizer: Any,
    train_texts: Sequence[str],
    heldout_texts: Sequence[str],
    *,
    cache: str | Path | None = None,
    device: str = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Pretrain (or load from the cache) the encoder of ``enc`` with ``cfg``'s arm on
    ``train_texts``, evaluating on ``heldout_texts``; return the checkpoint folder and its record
    (``cached``: whether it was loaded, ``curves``, ``heldout``: the fixed-mask loss, ``seconds``).

    ``progress(step, total, message)`` is called as Trainer logs (for progress bars).
    """
    from maskwise.integrations.hf import MaskwiseCallback, MaskwiseTrainer

    if not train_texts or not heldout_texts:
        raise ValueError(
            f"pretraining needs training and held-out texts ({len(train_texts)} and "
            f"{len(heldout_texts)} given)."
        )
    root = Path(cache) if cache is not None else cache_root()
    folder = root / cache_key(cfg, enc, tokenizer, train_texts, heldout_texts)
    if (folder / RECORD).is_file():
        record = json.loads((folder / RECORD).read_text())
        record["cached"] = True
        return folder, record
    from transformers import BertForMaskedLM, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # ours instead (or none with --quiet)
    started = time.perf_counter()
    train = encode_mlm(tokenizer, train_texts, enc.max_len)
    held = encode_mlm(tokenizer, heldout_texts, enc.max_len)
    torch.manual_seed(cfg.seed)
    model = BertForMaskedLM(bert_config(enc))
    collator, controller = make_collator(cfg, enc.vocab_size)

    class Progress(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if progress is not None and logs:
                what = " ".join(
                    f"{k} {float(v):.3f}"
                    for k, v in logs.items()
                    if k in ("loss", "eval_loss", "maskwise_rate")
                )
                progress(int(state.global_step), cfg.steps, f"{cfg.arm}: {what}")

    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=128,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=max(1, int(cfg.warmup_fraction * cfg.steps)),
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=cfg.eval_every,
        logging_steps=max(1, min(cfg.eval_every, cfg.steps) // 4),
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        remove_unused_columns=False,  # word_ids must reach the collator
        disable_tqdm=True,
        use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0,
    )
    trainer = MaskwiseTrainer(
        model=model,
        args=args,
        train_dataset=_Dataset(train),
        eval_dataset=_Dataset(held),
        data_collator=collator,
        controller=controller,
        callbacks=[MaskwiseCallback(collator, controller=controller), Progress()],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict
    trainer.train()
    model.to(torch.device("cpu"))  # type: ignore[arg-type]  # Trainer trained it in place
    heldout = heldout_mlm_loss(model, held, enc.vocab_size)
    record = {
        "arm": cfg.arm,
        "settings": dataclasses.asdict(cfg),
        "encoder": dataclasses.asdict(enc),
        "train_texts": len(train),
        "heldout_texts": len(held),
        "tokens_per_step": cfg.batch_size * sum(len(e["input_ids"]) for e in train) / len(train),
        "curves": _curves(trainer.state.log_history),
        "heldout": heldout,
        "final_rate": float(collator.rate),
        "seconds": time.perf_counter() - started,
    }
    model.save_pretrained(str(work / "model"))
    (work / "model" / RECORD).write_text(json.dumps(record, indent=1))
    try:  # another process may have finished the same checkpoint first: keep that one
        (work / "model").rename(folder)
    except OSError:
        pass
    shutil.rmtree(work, ignore_errors=True)
    record["cached"] = False
    return folder, record
