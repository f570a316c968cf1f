"""Documents for language modelling: a text file of blank-line-separated documents, or a folder
with one document per file; split contiguously by characters."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from pathlib import Path

from maskwise.experiments.data.files import UNREADABLE, open_text

__all__ = ["read_documents", "split_documents"]

_SKIP_NAMES = ("README", "SOURCE", "LICENSE")


def read_documents(path: str | Path) -> list[str]:
    """Documents of a UTF-8 text file or of a folder.

    A file holds documents separated by blank lines (speeches, paragraphs). In a folder each file
    is one document (searched recursively in name order; hidden files and README / SOURCE /
    LICENSE files skipped); a folder with a single such file is read as that file, e.g.
    tiny-shakespeare's ``input.txt``. ``.gz`` files are read as gzip.

    Raises:
        ValueError: no such file or folder, no text files, an unreadable file, or fewer than
            three documents (train, dev and test need one each).
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(s.startswith(".") for s in p.relative_to(path).parts)
            and p.name.split(".")[0].upper() not in _SKIP_NAMES
        )
        if not files:
            raise ValueError(f"{path}: no text files.")
    else:
        raise ValueError(f"{path}: neither a text file nor a folder of documents.")
    one_file = len(files) == 1
    docs: list[str] = []
    for f in files:
        try:
            with open_text(f) as fh:
                text = fh.read()
        except UNREADABLE as e:
            raise ValueError(f"{f}: not a readable UTF-8 text file ({e}).") from None
        if one_file:
            docs += [d.strip("\n") for d in re.split(r"\n[ \t]*\n", text) if d.strip()]
        elif text.strip():
            docs.append(text.strip("\n"))
    if len(docs) < 3:
        raise ValueError(f"{path}: {len(docs)} document(s); need at least 3 (train, dev and test).")
    return docs


def split_documents(
    docs: Sequence[str], dev_at: float = 0.85, test_at: float = 0.9
) -> dict[str, list[str]]:
    """Contiguous split by characters, at document boundaries.

    The first ``test_at`` of the text is for training (nanoGPT's 90 / 10 split), its last
    ``test_at - dev_at`` held out as dev for model selection; the last ``1 - test_at`` is the test
    split. Every split gets at least one document.

    >>> split_documents(["aaaa", "bb", "cc", "dd", "ee"], dev_at=0.5, test_at=0.8)
    {'train': ['aaaa', 'bb'], 'dev': ['cc', 'dd'], 'test': ['ee']}
    """
    starts, total = [], 0
    for d in docs:
        starts.append(total)
        total += len(d)
    n = len(docs)
    i_test = min(max(bisect.bisect_left(starts, test_at * total), 2), n - 1)
    i_dev = min(max(bisect.bisect_left(starts, dev_at * total), 1), i_test - 1)
    return {
        "train": list(docs[:i_dev]),
        "dev": list(docs[i_dev:i_test]),
        "test": list(docs[i_test:]),
    }
