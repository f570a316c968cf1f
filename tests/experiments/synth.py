"""Writers of small files in every format the experiment loaders accept, built with the standard
library only (``struct``, ``wave``, ``gzip``), independently of the loaders they test; and the
path of a real data set (the test is skipped without it)."""

from __future__ import annotations

import gzip
import math
import random
import struct
import wave
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import shared_data_dir


def shared(*parts: str) -> Path:
    """A path under the real data sets (``$MASKWISE_DATA`` or ../shared/data); skips the test,
    naming the path, when it is missing."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data set not found at {path} "
            "(the repository's ../shared/data; set MASKWISE_DATA)"
        )
    return path


# IDX type codes and the struct format of one big-endian item.
IDX_CODES = {
    "uint8": (0x08, "B"),
    "int8": (0x09, "b"),
    "int16": (0x0B, "h"),
    "int32": (0x0C, "i"),
    "float32": (0x0D, "f"),
}


def idx_bytes(values: Sequence[float], shape: Sequence[int], dtype: str = "uint8") -> bytes:
    """An IDX file: magic ``00 00 <type> <ndim>``, big-endian uint32 dims, big-endian items."""
    code, fmt = IDX_CODES[dtype]
    assert math.prod(shape) == len(values)
    header = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return header + struct.pack(f">{len(values)}{fmt}", *values)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data``, gzipped when the name ends in ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_idx_dir(
    root: Path,
    *,
    n_train: int = 40,
    n_test: int = 12,
    size: int = 8,
    classes: int = 3,
    gz: bool = False,
    test_prefix: str = "t10k",
) -> tuple[list[int], list[int]]:
    """An MNIST-format directory of ``size x size`` images; image ``i`` of class ``c`` is a bright
    ``c``-th horizontal band plus a pixel that depends on ``i``.

    Returns (train labels, test labels)."""
    suffix = ".gz" if gz else ""
    labels_of = {}
    for prefix, n in (("train", n_train), (test_prefix, n_test)):
        labels = [i % classes for i in range(n)]
        pixels = []
        for i, c in enumerate(labels):
            img = [0] * (size * size)
            band = c * size // classes
            for x in range(size):
                img[band * size + x] = 255
            img[(i * 7) % (size * size)] = 128
            pixels += img
        write_bytes(
            root / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(pixels, (n, size, size))
        )
        write_bytes(root / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels, (n,)))
        labels_of[prefix] = labels
    return labels_of["train"], labels_of[test_prefix]


def write_wav(
    path: Path, frames: Sequence[Sequence[int]], *, rate: int = 8000, width: int = 2
) -> Path:
    """A PCM WAV with the stdlib ``wave`` module: ``frames[t][channel]`` raw integer samples
    (unsigned for 8-bit, signed little-endian otherwise)."""
    channels = len(frames[0])
    fmt = {1: "B", 2: "h", 4: "i"}[width]
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack(f"<{channels}{fmt}", *f) for f in frames))
    return path


def sine(freq: float, n: int, *, rate: int = 8000, amplitude: int = 10000) -> list[int]:
    """``n`` 16-bit samples of ``amplitude * sin(2 pi freq t)``, rounded."""
    return [round(amplitude * math.sin(2 * math.pi * freq * t / rate)) for t in range(n)]


def write_speech_dir(
    root: Path,
    *,
    labels: Sequence[str] = ("0", "1", "2"),
    speakers: Sequence[str] = ("ann", "bob"),
    indices: Sequence[int] = range(8),
    n: int = 1600,
) -> list[Path]:
    """FSDD-style ``{label}_{speaker}_{index}.wav`` tones (0.2 s at 8 kHz; label ``k`` at
    ``400 (k + 1)`` Hz, a little louder per index)."""
    paths = []
    for k, label in enumerate(labels):
        for s, speaker in enumerate(speakers):
            for i in indices:
                samples = sine(400 * (k + 1) + 20 * s, n, amplitude=4000 + 300 * i)
                paths.append(write_wav(root / f"{label}_{speaker}_{i}.wav", [[v] for v in samples]))
    return paths


def write_text_dir(
    root: Path, *, n_train: int = 40, n_dev: int | None = 12, n_test: int = 12
) -> Path:
    """A ``<label> <text>`` directory (train.txt, dev.txt, test.txt) with two labels, ``neg`` /
    ``pos``, each with its own words."""
    words = {"neg": ["awful", "dull", "boring", "bad"], "pos": ["great", "fun", "lovely", "good"]}

    def lines(n: int, offset: int) -> str:
        out = []
        for i in range(n):
            label = ("neg", "pos")[i % 2]
            w = words[label]
            out.append(
                f"{label} the film was {w[(i + offset) % 4]} and {w[(i + offset + 1) % 4]} {i}"
            )
        return "\n".join(out) + "\n"

    write_text(root / "train.txt", lines(n_train, 0))
    if n_dev is not None:
        write_text(root / "dev.txt", lines(n_dev, 1))
    write_text(root / "test.txt", lines(n_test, 2))
    return root


WORDS = "red green blue cat dog bird runs jumps sits fast slow the a on under".split()


def sentences(n: int, seed: int) -> list[str]:
    """``n`` seeded sentences of 3-7 of :data:`WORDS`."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(n)]


def write_lines(path: Path, lines: list[str]) -> Path:
    """One line per item, gzipped when the name ends in ``.gz``."""
    return write_bytes(path, ("\n".join(lines) + "\n").encode())
