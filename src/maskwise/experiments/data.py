"""Data loaders for the experiment tasks: the formats of ``../shared/data`` from any path.

Every loader returns plain Python / torch objects and raises ``ValueError`` with the file and the
reason when a file does not have the expected form (missing split, unknown label format,
unreadable WAV). Nothing here downloads anything.

Formats:

* text classification: a directory with one file per split, the split named in the file name
  (``train``; ``dev`` / ``val`` / ``valid``; ``test``), each either ``<label> <text>`` lines (SST-2,
  TREC), or ``.tsv`` / ``.csv`` (header with a text and a label column) or ``.jsonl`` (objects
  with text and label fields). Label strings are mapped to ids in sorted order.
* images: MNIST-format IDX files (``*-images-idx3-ubyte[.gz]`` / ``*-labels-idx1-ubyte[.gz]``,
  ``train`` / ``t10k`` or ``test`` in the name), or ``"digits"`` (scikit-learn's bundled 8x8 set).
* speech: a directory of WAV files named ``{label}_{speaker}_{index}.wav`` (FSDD; index 0-4 is
  the official test split), or a CSV manifest ``path,label[,split]``.
* text pairs: line-aligned source / target files (optionally gzipped), or JSONL with source and
  target fields (a list of sentences is joined with spaces).

Text files are read as UTF-8; a byte that is not valid UTF-8 becomes U+FFFD (TREC's training file
has one).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import struct
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "Split",
    "carve",
    "find_split_files",
    "load_digits",
    "load_idx",
    "load_idx_dir",
    "load_jsonl_pairs",
    "load_parallel",
    "load_speech",
    "load_text_classification",
    "log_mel",
    "mel_filterbank",
    "read_wav",
]

SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "val", "valid", "validation"), "test": ("test",)}


@dataclass
class Split:
    """One split of a classification data set: inputs and integer labels."""

    inputs: list | torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        idx = index.tolist()
        inputs = (
            self.inputs[index]
            if isinstance(self.inputs, torch.Tensor)
            else [self.inputs[i] for i in idx]
        )
        return Split(inputs, self.labels[index])


def carve(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off a seeded random ``fraction`` of ``split`` (the dev set when none is given)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1) ({fraction} given).")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split), generator=g)
    n = max(1, round(fraction * len(split)))
    return split.subset(perm[n:].sort().values), split.subset(perm[:n].sort().values)


def _open_text(path: Path) -> io.TextIOBase:
    # errors="replace": TREC's train file has one stray non-UTF-8 byte (0xF0 in "sister?city");
    # a strict decode would reject the whole data set for one character.
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed by the caller's with)


# What reading a file raises when its bytes are not what the name says: a file named .gz that is
# not gzip (BadGzipFile, an OSError), a truncated gzip (EOFError), a manifest that is not UTF-8
# (UnicodeDecodeError). Re-raised as ValueError naming the file.
_UNREADABLE = (OSError, EOFError, UnicodeDecodeError)


def _json_object(line: str, path: Path, i: int) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{i}: not JSON ({e}).") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}.")
    return obj


def _split_of(name: str) -> str | None:
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    for split, names in SPLIT_NAMES.items():
        if tokens & set(names):
            return split
    return None


def find_split_files(root: str | Path, suffixes: Sequence[str] | None = None) -> dict[str, Path]:
    """The files of ``root`` whose names hold a split name (``train``, ``dev``/``val``, ``test``).

    Raises ``ValueError`` when ``root`` is not a directory, has no train file, or has two files
    for one split.
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
        split = _split_of(path.name)
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


# ----------------------------------------------------------------------------------------------
# Text classification
# ----------------------------------------------------------------------------------------------

_TEXT_FIELDS = ("text", "sentence", "sentence1", "question", "review", "content")
_LABEL_FIELDS = ("label", "labels", "class", "category", "coarse_label")


def _pick(fields: Iterable[str], wanted: Sequence[str], path: Path, what: str) -> str:
    lower = {f.lower(): f for f in fields}
    for w in wanted:
        if w in lower:
            return lower[w]
    raise ValueError(
        f"{path}: no {what} column/field (looked for {', '.join(wanted)}; found {', '.join(lower)})."
    )


def _read_text_file(path: Path) -> list[tuple[str, str]]:
    try:
        return _read_text_rows(path)
    except _UNREADABLE as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None


