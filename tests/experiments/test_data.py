"""maskwise.experiments.data: every accepted file format, written here with the standard library,
read back to the values written; every rejected file raises ValueError naming the file and the
problem; the mel filterbank against a loop reference."""

from __future__ import annotations

import json
import math
import re
import struct
import wave
from pathlib import Path

import pytest
import torch

from maskwise.experiments import data as D
from tests.experiments.synth import (
    idx_bytes,
    sine,
    write_bytes,
    write_idx_dir,
    write_speech_dir,
    write_text,
    write_wav,
)

# ----------------------------------------------------------------------------------------------
# Split files, text classification
# ----------------------------------------------------------------------------------------------


def test_find_split_files_reads_the_split_from_name_tokens(tmp_path: Path) -> None:
    for name in (
        "stsa.binary.train",
        "TREC.test.all",
        "my_valid.tsv",
        "README.md",
        "SOURCE.txt",
        ".train.swp",
        "notes.txt",
    ):
        write_text(tmp_path / name, "x\n")
    (tmp_path / "train_dir").mkdir()
    found = D.find_split_files(tmp_path)
    assert found == {
        "train": tmp_path / "stsa.binary.train",
        "test": tmp_path / "TREC.test.all",
        "dev": tmp_path / "my_valid.tsv",
    }
    assert D.find_split_files(tmp_path, suffixes=[".tsv", ".train"]) == {
        "train": tmp_path / "stsa.binary.train",
        "dev": tmp_path / "my_valid.tsv",
    }


@pytest.mark.parametrize("dev_name", ["dev.txt", "val.txt", "valid.txt", "sst.dev"])
def test_every_dev_file_name_is_the_dev_split(tmp_path: Path, dev_name: str) -> None:
    write_text(tmp_path / "train.txt", "a one\nb two\n")
    write_text(tmp_path / dev_name, "b three\n")
    write_text(tmp_path / "test.txt", "a four\n")
    splits, _ = D.load_text_classification(tmp_path)
    assert splits["dev"].inputs == ["three"]
    assert splits["train"].inputs == ["one", "two"]  # nothing carved when a dev file exists


def test_label_lines_values_and_sorted_label_ids(tmp_path: Path) -> None:
    # numeric labels sort as numbers ("2" < "10"), then the non-numeric ones as strings
    write_text(
        tmp_path / "train.txt", "10 ten apples\n2 two pears\n\nb  bee text\na DESC:manner how\n"
    )
    write_text(tmp_path / "dev.txt", "2 dev line\n")
    write_text(tmp_path / "test.txt", "10 test line\na another\n")
    splits, names = D.load_text_classification(tmp_path)
    assert names == ["2", "10", "a", "b"]
    assert splits["train"].inputs == ["ten apples", "two pears", " bee text", "DESC:manner how"]
    assert splits["train"].labels.tolist() == [1, 0, 3, 2]
    assert splits["dev"].labels.tolist() == [0]
    assert splits["test"].inputs == ["test line", "another"]
    assert splits["test"].labels.tolist() == [1, 2]
    assert splits["train"].labels.dtype == torch.long


def test_trec_style_fine_labels_are_label_tokens(tmp_path: Path) -> None:
    write_text(tmp_path / "x.train", "DESC:manner How did it go ?\nNUM:date When ?\n")
    write_text(tmp_path / "x.test", "NUM:date What year ?\n")
    write_text(tmp_path / "x.dev", "DESC:manner Why ?\n")
    _, names = D.load_text_classification(tmp_path)
    assert names == ["DESC:manner", "NUM:date"]


def test_tsv_csv_jsonl_and_gzip_variants(tmp_path: Path) -> None:
    write_text(
        tmp_path / "train.tsv", "id\tSentence\tLabel\n1\ta fine film\tpos\n2\ta bad film\tneg\n"
    )
    write_text(tmp_path / "dev.csv", 'text,label\n"good, really",pos\n')
    write_text(
        tmp_path / "test.jsonl.gz",
        json.dumps({"question": "so bad", "label": "neg", "id": 3})
        + "\n\n"
        + json.dumps({"question": "so good", "label": "pos", "id": 4})
        + "\n",
    )
    splits, names = D.load_text_classification(tmp_path)
    assert names == ["neg", "pos"]
    assert splits["train"].inputs == ["a fine film", "a bad film"]
    assert splits["train"].labels.tolist() == [1, 0]
    assert splits["dev"].inputs == ["good, really"]
    assert splits["test"].inputs == ["so bad", "so good"]
    assert splits["test"].labels.tolist() == [0, 1]


