"""maskwise.experiments.data.documents: documents of a file, a gzip and a folder; the
contiguous split by characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskwise.experiments import data as D
from tests.experiments.synth import (
    write_bytes,
    write_lines,
    write_text,
)

# ----------------------------------------------------------------------------------------------
# Documents (language modelling)
# ----------------------------------------------------------------------------------------------


def test_read_documents_from_a_file_a_gzip_and_a_folder(tmp_path: Path) -> None:
    text = "First:\nOne line.\n\nSecond:\nTwo\nlines.\n  \nThird:\nx\n\n\n\nFourth:\ny\n"
    write_lines(tmp_path / "a.txt", [text])
    assert D.read_documents(tmp_path / "a.txt") == [
        "First:\nOne line.",
        "Second:\nTwo\nlines.",
        "Third:\nx",
        "Fourth:\ny",
    ]
    write_lines(tmp_path / "a.txt.gz", [text])
    assert len(D.read_documents(tmp_path / "a.txt.gz")) == 4
    folder = tmp_path / "docs"
    for name, body in (
        ("b.txt", "doc b\n\nstill b"),
        ("a.md", "doc a"),
        ("sub/c.txt", "doc c"),
        ("README.md", "not a document"),
        (".hidden", "not one either"),
    ):
        write_text(folder / name, body)
    # one file, one document
    assert D.read_documents(folder) == ["doc a", "doc b\n\nstill b", "doc c"]
    single = tmp_path / "single"
    write_text(single / "input.txt", text)
    write_text(single / "SOURCE.txt", "where it came from")
    assert len(D.read_documents(single)) == 4  # a folder holding one text file: its paragraphs
    write_text(tmp_path / "two" / "x.txt", "only\n\ntwo")
    with pytest.raises(ValueError, match="need at least 3"):
        D.read_documents(tmp_path / "two" / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no text files"):
        D.read_documents(tmp_path / "empty")
    with pytest.raises(ValueError, match="neither a text file nor a folder"):
        D.read_documents(tmp_path / "missing")
    write_bytes(tmp_path / "bad.txt.gz", b"not gzip")
    with pytest.raises(ValueError, match="bad.txt.gz"):
        D.read_documents(tmp_path / "bad.txt.gz")


def test_split_documents_is_contiguous_by_characters() -> None:
    docs = [f"{i}" * 10 for i in range(10)]
    s = D.split_documents(docs)
    assert s["train"] == docs[:8] and s["dev"] == docs[8:9] and s["test"] == docs[9:]
    s = D.split_documents(["a", "b", "c"])  # every split gets a document
    assert [len(v) for v in s.values()] == [1, 1, 1]
