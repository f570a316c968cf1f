"""Text pairs for translation and summarization: line-aligned files, or JSONL with source and
target fields (optionally gzipped).

Every split is a list of ``(source, references)``: the source text and one or more reference
targets (several at test time in SciTLDR and DialogSum). Where the data has no dev or test
split, 5 % of train each is carved (seeded).
"""

from __future__ import annotations

import json
from pathlib import Path

from maskwise.experiments.data.files import (
    UNREADABLE,
    carve_list,
    find_split_files,
    json_object,
    open_text,
)

__all__ = [
    "KNOWN_FIELDS",
    "Pairs",
    "detect_fields",
    "load_jsonl_pairs",
    "load_jsonl_references",
    "load_parallel",
    "load_summarization",
    "load_translation",
]

#: ``{split: [(source, references), ...]}``.
Pairs = dict[str, list[tuple[str, list[str]]]]

#: Known (source, target) field pairs of summarization JSONL, tried in order.
KNOWN_FIELDS = (
    ("source", "target"),
    ("dialogue", "summary"),
    ("document", "summary"),
    ("article", "highlights"),
    ("text", "summary"),
    ("src", "tgt"),
)


def load_parallel(source: str | Path, target: str | Path) -> list[tuple[str, str]]:
    """Line-aligned ``(source, target)`` pairs from two text files (``.gz`` read as gzip); pairs
    with an empty side are dropped."""
    lines = []
    for path in (Path(source), Path(target)):
        try:
            with open_text(path) as f:
                lines.append([line.rstrip("\n") for line in f])
        except UNREADABLE as e:
            raise ValueError(f"{path}: unreadable ({e}).") from None
    src, tgt = lines
    if len(src) != len(tgt):
        raise ValueError(
            f"{source} has {len(src)} lines but {target} has {len(tgt)}; they must be aligned."
        )
    pairs = [(s.strip(), t.strip()) for s, t in zip(src, tgt) if s.strip() and t.strip()]
    if not pairs:
        raise ValueError(f"{source}: no non-empty aligned lines.")
    return pairs


def _as_text(value: object) -> str:
    if isinstance(value, list):
        return " ".join(str(v).strip() for v in value)
    return str(value).strip()


def load_jsonl_pairs(
    path: str | Path, source_field: str, target_field: str
) -> list[tuple[str, str]]:
    """``(source, target)`` pairs from a JSONL file; a list value (sentences, several
    references) is joined with spaces for the source and its first item is taken for the target."""
    path = Path(path)
    try:
        return _read_jsonl_pairs(path, source_field, target_field)
    except UNREADABLE as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None


