"""MaskMonitor: rows, CSV columns and values, the PNG, per-position and per-class counts,
``every``, state, and the TensorBoard hook."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from maskwise.dynamic import reliability
from maskwise.monitor import MaskMonitor

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def filled_monitor(steps: int = 20) -> MaskMonitor:
    mon = MaskMonitor(num_classes=10)
    g = torch.Generator().manual_seed(0)
    for t in range(steps):
        rate = 0.1 + 0.3 * t / steps
        mask = torch.rand(4, 16, generator=g) < rate * (1 + torch.arange(16) / 16)
        logits = torch.randn(4, 16, 10, generator=g) + t * 0.3 * torch.nn.functional.one_hot(
            torch.arange(16).expand(4, 16) % 10, 10
        )
        labels = (torch.arange(16).expand(4, 16) % 10).masked_fill(~mask, -100)
        mon.record(t, rate=rate, mask=mask, keys=torch.arange(16).expand(4, 16) % 10)
        mon.record(t, reliability=reliability(logits, labels), train_loss=1.0 / (t + 1))
    return mon


# --------------------------------------------------------------------------------------------
# rows and CSV


def test_rows_literal() -> None:
    mon = MaskMonitor()
    mon.record(0, rate=0.15, mask=torch.tensor([[True, False, False, False]]), loss=2.5)
    mon.record(
        1,
        rate=torch.tensor(0.2),
        mask=torch.tensor([[True, True, False, False]]),
        valid=torch.tensor([[True, True, True, False]]),
        reliability={"loss": torch.tensor([1.0, 3.0]), "accuracy": 0.5, "confidence": None},
    )
    assert mon.rows[0] == {"step": 0.0, "rate": 0.15, "masked_fraction": 0.25, "loss": 2.5}
    assert mon.rows[1] == {
        "step": 1.0,
        "rate": pytest.approx(0.2),
        "masked_fraction": pytest.approx(2 / 3),
        "loss": 2.0,
        "accuracy": 0.5,
    }
    # A Reliability gives its means over valid positions.
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    mon.record(2, reliability=reliability(logits, torch.tensor([0, 0, -100])))
    row = mon.rows[2]
    assert row["accuracy"] == 0.5
    assert row["loss"] == pytest.approx(
        (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(3.0))) / 2
    )
    # No valid position: the masked fraction is NaN, not 0.
    mon.record(3, mask=torch.tensor([[True]]), valid=torch.tensor([[False]]))
    assert math.isnan(mon.rows[3]["masked_fraction"])


def test_to_csv_writes_the_documented_columns_and_values(tmp_path: Path) -> None:
    mon = MaskMonitor()
    mon.record(0, rate=0.15, mask=torch.tensor([[True, False, False, False]]), loss=2.5)
    mon.record(1, rate=0.2, reliability={"loss": 1.5, "accuracy": 0.75, "confidence": 0.625})
    mon.record(2, rate=float("nan"), train_loss=0.5)
    path = mon.to_csv(tmp_path / "sub" / "monitor.csv")
    assert path == tmp_path / "sub" / "monitor.csv" and path.is_file()
    header, rows = read_csv(path)
    assert header == [
        "step",
        "rate",
        "masked_fraction",
        "loss",
        "accuracy",
        "confidence",
        "train_loss",
    ]
    assert header == mon.columns()
    assert rows[0] == {
        "step": "0.0",
        "rate": "0.15",
        "masked_fraction": "0.25",
        "loss": "2.5",
        "accuracy": "",
        "confidence": "",
        "train_loss": "",
    }
    assert rows[1] == {
        "step": "1.0",
        "rate": "0.2",
        "masked_fraction": "",
        "loss": "1.5",
        "accuracy": "0.75",
        "confidence": "0.625",
        "train_loss": "",
    }
    # NaN is written as an empty cell.
    assert rows[2] == {
        "step": "2.0",
        "rate": "",
        "masked_fraction": "",
        "loss": "",
        "accuracy": "",
        "confidence": "",
        "train_loss": "0.5",
    }


def test_series_skips_missing_and_nan() -> None:
    mon = MaskMonitor()
    mon.record(0, rate=0.1)
    mon.record(1, loss=1.0)
    mon.record(2, rate=float("nan"))
    mon.record(3, rate=0.3)
    assert mon.series("rate") == ([0.0, 3.0], [0.1, 0.3])


# --------------------------------------------------------------------------------------------
# where masks fall


def test_per_position_histogram_literal() -> None:
    mon = MaskMonitor()
    mon.record(
        0,
        mask=torch.tensor([[True, False, True], [False, False, True]]),
        valid=torch.tensor([[True, True, True], [True, True, False]]),
    )
    assert mon.rows[0]["masked_fraction"] == pytest.approx(2 / 5)
    assert mon.position_masked.tolist() == [1.0, 0.0, 1.0]
    assert mon.position_seen.tolist() == [2.0, 2.0, 1.0]
    # A longer batch grows the histogram; a shorter one adds to its start.
    mon.record(1, mask=torch.tensor([[False, True, False, True, True]]))
    mon.record(2, mask=torch.tensor([[True, True]]))
    assert mon.position_masked.tolist() == [2.0, 2.0, 1.0, 1.0, 1.0]
    assert mon.position_seen.tolist() == [4.0, 4.0, 2.0, 1.0, 1.0]
    # Leading dimensions are flattened: positions are along the last one.
    mon3 = MaskMonitor()
    mon3.record(0, mask=torch.ones(2, 3, 4, dtype=torch.bool))
    assert mon3.position_masked.tolist() == [6.0] * 4


def test_per_class_counts_literal() -> None:
    mon = MaskMonitor(num_classes=5)
    keys = torch.tensor([[0, 1, 2], [2, 2, 4], [7, -1, 3]])  # 7 and -1 are out of range
    mask = torch.tensor([[True, False, True], [False, True, True], [True, True, False]])
    valid = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    mon.record(0, mask=mask, valid=valid, keys=keys)
    assert mon.class_seen.tolist() == [1.0, 1.0, 3.0, 0.0, 1.0]
    assert mon.class_masked.tolist() == [1.0, 0.0, 2.0, 0.0, 1.0]
    mon.record(1, mask=torch.tensor([[True, True]]), keys=torch.tensor([[3, 3]]))
    assert mon.class_seen.tolist() == [1.0, 1.0, 3.0, 2.0, 1.0]
    assert mon.class_masked.tolist() == [1.0, 0.0, 2.0, 2.0, 1.0]
    # num_classes = 0 (the default): no per-class counts.
    off = MaskMonitor()
    off.record(0, mask=mask, keys=keys)
    assert off.class_seen.numel() == 0


def test_every_n_records_one_call_in_n() -> None:
    mon = MaskMonitor(every=3)
    for t in range(7):
        mon.record(t, rate=0.1 * t, mask=torch.tensor([[True, False]]))
    assert [r["step"] for r in mon.rows] == [0.0, 3.0, 6.0]
    assert mon.rows[1]["rate"] == pytest.approx(0.3)
    # Skipped calls do not reach the histograms either.
    assert mon.position_seen.tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match="0"):
        MaskMonitor(every=0)


# --------------------------------------------------------------------------------------------
# PNG


def colour_pixels(img, rgb: tuple[int, int, int], tol: float = 0.08) -> int:
    """Pixels within ``tol`` of ``rgb`` (0..255) in an RGB(A) float image."""
    import numpy as np

    target = np.array(rgb) / 255.0
    return int((np.abs(img[..., :3] - target).max(-1) < tol).sum())


@pytest.mark.filterwarnings("ignore:No artists with labels found:UserWarning")
def test_plot_writes_a_png_with_the_data(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg
    import numpy as np

    full = filled_monitor().plot(tmp_path / "plots" / "full.png", title="test run")
    empty = MaskMonitor().plot(tmp_path / "empty.png")
    assert full == tmp_path / "plots" / "full.png"
    for path in (full, empty):
        assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(full)
    # 8 x 9 inches at 110 dpi (3 panels: rate, reliability, positions)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert 700 < img.shape[1] < 1100 and 800 < img.shape[0] < 1200
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 50  # not blank
    # Two panels without any recorded data.
    assert mpimg.imread(empty).shape[0] < 0.8 * img.shape[0]
    # The plotted lines and bars are there: tab:blue (rate, accuracy, bars), tab:orange (masked
    # fraction, confidence) and tab:red at alpha 0.7 over white (loss).
    blue, orange, red = (31, 119, 180), (255, 127, 14), (226, 104, 105)
    assert colour_pixels(img, blue) > 2000
    assert colour_pixels(img, orange) > 200
    assert colour_pixels(img, red) > 100
    assert colour_pixels(mpimg.imread(empty), blue) < 50


# --------------------------------------------------------------------------------------------
# state


def test_state_dict_round_trip() -> None:
    a = filled_monitor(5)
    b = MaskMonitor(num_classes=10)
    b.load_state_dict(a.state_dict())
    assert b.rows == a.rows and b.columns() == a.columns()
    for mon in (a, b):
        mon.record(99, rate=0.5, mask=torch.tensor([[True] * 16]), keys=torch.arange(16)[None] % 10)
    assert b.rows == a.rows
    assert torch.equal(a.position_masked, b.position_masked)
    assert torch.equal(a.class_masked, b.class_masked)
    # The call counter travels too: ``every`` keeps its phase.
    c = MaskMonitor(every=2)
    c.record(0, rate=0.1)
    d = MaskMonitor(every=2)
    d.load_state_dict(c.state_dict())
    d.record(1, rate=0.2)
    d.record(2, rate=0.3)
    assert [r["step"] for r in d.rows] == [0.0, 2.0]


def test_state_dict_is_a_snapshot() -> None:
    a = MaskMonitor(num_classes=3)
    a.record(0, mask=torch.tensor([[True, False]]), keys=torch.tensor([[0, 1]]))
    state = a.state_dict()
    b = MaskMonitor(num_classes=3)
    b.load_state_dict(state)
    a.record(1, mask=torch.tensor([[True, True]]), keys=torch.tensor([[0, 1]]))
    assert b.position_masked.tolist() == [1.0, 0.0]
    assert b.class_masked.tolist() == [1.0, 0.0, 0.0]
    assert state["position_masked"].tolist() == [1.0, 0.0]


# --------------------------------------------------------------------------------------------
# TensorBoard


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))


def test_a_writer_gets_every_recorded_scalar_but_nan() -> None:
    writer = FakeWriter()
    mon = MaskMonitor(tensorboard=writer)
    mon.record(3, rate=0.25, mask=torch.tensor([[True, False]]), accuracy_extra=float("nan"))
    assert writer.scalars == [("maskwise/rate", 0.25, 3), ("maskwise/masked_fraction", 0.5, 3)]


def test_tensorboard_log_dir(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    mon = MaskMonitor(tensorboard=tmp_path / "tb")
    mon.record(0, rate=0.2)
    mon._writer.flush()
    assert any((tmp_path / "tb").iterdir())