def test_jsonl_integer_labels_and_gzipped_label_lines(tmp_path: Path) -> None:
    write_text(
        tmp_path / "train.jsonl",
        "\n".join(json.dumps({"text": f"t{i}", "label": i % 3}) for i in range(9)),
    )
    write_text(tmp_path / "dev.txt.gz", "2 gz dev\n")
    write_text(tmp_path / "test.tsv.gz", "text\tlabel\ngz test\t1\n")
    splits, names = D.load_text_classification(tmp_path)
    assert names == ["0", "1", "2"]
    assert splits["train"].labels.tolist() == [0, 1, 2] * 3
    assert splits["dev"].inputs == ["gz dev"] and splits["dev"].labels.tolist() == [2]
    assert splits["test"].inputs == ["gz test"] and splits["test"].labels.tolist() == [1]


def test_missing_dev_is_carved_from_train_seeded(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(20)]
    write_text(tmp_path / "train.txt", "".join(f"{i % 2} {t}\n" for i, t in enumerate(texts)))
    write_text(tmp_path / "test.txt", "0 t\n1 u\n")
    a, _ = D.load_text_classification(tmp_path, seed=0)
    b, _ = D.load_text_classification(tmp_path, seed=0)
    c, _ = D.load_text_classification(tmp_path, seed=1)
    assert len(a["dev"]) == 2 and len(a["train"]) == 18  # round(0.1 * 20)
    assert a["dev"].inputs == b["dev"].inputs and a["train"].inputs == b["train"].inputs
    assert a["dev"].inputs != c["dev"].inputs
    assert sorted(a["train"].inputs + a["dev"].inputs) == sorted(texts)
    # labels travel with their texts
    for split in (a["train"], a["dev"]):
        for text, label in zip(split.inputs, split.labels.tolist()):
            assert label == int(text.split()[1]) % 2
    d, _ = D.load_text_classification(tmp_path, dev_fraction=0.25, seed=0)
    assert len(d["dev"]) == 5


def _three(tmp_path: Path, train: str = "a one\nb two\n", test: str = "a three\n") -> None:
    write_text(tmp_path / "train.txt", train)
    write_text(tmp_path / "test.txt", test)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"test.txt": "a x\n", "dev.txt": "a y\n"}, "no training file"),
        ({"train.txt": "a x\n", "dev.txt": "a y\n"}, "no test file"),
        (
            {"train.txt": "a x\n", "test.txt": "a x\n", "dev.txt": "a y\n", "val.txt": "a z\n"},
            "two files for the dev split: dev.txt, val.txt",
        ),
        (
            {"train.txt": "a one\nb\n", "test.txt": "a x\n"},
            "train.txt:2: expected '<label> <text>'",
        ),
        (
            {"train.txt": "a one\n(b) two\n", "test.txt": "a x\n"},
            "train.txt:2: expected '<label> <text>'",
        ),
        (
            {"train.txt": "a one\nb two\n", "test.txt": "a x\nc y\nd z\n"},
            "labels ['c', 'd'] never occur in train.txt",
        ),
        ({"train.txt": "\n\n", "test.txt": "a x\n"}, "train.txt: no examples"),
        (
            {"train.tsv": "text\tscore\nhi\t1\n", "test.txt": "a x\n"},
            "train.tsv: no label column/field (looked for label, labels, class, category, coarse_label; found text, score)",
        ),
        ({"train.csv": "label\n1\n", "test.txt": "a x\n"}, "train.csv: no text column/field"),
        ({"train.csv": "", "test.txt": "a x\n"}, "train.csv: empty file"),
        (
            {"train.csv": "text,label\nfine,1\nno label here\n", "test.txt": "1 x\n"},
            "train.csv:3: missing the label value",
        ),
        (
            {"train.jsonl": '{"text": "a", "label": 1}\n{"text": "b", \n', "test.txt": "1 x\n"},
            "train.jsonl:2: not JSON",
        ),
        (
            {"train.jsonl": '{"text": "a", "label": 1}\n{"text": "b"}\n', "test.txt": "1 x\n"},
            "train.jsonl:2: no field 'label' (fields: text)",
        ),
        (
            {"train.jsonl": '["a", 1]\n', "test.txt": "1 x\n"},
            "train.jsonl:1: expected a JSON object, got list",
        ),
    ],
)
def test_bad_text_classification_dirs(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write_text(tmp_path / name, text)
    with pytest.raises(ValueError, match="^" + re.escape(str(tmp_path))) as err:
        D.load_text_classification(tmp_path)
    assert message in str(err.value)


def test_unreadable_text_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "train.txt.gz").write_bytes(b"1 not gzip\n")
    write_text(tmp_path / "test.txt", "1 x\n")
    with pytest.raises(ValueError, match=r"train\.txt\.gz: unreadable"):
        D.load_text_classification(tmp_path)