def _read_jsonl_pairs(path: Path, source_field: str, target_field: str) -> list[tuple[str, str]]:
    pairs = []
    with open_text(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json_object(line, path, i)
            for field in (source_field, target_field):
                if field not in obj:
                    raise ValueError(f"{path}:{i}: no field {field!r} (fields: {', '.join(obj)}).")
            tgt = obj[target_field]
            tgt = tgt[0] if isinstance(tgt, list) and tgt else tgt
            src_text, tgt_text = _as_text(obj[source_field]), _as_text(tgt)
            if src_text and tgt_text:
                pairs.append((src_text, tgt_text))
    if not pairs:
        raise ValueError(f"{path}: no examples with both {source_field!r} and {target_field!r}.")
    return pairs


def load_jsonl_references(
    path: str | Path, source_field: str, target_field: str
) -> list[tuple[str, list[str]]]:
    """``(source, references)`` from a JSONL file.

    A list source (sentences) is joined with spaces; the target is a string or a list of
    references; when ``target_field`` is absent and numbered fields ``{target_field}1``,
    ``{target_field}2``, ... are present (DialogSum's test split), those are the references.
    """
    path = Path(path)
    try:
        return _read_jsonl_references(path, source_field, target_field)
    except UNREADABLE as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None


def _read_jsonl_references(
    path: Path, source_field: str, target_field: str
) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    with open_text(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json_object(line, path, i)
            if source_field not in obj:
                raise ValueError(
                    f"{path}:{i}: no field {source_field!r} (fields: {', '.join(obj)})."
                )
            if target_field in obj:
                t = obj[target_field]
                refs = [_as_text(x) for x in t] if isinstance(t, list) else [_as_text(t)]
            else:
                numbered = [
                    obj[k]
                    for k in sorted(obj, key=lambda k: (len(k), k))
                    if k.startswith(target_field) and k[len(target_field) :].isdigit()
                ]
                if not numbered:
                    raise ValueError(
                        f"{path}:{i}: no field {target_field!r} (fields: {', '.join(obj)})."
                    )
                refs = [_as_text(x) for x in numbered]
            refs = [r for r in refs if r]
            src = _as_text(obj[source_field])
            if src and refs:
                out.append((src, refs))
    if not out:
        raise ValueError(f"{path}: no examples with both {source_field!r} and {target_field!r}.")
    return out


def detect_fields(
    path: str | Path, source_field: str | None = None, target_field: str | None = None
) -> tuple[str, str]:
    """The (source, target) fields of a JSONL file: the given ones, else the first pair of
    :data:`KNOWN_FIELDS` present in its first object (a target ``summary`` also matches
    ``summary1``)."""
    path = Path(path)
    with open_text(path) as f:
        first = next((line for line in f if line.strip()), "")
    try:
        obj = json.loads(first) if first else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:1: not JSON ({e}).") from None
    keys = set(obj) if isinstance(obj, dict) else set()

    def has(t: str) -> bool:
        return t in keys or f"{t}1" in keys

    for s, t in KNOWN_FIELDS:
        if (source_field or s) in keys and has(target_field or t):
            return source_field or s, target_field or t
    raise ValueError(
        f"{path}: cannot tell the source and target fields (known pairs: "
        f"{', '.join('/'.join(p) for p in KNOWN_FIELDS)}; fields: {', '.join(sorted(keys))}); "
        "pass --source-field and --target-field."
    )


def _complete_splits(splits: Pairs, seed: int) -> Pairs:
    """Carve dev and test (5 % each, seeded) from train where the data has none."""
    if "test" not in splits:
        splits["train"], splits["test"] = carve_list(splits["train"], 0.05, seed + 1)
    if "dev" not in splits:
        splits["train"], splits["dev"] = carve_list(splits["train"], 0.05, seed)
    return splits


def load_translation(
    root: str | Path,
    src_lang: str = "de",
    tgt_lang: str = "en",
    *,
    target_file: str | Path | None = None,
) -> Pairs:
    """``{"train", "dev", "test"}`` of ``(source, [reference])`` from line-aligned files.

    ``root`` is a folder holding ``<split>.<lang>[.gz]`` files (split named ``train``,
    ``val`` / ``dev`` / ``valid``, ``test``; e.g. Multi30k's ``test_2016_flickr.de.gz``), or a
    source file whose target is ``target_file`` (default: the same name with the language
    suffix swapped); dev and test are then carved from it (5 % each, seeded).
    """
    root = Path(root)
    if root.is_file():
        tgt = Path(target_file) if target_file is not None else _swap_lang(root, src_lang, tgt_lang)
        pairs = load_parallel(root, tgt)
        return _complete_splits({"train": [(s, [t]) for s, t in pairs]}, 0)
    out: Pairs = {}
    found = {
        lang: find_split_files(root, suffixes=(f".{lang}", f".{lang}.gz"))
        for lang in (src_lang, tgt_lang)
    }
    for split, src in found[src_lang].items():
        if split not in found[tgt_lang]:
            raise ValueError(f"{root}: {src.name} has no {tgt_lang} counterpart.")
        out[split] = [(s, [t]) for s, t in load_parallel(src, found[tgt_lang][split])]
    return _complete_splits(out, 0)


def _swap_lang(path: Path, src_lang: str, tgt_lang: str) -> Path:
    name = path.name
    for suffix in (f".{src_lang}.gz", f".{src_lang}"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + suffix.replace(src_lang, tgt_lang, 1))
    raise ValueError(
        f"{path}: cannot derive the target file (name does not end in .{src_lang}); "
        "pass it explicitly."
    )


def load_summarization(
    root: str | Path, source_field: str | None = None, target_field: str | None = None
) -> tuple[Pairs, tuple[str, str]]:
    """Splits of ``(source, references)`` from JSONL, and the (source, target) fields used.

    ``root`` is a folder with one file per split (``train``, ``dev`` / ``val``, ``test`` in the
    name) or one file (dev and test carved, 5 % each); the fields are detected by
    :func:`detect_fields` unless given.
    """
    root = Path(root)
    files = (
        {"train": root}
        if root.is_file()
        else find_split_files(root, suffixes=(".jsonl", ".jsonl.gz", ".json"))
    )
    fields = detect_fields(files["train"], source_field, target_field)
    splits = {split: load_jsonl_references(p, *fields) for split, p in files.items()}
    return _complete_splits(splits, 0), fields
