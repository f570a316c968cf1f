"""maskwise.experiments.data.images: IDX files written byte by byte and read back, bad files
named in the error; the digits."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from maskwise.experiments import data as D
from tests.experiments.synth import (
    idx_bytes,
    write_bytes,
    write_idx_dir,
    write_text,
)

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
