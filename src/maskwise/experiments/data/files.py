"""What every loader shares: splits, split files, text files, JSON lines."""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

__all__ = [
    "SPLIT_NAMES",
    "UNREADABLE",
    "Split",
    "carve",
    "carve_list",
    "find_split_files",
    "json_object",
    "label_key",
    "open_text",
    "split_of",
]

#: The words that name a split in a file name.
SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "val", "valid", "validation"), "test": ("test",)}

#: What reading a file raises when its bytes are not what the name says: a file named .gz that
#: is not gzip (BadGzipFile, an OSError), a truncated gzip (EOFError), a text that is not UTF-8
#: (UnicodeDecodeError). Loaders re-raise them as ValueError naming the file.
UNREADABLE = (OSError, EOFError, UnicodeDecodeError)

T = TypeVar("T")


@dataclass
class Split:
    """One split of a classification data set: inputs and integer labels.

    Attributes:
        inputs: (N, ...) tensor, or a list of N items (e.g. strings).
        labels: (N,) int64.
    """

    inputs: list | torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tensor(self) -> torch.Tensor:
        """The inputs as a tensor (raises ``TypeError`` when they are a list)."""
        if not isinstance(self.inputs, torch.Tensor):
            raise TypeError(f"the inputs are a {type(self.inputs).__name__}, not a tensor.")
        return self.inputs

    @property
    def texts(self) -> list[str]:
        """The inputs as a list of strings (raises ``TypeError`` when they are a tensor)."""
        if not isinstance(self.inputs, list):
            raise TypeError(f"the inputs are a {type(self.inputs).__name__}, not a list.")
        return self.inputs

    def subset(self, index: torch.Tensor) -> Split:
        """The items ``index`` (K,) int64, in that order."""
        idx = index.tolist()
        inputs = (
            self.inputs[index]
            if isinstance(self.inputs, torch.Tensor)
            else [self.inputs[i] for i in idx]
        )
        return Split(inputs, self.labels[index])


def carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off a seeded random ``fraction`` of ``split`` (the dev set when none is given).

    Returns ``(rest, carved)``, each in the original order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1) ({fraction} given).")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split), generator=g)
    n = max(1, round(fraction * len(split)))
    return split.subset(perm[n:].sort().values), split.subset(perm[:n].sort().values)


def carve_list(items: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """:func:`carve` for a plain list: ``(rest, carved)``, each in the original order."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(items), generator=g)
    n = max(1, round(fraction * len(items)))
    held = set(perm[:n].tolist())
    rest = [x for i, x in enumerate(items) if i not in held]
    return rest, [x for i, x in enumerate(items) if i in held]


def open_text(path: Path) -> io.TextIOBase:
    """A UTF-8 text file (gzip when the name ends in ``.gz``) for ``with``; a byte that is not
    valid UTF-8 becomes U+FFFD."""
    # errors="replace": TREC's train file has one stray non-UTF-8 byte (0xF0 in "sister?city");
    # a strict decode would reject the whole data set for one character.
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 (the caller's with closes it)


def json_object(line: str, path: Path, i: int) -> dict:
    """Line ``i`` of the JSONL file ``path``, which must hold a JSON object."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{i}: not JSON ({e}).") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}.")
    return obj


def split_of(name: str) -> str | None:
    """The split a name holds as a word (``"stsa.binary.dev"`` -> ``"dev"``), or None.

    >>> split_of("stsa.binary.dev"), split_of("TREC.test.all"), split_of("notes.txt")
    ('dev', 'test', None)
    """
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    for split, names in SPLIT_NAMES.items():
        if tokens & set(names):
            return split
    return None


def find_split_files(root: str | Path, suffixes: Sequence[str] | None = None) -> dict[str, Path]:
    """The files of ``root`` whose names hold a split name (``train``, ``dev``/``val``, ``test``).

    Hidden files and README / SOURCE / LICENSE files are skipped; with ``suffixes``, only files
    whose names end in one of them count.

    Raises:
        ValueError: ``root`` is not a directory, has no train file, or has two files for one
            split.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory.")
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if (
            not path.is_file()
            or path.name.startswith(".")
            or path.stem.upper() in ("README", "SOURCE", "LICENSE")
        ):
            continue
        if suffixes is not None and not any(path.name.endswith(s) for s in suffixes):
            continue
        split = split_of(path.name)
        if split is None:
            continue
        if split in found:
            raise ValueError(
                f"{root} has two files for the {split} split: {found[split].name}, {path.name}."
            )
        found[split] = path
    if "train" not in found:
        raise ValueError(f"{root} has no training file (a file name containing 'train').")
    return found


def label_key(label: str) -> tuple[int, int | str]:
    """Sort key of label names: integers in numeric order first, then the other names.

    >>> sorted(["10", "b", "2", "a"], key=label_key)
    ['2', '10', 'a', 'b']
    """
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)
