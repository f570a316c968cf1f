"""maskwise.experiments.tokenizers: characters round-trip and map unseen characters to [UNK];
the BPE tokenizers give back normally spaced text (``kind="text"``) and any UTF-8 text
(``kind="bytes"``); every tokenizer has the five special ids first."""

from __future__ import annotations

import pytest

from maskwise.experiments.tokenizers import (
    NUM_SPECIALS,
    SPECIALS,
    UNK,
    BPETokenizer,
    CharTokenizer,
    train_wordpiece,
)
from tests.experiments.synth import sentences


def test_char_tokenizer_round_trip_and_unknown_characters() -> None:
    tok = CharTokenizer("Hello, world!\nÄö")
    text = "world, Hello!\nöÄ"
    assert tok.decode(tok.encode(text).tolist()) == text
    ids = tok.encode("Hz")  # z never seen in training
    assert ids[1] == UNK and tok.decode(ids.tolist()) == "H"
    assert tok.encode("").numel() == 0
    assert tok.get_vocab_size() == NUM_SPECIALS + len(set("Hello, world!\nÄö"))
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer("")


def test_bpe_round_trips_and_special_ids() -> None:
    texts = [s.capitalize() + "." for s in sentences(200, 0)]
    tok = BPETokenizer(texts, 120, kind="text")
    assert [tok.tok.token_to_id(t) for t in SPECIALS] == list(range(NUM_SPECIALS))
    line = "The red cat runs fast. A dog sits."
    assert tok.decode(tok.encode(line).tolist()) == line
    assert tok.decode_batch(tok.encode_batch([line, "A dog."])) == [line, "A dog."]
    raw = BPETokenizer(texts, 300, kind="bytes")
    odd = "red\n\ncat  Ünïcode ✓"
    assert raw.decode(raw.encode(odd).tolist()) == odd
    with pytest.raises(ValueError, match="kind must be 'text' or 'bytes'"):
        BPETokenizer(texts, 100, kind="words")


def test_wordpiece_special_ids_first() -> None:
    tok = train_wordpiece(sentences(50, 1), 100)
    assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [
        0,
        1,
        2,
        3,
        4,
    ]