def _read_text_rows(path: Path) -> list[tuple[str, str]]:
    name = path.name.lower().removesuffix(".gz")
    rows: list[tuple[str, str]] = []
    with _open_text(path) as f:
        if name.endswith((".tsv", ".csv")):
            reader = csv.DictReader(f, delimiter="\t" if name.endswith(".tsv") else ",")
            if reader.fieldnames is None:
                raise ValueError(f"{path}: empty file.")
            tf = _pick(reader.fieldnames, _TEXT_FIELDS, path, "text")
            lf = _pick(reader.fieldnames, _LABEL_FIELDS, path, "label")
            for r in reader:
                if r[lf] is None or r[tf] is None:  # a short row: DictReader fills None
                    raise ValueError(
                        f"{path}:{reader.line_num}: missing the {lf if r[lf] is None else tf} value."
                    )
                rows.append((r[lf].strip(), r[tf]))
        elif name.endswith(".jsonl"):
            tf = lf = ""
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                obj = _json_object(line, path, i)
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
                        f"{path}:{i}: expected '<label> <text>' (a label token, a space, the text); got {line[:60]!r}."
                    )
                rows.append((label, text))
    if not rows:
        raise ValueError(f"{path}: no examples.")
    return rows


def _label_key(label: str) -> tuple[int, int | str]:
    return (0, int(label)) if label.lstrip("-").isdigit() else (1, label)


def load_text_classification(
    root: str | Path, *, dev_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, Split], list[str]]:
    """Splits ``{"train", "dev", "test"}`` of text examples (``inputs``: a list of strings) and the
    label names (id order). Without a dev file a seeded ``dev_fraction`` of train becomes dev;
    a test file is required (it is what the report measures)."""
    files = find_split_files(root, suffixes=None)
    if "test" not in files:
        raise ValueError(f"{root} has no test file (a file name containing 'test').")
    raw = {split: _read_text_file(path) for split, path in files.items()}
    names = sorted({label for rows in raw.values() for label, _ in rows}, key=_label_key)
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


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: torch.uint8,
    0x09: torch.int8,
    0x0B: torch.int16,
    0x0C: torch.int32,
    0x0D: torch.float32,
}


def load_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (MNIST format, optionally gzipped) into a tensor."""
    path = Path(path)
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number).")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: header truncated ({len(data)} bytes for {ndim} dimensions).")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = _IDX_DTYPES[data[2]]
    body = data[4 + 4 * ndim :]
    count = 1
    for d in dims:
        count *= d
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(body) != count * itemsize:
        raise ValueError(
            f"{path}: {len(body)} data bytes for shape {dims} (expected {count * itemsize})."
        )
    t = torch.frombuffer(bytearray(body), dtype=dtype)
    if itemsize > 1:  # IDX is big-endian
        t = t.view(torch.uint8).view(-1, itemsize).flip(-1).reshape(-1).view(dtype)
    return t.reshape(dims).clone()


def load_idx_dir(root: str | Path) -> dict[str, Split]:
    """``{"train", "test"}`` splits of an MNIST-format directory: images (N, 1, H, W) float in
    [0, 1], labels (N,)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory.")
    files = [p for p in root.iterdir() if "idx" in p.name]
    splits: dict[str, Split] = {}
    for split, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
        imgs = [p for p in files if p.name.startswith(prefixes) and "images" in p.name]
        labs = [p for p in files if p.name.startswith(prefixes) and "labels" in p.name]
        if len(imgs) != 1 or len(labs) != 1:
            raise ValueError(
                f"{root}: expected one {split} images file and one labels file "
                f"({'/'.join(prefixes)}-images-idx3-ubyte[.gz], ...-labels-idx1-ubyte[.gz]); "
                f"found {len(imgs)} and {len(labs)}."
            )
        x, y = load_idx(imgs[0]), load_idx(labs[0])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{root}: {split} images {tuple(x.shape)} and labels {tuple(y.shape)} do not match."
            )
        splits[split] = Split(x.unsqueeze(1).float() / 255.0, y.long())
    return splits


def load_digits() -> dict[str, Split]:
    """scikit-learn's bundled 8x8 digits as one ``"all"`` split: images (N, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'maskwise[experiments]'"
        ) from e
    d = sk_load()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return {"all": Split(x, torch.tensor(d.target, dtype=torch.long))}


# ----------------------------------------------------------------------------------------------
# Speech
# ----------------------------------------------------------------------------------------------


def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """Mono float waveform in [-1, 1] and its sample rate, from a PCM WAV file (8/16/32-bit;
    channels averaged). Raises ``ValueError`` for a file that is not a readable PCM WAV."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, sr, n = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            frames = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise ValueError(f"{path}: unreadable WAV ({e}).") from None
    frames = frames[
        : len(frames) - len(frames) % (width * channels)
    ]  # a truncated file's partial frame
    if not frames:
        raise ValueError(f"{path}: no samples.")
    if width == 1:
        x = (torch.frombuffer(bytearray(frames), dtype=torch.uint8).float() - 128.0) / 128.0
    elif width == 2:
        x = torch.frombuffer(bytearray(frames), dtype=torch.int16).float() / 32768.0
    elif width == 4:
        x = torch.frombuffer(bytearray(frames), dtype=torch.int32).float() / 2147483648.0
    else:
        raise ValueError(f"{path}: unsupported sample width {width} bytes.")
    return x.view(-1, channels).mean(1), sr


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular HTK-mel filterbank (n_fft // 2 + 1, n_mels), Slaney-normalised to unit area."""
    f_max = sample_rate / 2 if f_max is None else f_max

    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(
        float(hz_to_mel(torch.tensor(f_min))),
        float(hz_to_mel(torch.tensor(f_max))),
        n_mels + 2,
        dtype=torch.float64,
    )
    pts = mel_to_hz(mels)
    lower, centre, upper = pts[:-2], pts[1:-1], pts[2:]
    up = (freqs[:, None] - lower) / (centre - lower)
    down = (upper - freqs[:, None]) / (upper - centre)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (upper - lower))  # Slaney area normalisation
    return fb.float()


