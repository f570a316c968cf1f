"""maskwise.experiments.data.pairs: line-aligned files and JSONL pairs for translation and
summarization, field detection, carved dev / test splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maskwise.experiments import data as D
from tests.experiments.synth import (
    sentences,
    write_lines,
    write_text,
)

# ----------------------------------------------------------------------------------------------
# Text pairs
# ----------------------------------------------------------------------------------------------


def test_parallel_files_plain_and_gzipped(tmp_path: Path) -> None:
    src = write_text(tmp_path / "train.de.gz", "ein Hund\n\nzwei Katzen \ndrei\n")
    tgt = write_text(tmp_path / "train.en", "a dog\nlost\n two cats\n\n")
    assert D.load_parallel(src, tgt) == [("ein Hund", "a dog"), ("zwei Katzen", "two cats")]


def test_parallel_files_errors(tmp_path: Path) -> None:
    src = write_text(tmp_path / "s.txt", "a\nb\nc\n")
    tgt = write_text(tmp_path / "t.txt", "x\ny\n")
    with pytest.raises(
        ValueError, match=r"s\.txt has 3 lines but .*t\.txt has 2; they must be aligned"
    ):
        D.load_parallel(src, tgt)
    blank = write_text(tmp_path / "b.txt", "\n \n")
    with pytest.raises(ValueError, match="no non-empty aligned lines"):
        D.load_parallel(blank, write_text(tmp_path / "c.txt", "x\ny\n"))
    (tmp_path / "g.gz").write_bytes(b"plain text\n")
    with pytest.raises(ValueError, match=r"g\.gz: unreadable"):
        D.load_parallel(src, tmp_path / "g.gz")


def test_jsonl_pairs(tmp_path: Path) -> None:
    lines = [
        {"dialogue": "hi there", "summary": "greeting", "id": 1},
        {},
        {"dialogue": ["first.", " second."], "summary": ["ref one", "ref two"]},
        {"dialogue": "", "summary": "dropped: empty source"},
    ]
    text = "\n".join(json.dumps(x) if x else "" for x in lines) + "\n"
    for name in ("p.jsonl", "p.jsonl.gz"):
        path = write_text(tmp_path / name, text)
        assert D.load_jsonl_pairs(path, "dialogue", "summary") == [
            ("hi there", "greeting"),
            ("first. second.", "ref one"),
        ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": "x", "b": "y"}\n{"a": "z"}\n', "p.jsonl:2: no field 'b' (fields: a)"),
        ('{"a": "x", "b": "y"}\nnot json\n', "p.jsonl:2: not JSON"),
        ('"just a string"\n', "p.jsonl:1: expected a JSON object, got str"),
        ('{"a": "", "b": "y"}\n', "p.jsonl: no examples with both 'a' and 'b'"),
    ],
)
def test_bad_jsonl_pairs(tmp_path: Path, text: str, message: str) -> None:
    path = write_text(tmp_path / "p.jsonl", text)
    with pytest.raises(ValueError) as err:
        D.load_jsonl_pairs(path, "a", "b")
    assert message in str(err.value)


def test_jsonl_references_and_field_detection(tmp_path: Path) -> None:
    rows = [{"doc": s, "tldr": [s.split()[0]], "other": 1} for s in sentences(4, 3)]
    path = write_text(tmp_path / "data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="--source-field"):
        D.detect_fields(path)
    assert D.detect_fields(path, "doc", "tldr") == ("doc", "tldr")
    assert D.load_jsonl_references(path, "doc", "tldr")[0] == (rows[0]["doc"], rows[0]["tldr"])
    numbered = tmp_path / "test.jsonl"
    numbered.write_text(
        json.dumps({"dialogue": "a b", "summary1": "x", "summary2": "y", "summary10": "z"}) + "\n"
    )
    assert D.load_jsonl_references(numbered, "dialogue", "summary") == [("a b", ["x", "y", "z"])]
    assert D.detect_fields(numbered) == ("dialogue", "summary")
    with pytest.raises(ValueError, match="no field 'tldr'"):
        D.load_jsonl_references(numbered, "dialogue", "tldr")


def test_summarization_folder_and_single_file(tmp_path: Path) -> None:
    rows = [json.dumps({"text": s * 2, "summary": s}) + "\n" for s in sentences(40, 4)]
    write_text(tmp_path / "one.jsonl", "".join(rows))
    splits, fields = D.load_summarization(tmp_path / "one.jsonl")
    assert fields == ("text", "summary")  # detected
    assert {k: len(v) for k, v in splits.items()} == {"train": 36, "test": 2, "dev": 2}
    folder = tmp_path / "folder"
    for name, part in (("train.jsonl", rows[:30]), ("val.jsonl", rows[30:35])):
        write_text(folder / name, "".join(part))
    write_text(folder / "test.jsonl", "".join(rows[35:]))
    splits, _ = D.load_summarization(folder)
    assert {k: len(v) for k, v in splits.items()} == {"train": 30, "dev": 5, "test": 5}


def test_translation_folders_gzip_and_a_file_pair(tmp_path: Path) -> None:
    src, tgt = sentences(60, 1), [s.upper() for s in sentences(60, 1)]
    folder = tmp_path / "folder"
    for split, sl in (("train", slice(0, 40)), ("dev", slice(40, 50)), ("test", slice(50, 60))):
        write_lines(folder / f"{split}.xx", src[sl])
        write_lines(folder / f"{split}.yy.gz", tgt[sl])
    raw = D.load_translation(folder, "xx", "yy")
    assert {k: len(v) for k, v in raw.items()} == {"train": 40, "dev": 10, "test": 10}
    assert raw["dev"][0] == (src[40], [tgt[40]])
    # One aligned pair of files: dev and test carved (5 % each); the target found by swapping
    # the language suffix, or named.
    write_lines(tmp_path / "corpus.xx", src)
    write_lines(tmp_path / "corpus.yy", tgt)
    raw = D.load_translation(tmp_path / "corpus.xx", "xx", "yy")
    assert {k: len(v) for k, v in raw.items()} == {"train": 54, "dev": 3, "test": 3}
    write_lines(tmp_path / "other.txt", tgt)
    named = D.load_translation(
        tmp_path / "corpus.xx", "xx", "yy", target_file=tmp_path / "other.txt"
    )
    assert len(named["train"]) == 54
    write_lines(tmp_path / "short.yy", tgt[:5])
    write_lines(tmp_path / "short.xx", src)
    with pytest.raises(ValueError, match="aligned"):
        D.load_translation(tmp_path / "short.xx", "xx", "yy")
    with pytest.raises(ValueError, match="cannot derive the target file"):
        D.load_translation(tmp_path / "other.txt", "xx", "yy")
