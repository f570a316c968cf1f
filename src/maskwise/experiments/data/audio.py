"""Speech: PCM WAV files read with the standard library, log-mel features computed with torch.

A data set is a directory of ``{label}_{speaker}_{index}.wav`` files (FSDD; index 0-4 is the
official test split) or a CSV manifest ``path,label[,split]``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import wave
from pathlib import Path

import torch
import torch.nn.functional as F

from maskwise.experiments.data.files import UNREADABLE, Split, label_key, split_of

__all__ = [
    "cache_dir",
    "frame_lengths",
    "load_speech",
    "log_mel",
    "mel_filterbank",
    "read_wav",
    "speaker_of",
    "speech_features",
]


def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """Mono float waveform (T,) in [-1, 1] and its sample rate, from a PCM WAV file (8/16/32-bit;
    channels averaged). Raises ``ValueError`` for a file that is not a readable PCM WAV."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, sr = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as e:
        raise ValueError(f"{path}: unreadable WAV ({e}).") from None
    frames = frames[: len(frames) - len(frames) % (width * channels)]  # a truncated last frame
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
    up = (freqs[:, None] - lower) / (centre - lower)  # (F, n_mels) rising edges
    down = (upper - freqs[:, None]) / (upper - centre)  # (F, n_mels) falling edges
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
        wav = F.pad(wav, (0, win - wav.numel()))
    stft = torch.stft(
        wav,
        n_fft,
        hop_length=hop,
        win_length=win,
        window=torch.hann_window(win),
        center=True,
        return_complex=True,
    )
    power = stft.abs().pow(2)  # (n_fft // 2 + 1, T)
    mel = mel_filterbank(n_fft, n_mels, sample_rate).T @ power
    return torch.log(mel + 1e-6)


_FSDD_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<index>\d+)\.wav$", re.IGNORECASE)


def speaker_of(path: str | Path) -> str:
    """The speaker of a ``{label}_{speaker}_{index}.wav`` file.

    >>> speaker_of("data/7_theo_12.wav")
    'theo'
    """
    m = _FSDD_NAME.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: name is not '{{label}}_{{speaker}}_{{index}}.wav'.")
    return m["speaker"]


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
        except UNREADABLE as e:
            raise ValueError(f"{root}: unreadable ({e}).") from None
        if rows and rows[0][1][0].strip().lower() == "path":
            rows = rows[1:]
        for i, r in rows:
            if len(r) not in (2, 3):
                raise ValueError(f"{root}:{i}: expected 'path,label[,split]', got {','.join(r)!r}.")
            split = split_of(r[2]) if len(r) == 3 else "train"
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
    names = sorted({lab for rows in items.values() for _, lab in rows}, key=label_key)
    return items, names


def cache_dir() -> Path:
    """Where computed features are cached: ``$MASKWISE_CACHE``, else ``$XDG_CACHE_HOME/maskwise``
    (default ``~/.cache/maskwise``)."""
    base = os.environ.get("MASKWISE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "maskwise"
    )
    return Path(base)


def speech_features(
    items: list[tuple[Path, str]],
    labels: dict[str, int],
    *,
    n_mels: int,
    frames: int,
    cache: bool = True,
) -> Split:
    """Log-mel features (N, n_mels, frames) of WAV files and their label ids (N,).

    Each clip is cropped around its centre or padded at the end (with the clip's minimum) to
    ``frames``. Cached on disk (:func:`cache_dir`) by a hash of the paths, sizes and settings.
    """
    key = hashlib.sha1(
        repr((n_mels, frames, [(str(p), p.stat().st_size) for p, _ in items])).encode()
    ).hexdigest()[:16]
    path = cache_dir() / f"logmel-{key}.pt"
    if cache and path.is_file():
        x = torch.load(path)
    else:
        feats = []
        for p, _ in items:
            wav, sr = read_wav(p)
            m = log_mel(wav, sr, n_mels=n_mels)  # (n_mels, T)
            T = m.shape[1]
            if T >= frames:
                start = (T - frames) // 2
                m = m[:, start : start + frames]
            else:
                m = F.pad(m, (0, frames - T), value=float(m.min()))
            feats.append(m)
        x = torch.stack(feats)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(x, path)
    return Split(x, torch.tensor([labels[lab] for _, lab in items]))


def frame_lengths(x: torch.Tensor) -> torch.Tensor:
    """The real frames (B,) of features (B, F, T) padded as :func:`speech_features` pads: the
    trailing frames whose every band holds the clip's minimum.

    >>> x = torch.tensor([[[1.0, 2.0, 0.0, 0.0], [3.0, 0.5, 0.0, 0.0]]])
    >>> frame_lengths(x).tolist()
    [2]
    """
    low = x.amin(dim=(1, 2), keepdim=True).squeeze(1)  # (B, 1)
    pad = (x.amax(1) == low) & (x.amin(1) == low)  # (B, T): a frame of the minimum only
    trailing = pad.flip(1).long().cumprod(1).sum(1)
    return (x.shape[-1] - trailing).clamp_min(1)