def log_mel(
    wav: torch.Tensor,
    sample_rate: int,
    *,
    n_mels: int = 40,
    win_ms: float = 25.0,
    hop_ms: float = 10.0,
) -> torch.Tensor:
    """Log-mel spectrogram (n_mels, T) of a mono waveform: Hann-window STFT, power, mel, log."""
    win = round(sample_rate * win_ms / 1000)
    hop = round(sample_rate * hop_ms / 1000)
    n_fft = 1 << (win - 1).bit_length()
    if wav.numel() < win:
        wav = torch.nn.functional.pad(wav, (0, win - wav.numel()))
    spec = (
        torch.stft(
            wav,
            n_fft,
            hop_length=hop,
            win_length=win,
            window=torch.hann_window(win),
            center=True,
            return_complex=True,
        )
        .abs()
        .pow(2)
    )
    mel = mel_filterbank(n_fft, n_mels, sample_rate).T @ spec
    return torch.log(mel + 1e-6)


_FSDD_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<index>\d+)\.wav$", re.IGNORECASE)


def load_speech(
    root: str | Path, *, test_indices: int = 5
) -> tuple[dict[str, list[tuple[Path, str]]], list[str]]:
    """``{"train", "test"[, "dev"]}`` lists of ``(wav_path, label)`` and the sorted label names.

    ``root`` is a directory of ``{label}_{speaker}_{index}.wav`` files (searched recursively; the
    files with ``index < test_indices`` form the test split, FSDD's official split) or a CSV
    manifest ``path,label[,split]`` (paths relative to the manifest; without a split column the
    caller carves dev and test).
    """
    root = Path(root)
    items: dict[str, list[tuple[Path, str]]] = {}
    if root.is_file():
        try:
            with open(root, encoding="utf-8", newline="") as f:
                reader = csv.reader(f)
                rows = [(reader.line_num, r) for r in reader if r and not r[0].startswith("#")]
        except _UNREADABLE as e:
            raise ValueError(f"{root}: unreadable ({e}).") from None
        if rows and rows[0][1][0].strip().lower() == "path":
            rows = rows[1:]
        for i, r in rows:
            if len(r) not in (2, 3):
                raise ValueError(f"{root}:{i}: expected 'path,label[,split]', got {','.join(r)!r}.")
            split = _split_of(r[2]) if len(r) == 3 else "train"
            if split is None:
                raise ValueError(f"{root}:{i}: unknown split {r[2]!r} (train, dev/val, test).")
            p = Path(r[0].strip())
            items.setdefault(split, []).append(
                (p if p.is_absolute() else root.parent / p, r[1].strip())
            )
    elif root.is_dir():
        wavs = sorted(root.rglob("*.wav"))
        if not wavs:
            raise ValueError(f"{root}: no .wav files.")
        for p in wavs:
            m = _FSDD_NAME.match(p.name)
            if m is None:
                raise ValueError(f"{p}: name is not '{{label}}_{{speaker}}_{{index}}.wav'.")
            split = "test" if int(m["index"]) < test_indices else "train"
            items.setdefault(split, []).append((p, m["label"]))
    else:
        raise ValueError(f"{root}: neither a directory of WAV files nor a CSV manifest.")
    if "train" not in items:
        raise ValueError(f"{root}: no training examples.")
    names = sorted({lab for rows in items.values() for _, lab in rows}, key=_label_key)
    return items, names


# ----------------------------------------------------------------------------------------------
# Text pairs (translation, summarization)
# ----------------------------------------------------------------------------------------------


def load_parallel(source: str | Path, target: str | Path) -> list[tuple[str, str]]:
    """Line-aligned ``(source, target)`` pairs from two text files (``.gz`` read as gzip)."""
    lines = []
    for path in (Path(source), Path(target)):
        try:
            with _open_text(path) as f:
                lines.append([line.rstrip("\n") for line in f])
        except _UNREADABLE as e:
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
    except _UNREADABLE as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None


def _read_jsonl_pairs(path: Path, source_field: str, target_field: str) -> list[tuple[str, str]]:
    pairs = []
    with _open_text(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = _json_object(line, path, i)
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
