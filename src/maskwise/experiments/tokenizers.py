"""Tokenizers of the experiment tasks, all with the same five special ids first.

* :class:`CharTokenizer`: characters (language modelling; no training, exact decoding);
* :class:`BPETokenizer`: a ``tokenizers`` BPE trained on the training texts, either over words and
  punctuation (``kind="text"``: the encoder-decoder tasks' joint vocabulary; normally spaced text
  round-trips, so BLEU / ROUGE see detokenised text) or over bytes (``kind="bytes"``: language
  modelling; any UTF-8 text round-trips);
* :func:`train_wordpiece`: a lower-cased WordPiece (text classification).

Ids 0-4 are ``[PAD] [UNK] [BOS] [EOS] [MASK]`` (``[CLS] [SEP]`` in place of BOS / EOS for
WordPiece): padding, BOS, EOS and ``[MASK]`` are never masked, and padding is never a loss target
(labels are :data:`IGNORE` there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "BOS",
    "EOS",
    "IGNORE",
    "MASK",
    "NUM_SPECIALS",
    "PAD",
    "SPECIALS",
    "UNK",
    "WORDPIECE_SPECIALS",
    "BPETokenizer",
    "CharTokenizer",
    "train_wordpiece",
]

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"]
WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, BOS, EOS, MASK = range(5)
NUM_SPECIALS = len(SPECIALS)
IGNORE = -100  # the label of positions without a target (PyTorch's ignore_index)


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the text tasks need tokenizers: pip install 'maskwise[experiments]'"
        ) from e
    return tokenizers


class CharTokenizer:
    """Character vocabulary of a training text: the special tokens, then its characters in code
    point order; characters never seen in training become ``[UNK]``.

    Encoding is one ``searchsorted`` over the text's code points (no Python loop over characters).

    >>> tok = CharTokenizer("abca")
    >>> tok.encode("cab?").tolist()
    [7, 5, 6, 1]
    >>> tok.decode([7, 5, 6, 1])
    'cab'
    """

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        if not self.chars:
            raise ValueError("CharTokenizer needs a non-empty training text.")
        self.codes = torch.tensor([ord(c) for c in self.chars], dtype=torch.long)

    def get_vocab_size(self) -> int:
        return NUM_SPECIALS + len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """(N,) int64 ids of ``text``'s characters."""
        if not text:
            return torch.zeros(0, dtype=torch.long)
        cp = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).long()
        i = torch.searchsorted(self.codes, cp).clamp(max=len(self.chars) - 1)
        return torch.where(self.codes[i] == cp, i + NUM_SPECIALS, UNK)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; special ids are dropped."""
        return "".join(self.chars[i - NUM_SPECIALS] for i in ids if i >= NUM_SPECIALS)


class BPETokenizer:
    """A ``tokenizers`` BPE trained on ``texts``, with the special ids 0-4.

    Args:
        texts: the training texts.
        vocab_size: the vocabulary size, special ids included.
        kind: ``"text"``: Metaspace + punctuation pre-tokenizer (words, punctuation; exact
            decoding of normally spaced text, e.g. ``"vieler Büsche."``); ``"bytes"``: byte-level
            BPE (any UTF-8 text, newlines included, decodes exactly).
    """

    def __init__(self, texts: Sequence[str], vocab_size: int, *, kind: str = "text") -> None:
        tk = _import_tokenizers()
        if kind == "bytes":
            tok = tk.Tokenizer(tk.models.BPE())
            tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = tk.decoders.ByteLevel()
            alphabet = tk.pre_tokenizers.ByteLevel.alphabet()
        elif kind == "text":
            tok = tk.Tokenizer(tk.models.BPE(unk_token="[UNK]"))
            tok.pre_tokenizer = tk.pre_tokenizers.Sequence(
                [tk.pre_tokenizers.Metaspace(), tk.pre_tokenizers.Punctuation()]
            )
            tok.decoder = tk.decoders.Metaspace()
            alphabet = []
        else:
            raise ValueError(f"kind must be 'text' or 'bytes' ({kind!r} given).")
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS,
            initial_alphabet=alphabet,
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        self.tok = tok

    def get_vocab_size(self) -> int:
        return int(self.tok.get_vocab_size())

    def encode(self, text: str) -> torch.Tensor:
        """(N,) int64 ids of ``text``."""
        return torch.tensor(self.tok.encode(text, add_special_tokens=False).ids, dtype=torch.long)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; special ids are dropped."""
        return str(self.tok.decode([i for i in ids if i >= NUM_SPECIALS]))

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return list(self.tok.decode_batch([[i for i in r if i >= NUM_SPECIALS] for r in rows]))


def train_wordpiece(texts: list[str], vocab_size: int) -> Any:
    """A lower-cased WordPiece ``tokenizers.Tokenizer`` trained on ``texts`` (BERT's normaliser
    and pre-tokenizer; :data:`WORDPIECE_SPECIALS` get ids 0-4)."""
    tk = _import_tokenizers()
    tok = tk.Tokenizer(tk.models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = tk.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    trainer = tk.trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=WORDPIECE_SPECIALS, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