def test_bytes_that_are_not_utf8_become_replacement_characters(tmp_path: Path) -> None:
    # TREC's training file has one stray 0xF0 byte; the rest of a file must still load
    (tmp_path / "train.txt").write_bytes("1 café\n".encode() + b"1 sister\xf0city\n")
    write_text(tmp_path / "test.txt", "1 x\n")
    write_text(tmp_path / "dev.txt", "1 y\n")
    splits, _ = D.load_text_classification(tmp_path)
    assert splits["train"].inputs == ["café", "sister\ufffdcity"]


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing is not a directory"):
        D.load_text_classification(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------
# Split and carve
# ----------------------------------------------------------------------------------------------


def test_carve_is_seeded_disjoint_and_covers_all() -> None:
    split = D.Split([f"x{i}" for i in range(20)], torch.arange(20) * 10)
    train, dev = D.carve(split, 0.25, seed=3)
    again = D.carve(split, 0.25, seed=3)
    other = D.carve(split, 0.25, seed=4)
    assert (len(train), len(dev)) == (15, 5)
    assert train.inputs == again[0].inputs and dev.inputs == again[1].inputs
    assert dev.inputs != other[1].inputs
    assert set(train.inputs).isdisjoint(dev.inputs)
    assert sorted(train.inputs + dev.inputs, key=lambda s: int(s[1:])) == split.inputs
    for part in (train, dev):  # kept in the original order, labels with their inputs
        idx = [int(s[1:]) for s in part.inputs]
        assert idx == sorted(idx)
        assert part.labels.tolist() == [10 * i for i in idx]


def test_carve_tensor_inputs_and_bounds() -> None:
    split = D.Split(torch.arange(10).view(10, 1), torch.arange(10))
    train, dev = D.carve(split, 0.01, seed=0)
    assert len(dev) == 1  # at least one
    assert torch.equal(dev.inputs.view(-1), dev.labels)
    assert torch.equal(train.inputs.view(-1), train.labels)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match=rf"fraction must be in \(0, 1\) \({bad} given\)"):
            D.carve(split, bad, seed=0)


# ----------------------------------------------------------------------------------------------
# IDX
# ----------------------------------------------------------------------------------------------

IDX_CASES = [
    ("uint8", [0, 1, 127, 128, 255, 7, 9, 200, 3, 4, 5, 6], (2, 2, 3), torch.uint8),
    ("int8", [-128, -1, 0, 1, 127, 5], (6,), torch.int8),
    ("int16", [-300, 5, 32767, -32768], (2, 2), torch.int16),
    ("int32", [-2, 70000, 2**31 - 1, -(2**31), 1, 256], (3, 2), torch.int32),
    ("float32", [0.5, -1.25, 3e5, 1e-3], (4,), torch.float32),
]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(
    ("dtype", "values", "shape", "torch_dtype"), IDX_CASES, ids=[c[0] for c in IDX_CASES]
)
def test_idx_round_trip(
    tmp_path: Path, gz: bool, dtype: str, values: list, shape: tuple, torch_dtype: torch.dtype
) -> None:
    path = write_bytes(tmp_path / ("f.idx.gz" if gz else "f.idx"), idx_bytes(values, shape, dtype))
    t = D.load_idx(path)
    assert t.dtype == torch_dtype
    assert torch.equal(t, torch.tensor(values, dtype=torch_dtype).reshape(shape))


def test_idx_big_endian_literal(tmp_path: Path) -> None:
    # int32 1 and 256 as big-endian bytes: a little-endian reader would give 16777216 and 65536
    path = write_bytes(
        tmp_path / "f.idx", bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 0])
    )
    assert D.load_idx(path).tolist() == [1, 256]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08\x03\x00\x00" + b"\x00" * 8, "not an IDX file (bad magic number)"),
        (
            bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 0]),
            "not an IDX file (bad magic number)",
        ),  # unknown type code
        (b"\x00\x00", "not an IDX file (bad magic number)"),
        (bytes([0, 0, 8, 3]) + struct.pack(">I", 2), "header truncated (8 bytes for 3 dimensions)"),
        (
            idx_bytes(list(range(12)), (2, 2, 3))[:-1],
            "11 data bytes for shape (2, 2, 3) (expected 12)",
        ),
        (
            idx_bytes(list(range(12)), (2, 2, 3)) + b"\x00",
            "13 data bytes for shape (2, 2, 3) (expected 12)",
        ),
        (idx_bytes([1, 2], (2,), "int32")[:-2], "6 data bytes for shape (2,) (expected 8)"),
    ],
)
def test_bad_idx_files(tmp_path: Path, data: bytes, message: str) -> None:
    path = write_bytes(tmp_path / "bad-idx", data)
    with pytest.raises(ValueError, match="bad-idx: ") as err:
        D.load_idx(path)
    assert message in str(err.value)


