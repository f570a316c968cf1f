"""maskwise.experiments.data.audio: WAV files written with the standard library and read back,
the mel filterbank against a loop reference, FSDD folders and CSV manifests."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import pytest
import torch

from maskwise.experiments import data as D
from tests.experiments.synth import (
    sine,
    write_speech_dir,
    write_text,
    write_wav,
)

# ----------------------------------------------------------------------------------------------
# WAV and features
# ----------------------------------------------------------------------------------------------


def test_read_wav_16_bit_sine(tmp_path: Path) -> None:
    samples = sine(440.0, 200, rate=16000, amplitude=20000)
    path = write_wav(tmp_path / "a.wav", [[v] for v in samples], rate=16000)
    x, sr = D.read_wav(path)
    assert sr == 16000
    assert x.dtype == torch.float32 and x.shape == (200,)
    assert torch.equal(x, torch.tensor(samples, dtype=torch.float32) / 32768)
    assert x[5] == pytest.approx(
        20000 * math.sin(2 * math.pi * 440 * 5 / 16000) / 32768, abs=1 / 32768
    )


def test_read_wav_8_bit_is_unsigned(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", [[0], [64], [128], [255]], width=1, rate=8000)
    x, sr = D.read_wav(path)
    assert sr == 8000
    assert x.tolist() == [-1.0, -0.5, 0.0, 127 / 128]


def test_read_wav_stereo_is_averaged(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "s.wav", [[1000, 3000], [-2000, 0], [32767, 32767]])
    x, _ = D.read_wav(path)
    assert x.tolist() == [2000 / 32768, -1000 / 32768, 32767 / 32768]
    path8 = write_wav(tmp_path / "s8.wav", [[0, 128], [255, 255]], width=1)
    assert D.read_wav(path8)[0].tolist() == [-0.5, 127 / 128]


def test_read_wav_32_bit(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", [[2**30], [-(2**31)]], width=4)
    assert D.read_wav(path)[0].tolist() == [0.5, -1.0]


def test_read_wav_truncated_file_keeps_whole_frames(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", [[v] for v in range(10)])
    path.write_bytes(path.read_bytes()[:-1])  # the last sample loses a byte
    x, _ = D.read_wav(path)
    assert x.tolist() == [v / 32768 for v in range(9)]


def test_bad_wavs(tmp_path: Path) -> None:
    write_text(tmp_path / "text.wav", "this is not audio\n")
    with pytest.raises(ValueError, match=r"text\.wav: unreadable WAV"):
        D.read_wav(tmp_path / "text.wav")
    with pytest.raises(ValueError, match=r"missing\.wav: unreadable WAV"):
        D.read_wav(tmp_path / "missing.wav")
    with wave.open(str(tmp_path / "empty.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
    with pytest.raises(ValueError, match=r"empty\.wav: no samples"):
        D.read_wav(tmp_path / "empty.wav")
    with wave.open(str(tmp_path / "w24.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01\x02" * 4)
    with pytest.raises(ValueError, match=r"w24\.wav: unsupported sample width 3 bytes"):
        D.read_wav(tmp_path / "w24.wav")


def naive_mel_filterbank(
    n_fft: int, n_mels: int, sr: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Loop reference: HTK mel points, a triangle per band over the FFT bin frequencies
    ``k * sr / n_fft``, scaled by ``2 / (upper - lower)`` (unit area in Hz)."""
    f_max = sr / 2 if f_max is None else f_max

    def mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    def hz(m: float) -> float:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    lo, hi = mel(f_min), mel(f_max)
    pts = [hz(lo + (hi - lo) * j / (n_mels + 1)) for j in range(n_mels + 2)]
    fb = torch.zeros(n_fft // 2 + 1, n_mels, dtype=torch.float64)
    for m in range(n_mels):
        left, centre, right = pts[m], pts[m + 1], pts[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if left <= f <= centre:
                w = (f - left) / (centre - left)
            elif centre < f <= right:
                w = (right - f) / (right - centre)
            else:
                w = 0.0
            fb[k, m] = w * 2.0 / (right - left)
    return fb


@pytest.mark.parametrize(
    ("n_fft", "n_mels", "sr", "f_min", "f_max"),
    [(256, 40, 8000, 0.0, None), (512, 64, 16000, 20.0, 7600.0), (64, 8, 8000, 0.0, None)],
)
def test_mel_filterbank_matches_loop_reference(
    n_fft: int, n_mels: int, sr: int, f_min: float, f_max: float | None
) -> None:
    fb = D.mel_filterbank(n_fft, n_mels, sr, f_min, f_max)
    ref = naive_mel_filterbank(n_fft, n_mels, sr, f_min, f_max)
    assert fb.shape == (n_fft // 2 + 1, n_mels) and fb.dtype == torch.float32
    torch.testing.assert_close(fb.double(), ref, rtol=1e-5, atol=1e-7)  # weights are ~1e-3


def test_mel_filterbank_wide_bands_have_unit_area() -> None:
    sr, n_fft = 16000, 1024
    fb = D.mel_filterbank(n_fft, 20, sr).double()
    area = fb.sum(0) * (sr / n_fft)  # Riemann sum over bins of width sr / n_fft Hz
    torch.testing.assert_close(area[5:], torch.ones(15, dtype=torch.float64), rtol=0.03, atol=0.0)


def test_log_mel_shape_finite_and_peak_band(tmp_path: Path) -> None:
    sr = 8000
    wav = torch.tensor(sine(1000.0, sr, rate=sr), dtype=torch.float32) / 32768  # 1 s at 1 kHz
    m = D.log_mel(wav, sr, n_mels=40)
    # 25 ms window = 200 samples -> n_fft 256; 10 ms hop = 80 samples;
    # centred frames: 1 + 8000 // 80
    assert m.shape == (40, 101)
    assert torch.isfinite(m).all()
    ref = naive_mel_filterbank(256, 40, sr)
    assert int(m.mean(1).argmax()) == int(
        ref[1000 * 256 // sr].argmax()
    )  # the band that holds 1 kHz
    short = D.log_mel(torch.zeros(50), sr, n_mels=16)
    assert short.shape[0] == 16 and short.shape[1] >= 1 and torch.isfinite(short).all()


# ----------------------------------------------------------------------------------------------
# Speech directories and manifests
# ----------------------------------------------------------------------------------------------


def test_speech_dir_split_by_index_and_sorted_labels(tmp_path: Path) -> None:
    write_speech_dir(
        tmp_path / "recordings", labels=("10", "2"), speakers=("ann",), indices=(0, 4, 5, 12), n=80
    )
    write_text(tmp_path / "README.md", "not audio\n")
    items, names = D.load_speech(tmp_path)
    rec = tmp_path / "recordings"
    assert names == ["2", "10"]
    assert sorted(items["test"]) == sorted(
        [
            (rec / "10_ann_0.wav", "10"),
            (rec / "10_ann_4.wav", "10"),
            (rec / "2_ann_0.wav", "2"),
            (rec / "2_ann_4.wav", "2"),
        ]
    )
    assert sorted(items["train"]) == sorted(
        [
            (rec / "10_ann_5.wav", "10"),
            (rec / "10_ann_12.wav", "10"),
            (rec / "2_ann_5.wav", "2"),
            (rec / "2_ann_12.wav", "2"),
        ]
    )
    items1, _ = D.load_speech(tmp_path, test_indices=1)
    assert sorted(p.name for p, _ in items1["test"]) == ["10_ann_0.wav", "2_ann_0.wav"]


def test_speech_manifest_with_and_without_split(tmp_path: Path) -> None:
    write_speech_dir(tmp_path / "a", labels=("yes", "no"), speakers=("s",), indices=(1, 2), n=80)
    absolute = tmp_path / "a" / "no_s_2.wav"
    manifest = write_text(
        tmp_path / "m.csv",
        "path,label,split\n# a comment\na/yes_s_1.wav,yes,train\na/no_s_1.wav, no ,VAL\n"
        f"{absolute},no,test\na/yes_s_2.wav,yes\n",
    )
    items, names = D.load_speech(manifest)
    assert names == ["no", "yes"]
    assert items == {
        "train": [(tmp_path / "a/yes_s_1.wav", "yes"), (tmp_path / "a/yes_s_2.wav", "yes")],
        "dev": [(tmp_path / "a/no_s_1.wav", "no")],
        "test": [(absolute, "no")],
    }
    plain = write_text(tmp_path / "sub" / "plain.csv", "../a/yes_s_1.wav,yes\n../a/no_s_1.wav,no\n")
    items, names = D.load_speech(plain)
    assert set(items) == {"train"}  # no split column: the caller carves dev and test
    assert items["train"] == [
        (tmp_path / "sub/../a/yes_s_1.wav", "yes"),
        (tmp_path / "sub/../a/no_s_1.wav", "no"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "path,label,split\na.wav,0,train\nb.wav,0,train,extra\n",
            "m.csv:3: expected 'path,label[,split]', got 'b.wav,0,train,extra'",
        ),
        ("a.wav\n", "m.csv:1: expected 'path,label[,split]'"),
        (
            "a.wav,0,train\nb.wav,0,holdout\n",
            "m.csv:2: unknown split 'holdout' (train, dev/val, test)",
        ),
        ("a.wav,0,test\n", "m.csv: no training examples"),
        ("", "m.csv: no training examples"),
    ],
)
def test_bad_manifests(tmp_path: Path, text: str, message: str) -> None:
    write_text(tmp_path / "m.csv", text)
    with pytest.raises(ValueError) as err:
        D.load_speech(tmp_path / "m.csv")
    assert message in str(err.value)


def test_bad_speech_dirs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no .wav files"):
        D.load_speech(tmp_path)
    write_speech_dir(tmp_path, labels=("1",), speakers=("a",), indices=(0, 9), n=40)
    write_wav(tmp_path / "sub" / "hello.wav", [[0]])
    with pytest.raises(
        ValueError, match=r"sub/hello\.wav: name is not '\{label\}_\{speaker\}_\{index\}\.wav'"
    ):
        D.load_speech(tmp_path)
    with pytest.raises(ValueError, match="neither a directory of WAV files nor a CSV manifest"):
        D.load_speech(tmp_path / "nothing")
    only_test = tmp_path / "t"
    write_speech_dir(only_test, labels=("1",), speakers=("a",), indices=(0,), n=40)
    with pytest.raises(ValueError, match="no training examples"):
        D.load_speech(only_test)


# ----------------------------------------------------------------------------------------------
# The real data sets (skipped without ../shared/data)
# ----------------------------------------------------------------------------------------------


def test_real_fsdd_official_split(fsdd_dir: Path) -> None:
    items, names = D.load_speech(fsdd_dir)
    assert names == [str(d) for d in range(10)]
    assert (len(items["train"]), len(items["test"])) == (2700, 300)
    assert all(int(p.stem.split("_")[2]) < 5 for p, _ in items["test"])
