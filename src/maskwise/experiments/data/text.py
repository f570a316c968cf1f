"""Text classification files: one file per split, ``<label> <text>`` lines (SST-2, TREC), a
``.tsv`` / ``.csv`` with a text and a label column, or ``.jsonl`` objects with text and label
fields (optionally gzipped)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from maskwise.experiments.data.files import (
    UNREADABLE,
    Split,
    carve,
    find_split_files,
    json_object,
    label_key,
    open_text,
)

__all__ = ["load_text_classification", "read_labelled_texts"]

_TEXT_FIELDS = ("text", "sentence", "sentence1", "question", "review", "content")
_LABEL_FIELDS = ("label", "labels", "class", "category", "coarse_label")


def _pick(fields: Iterable[str], wanted: Sequence[str], path: Path, what: str) -> str:
    lower = {f.lower(): f for f in fields}
    for w in wanted:
        if w in lower:
            return lower[w]
    raise ValueError(
        f"{path}: no {what} column/field "
        f"(looked for {', '.join(wanted)}; found {', '.join(lower)})."
    )


def read_labelled_texts(path: str | Path) -> list[tuple[str, str]]:
    """``(label, text)`` rows of one text classification file (any of the formats above).

    Raises:
        ValueError: naming the file (and line) when it is unreadable, empty or malformed.
    """
    path = Path(path)
    try:
        return _read_rows(path)
    except UNREADABLE as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None


def _read_rows(path: Path) -> list[tuple[str, str]]:
    name = path.name.lower().removesuffix(".gz")
    rows: list[tuple[str, str]] = []
    with open_text(path) as f:
        if name.endswith((".tsv", ".csv")):
            reader = csv.DictReader(f, delimiter="\t" if name.endswith(".tsv") else ",")
            if reader.fieldnames is None:
                raise ValueError(f"{path}: empty file.")
            tf = _pick(reader.fieldnames, _TEXT_FIELDS, path, "text")
            lf = _pick(reader.fieldnames, _LABEL_FIELDS, path, "label")
            for r in reader:
                if r[lf] is None or r[tf] is None:  # a short row: DictReader fills None
                    missing = lf if r[lf] is None else tf
                    raise ValueError(f"{path}:{reader.line_num}: missing the {missing} value.")
                rows.append((r[lf].strip(), r[tf]))
        elif name.endswith(".jsonl"):
            tf = lf = ""
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                obj = json_object(line, path, i)
                if not tf:
                    tf = _pick(obj, _TEXT_FIELDS, path, "text")
                    lf = _pick(obj, _LABEL_FIELDS, path, "label")
                for field in (tf, lf):
                    if field not in obj:
                        raise ValueError(
                            f"{path}:{i}: no field {field!r} (fields: {', '.join(obj)})."
                        )
                rows.append((str(obj[lf]).strip(), str(obj[tf])))
        else:
            for i, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                label, _, text = line.partition(" ")
                if not text or not re.fullmatch(r"[\w:.\-]+", label):
                    raise ValueError(
                        f"{path}:{i}: expected '<label> <text>' (a label token, a space, the "
                        f"text); got {line[:60]!r}."
                    )
                rows.append((label, text))
    if not rows:
        raise ValueError(f"{path}: no examples.")
    return rows


def load_text_classification(
    root: str | Path, *, dev_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, Split], list[str]]:
    """Splits ``{"train", "dev", "test"}`` of text examples and the label names (id order).

    ``inputs`` of each split is a list of strings; label strings are mapped to ids in sorted
    order (:func:`~maskwise.experiments.data.files.label_key`). Without a dev file a seeded
    ``dev_fraction`` of train becomes dev; a test file is required (it is what the report
    measures).
    """
    files = find_split_files(root, suffixes=None)
    if "test" not in files:
        raise ValueError(f"{root} has no test file (a file name containing 'test').")
    raw = {split: read_labelled_texts(path) for split, path in files.items()}
    names = sorted({label for rows in raw.values() for label, _ in rows}, key=label_key)
    index = {name: i for i, name in enumerate(names)}
    unseen = {label for label, _ in raw["test"] if label not in {lab for lab, _ in raw["train"]}}
    if unseen:
        raise ValueError(
            f"{files['test']}: labels {sorted(unseen)} never occur in {files['train'].name}."
        )
    splits = {
        split: Split([t for _, t in rows], torch.tensor([index[lab] for lab, _ in rows]))
        for split, rows in raw.items()
    }
    if "dev" not in splits:
        splits["train"], splits["dev"] = carve(splits["train"], dev_fraction, seed)
    return splits, names