def test_idx_gz_that_is_not_gzip(tmp_path: Path) -> None:
    (tmp_path / "f-idx.gz").write_bytes(idx_bytes([1], (1,)))
    with pytest.raises(ValueError, match=r"f-idx\.gz: unreadable"):
        D.load_idx(tmp_path / "f-idx.gz")


@pytest.mark.parametrize(("gz", "test_prefix"), [(False, "t10k"), (True, "t10k"), (False, "test")])
def test_idx_dir(tmp_path: Path, gz: bool, test_prefix: str) -> None:
    train_labels, test_labels = write_idx_dir(
        tmp_path, n_train=9, n_test=4, size=6, classes=3, gz=gz, test_prefix=test_prefix
    )
    write_text(tmp_path / "SOURCE.txt", "not data\n")
    splits = D.load_idx_dir(tmp_path)
    assert set(splits) == {"train", "test"}
    assert splits["train"].inputs.shape == (9, 1, 6, 6) and splits["test"].inputs.shape == (
        4,
        1,
        6,
        6,
    )
    assert splits["train"].inputs.dtype == torch.float32
    assert (
        splits["train"].labels.tolist() == train_labels
        and splits["test"].labels.tolist() == test_labels
    )
    assert splits["train"].labels.dtype == torch.long
    x = splits["train"].inputs
    assert x[0, 0, 0, 0] == pytest.approx(128 / 255)  # image 0: pixel 0 overwritten with 128
    assert x[0, 0, 0, 1:].tolist() == [1.0] * 5  # the rest of class 0's band (row 0) is 255
    assert x[1, 0, 2].tolist() == [1.0] * 6  # class 1's band is row 6 // 3 = 2
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("t10k-labels-idx1-ubyte", "expected one test images file and one labels file"),
        ("train-images-idx3-ubyte", "expected one train images file and one labels file"),
    ],
)
def test_idx_dir_missing_file(tmp_path: Path, remove: str, message: str) -> None:
    write_idx_dir(tmp_path, n_train=3, n_test=3)
    (tmp_path / remove).unlink()
    with pytest.raises(ValueError, match=message) as err:
        D.load_idx_dir(tmp_path)
    assert "found 0 and 1" in str(err.value) or "found 1 and 0" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_idx_dir_counts_must_match(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, n_train=3, n_test=3, size=4)
    write_bytes(tmp_path / "train-labels-idx1-ubyte", idx_bytes([0, 1], (2,)))
    with pytest.raises(
        ValueError, match=r"train images \(3, 4, 4\) and labels \(2,\) do not match"
    ):
        D.load_idx_dir(tmp_path)
    with pytest.raises(ValueError, match="is not a directory"):
        D.load_idx_dir(tmp_path / "nope")


def test_digits() -> None:
    s = D.load_digits()["all"]
    assert s.inputs.shape == (1797, 1, 8, 8)
    assert float(s.inputs.min()) == 0.0 and float(s.inputs.max()) == 1.0
    assert s.labels.unique().tolist() == list(range(10))


def test_real_fashion_mnist_test_files(fashion_mnist_dir: Path) -> None:
    x = D.load_idx(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz")
    y = D.load_idx(fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y.long()).tolist() == [1000] * 10  # the test set is balanced


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
    # 25 ms window = 200 samples -> n_fft 256; 10 ms hop = 80 samples; centred frames: 1 + 8000 // 80
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


# ----------------------------------------------------------------------------------------------
# The real data sets (skipped without ../shared/data)
# ----------------------------------------------------------------------------------------------


def test_real_sst2(sst2_dir: Path) -> None:
    splits, names = D.load_text_classification(sst2_dir)
    assert names == ["0", "1"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 6920, "dev": 872, "test": 1821}


def test_real_trec_dev_carved(trec_dir: Path) -> None:
    splits, names = D.load_text_classification(trec_dir)
    assert names == ["0", "1", "2", "3", "4", "5"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 5452 - 545, "dev": 545, "test": 500}


def test_real_fsdd_official_split(fsdd_dir: Path) -> None:
    items, names = D.load_speech(fsdd_dir)
    assert names == [str(d) for d in range(10)]
    assert (len(items["train"]), len(items["test"])) == (2700, 300)
    assert all(int(p.stem.split("_")[2]) < 5 for p, _ in items["test"])
