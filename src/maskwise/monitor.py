"""MaskMonitor: what was masked, at which rate, how reliable the predictions were, over time."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["MaskMonitor"]

_RELIABILITY = ("loss", "accuracy", "confidence")


def _scalar(x: Any) -> float:
    if isinstance(x, torch.Tensor):
        return float(x.detach().float().mean()) if x.numel() else math.nan
    return float(x)


class MaskMonitor:
    """Records, per step, the rate, the realised masked fraction, reliability signals and where
    masks fall; writes a CSV, a PNG and (optionally) TensorBoard scalars.

    ``record(step, rate=..., mask=..., valid=..., reliability=..., keys=..., **scalars)``:

    * ``mask`` (bool, any shape with positions along the last dimension) gives the realised
      masked fraction over ``valid`` positions (bool, broadcastable to ``mask``: where masking
      was possible, not padding nor special tokens; default all), and accumulates a
      per-position histogram of them. :class:`~maskwise.nn.DynamicMask` passes its masker's
      ``maskable`` positions;
    * ``keys`` (same shape as ``mask``, integers < ``num_classes``) accumulates per-class counts
      (how often each token id / class / band was masked, out of how often it was seen);
    * ``reliability``: a :class:`maskwise.dynamic.Reliability` or a dict with ``loss``,
      ``accuracy``, ``confidence`` (floats or tensors);
    * extra keyword scalars (``train_loss=...``) are recorded as columns too.

    Each ``record`` reads a few scalars on the host; record every ``every`` steps to amortise.

    Args:
        every: record one call in ``every`` (the others return at once).
        num_classes: size of the per-class histogram (0 disables it).
        tensorboard: a ``torch.utils.tensorboard.SummaryWriter`` or a log directory (the
            ``tensorboard`` package is imported only then).

    >>> mon = MaskMonitor()
    >>> mon.record(0, rate=0.15, mask=torch.tensor([[True, False, False, False]]), loss=2.5)
    >>> mon.rows[0]["masked_fraction"], mon.rows[0]["loss"]
    (0.25, 2.5)
    """

    def __init__(self, *, every: int = 1, num_classes: int = 0, tensorboard: Any = None) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 ({every} given).")
        self.every, self.num_classes = every, num_classes
        self.rows: list[dict[str, float]] = []
        self.position_masked: torch.Tensor | None = None  # (L,) masked count per position
        self.position_seen: torch.Tensor | None = None
        self.class_masked = torch.zeros(num_classes, dtype=torch.float64)
        self.class_seen = torch.zeros(num_classes, dtype=torch.float64)
        self._calls = 0
        self._writer = None
        if tensorboard is not None:
            if isinstance(tensorboard, (str, Path)):
                from torch.utils.tensorboard import SummaryWriter

                tensorboard = SummaryWriter(str(tensorboard))
            self._writer = tensorboard

    def record(
        self,
        step: int,
        *,
        rate: float | None = None,
        mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        reliability: Any = None,
        keys: torch.Tensor | None = None,
        **scalars: Any,
    ) -> None:
        self._calls += 1
        if (self._calls - 1) % self.every:
            return
        row: dict[str, float] = {"step": float(step)}
        if rate is not None:
            row["rate"] = _scalar(rate)
        if mask is not None:
            m = mask.detach()
            v = (
                torch.ones_like(m, dtype=torch.bool)
                if valid is None
                else valid.detach().to(m.device).bool().expand_as(m)
            )
            n = v.sum()
            row["masked_fraction"] = (
                float((m & v).sum() / n.clamp_min(1)) if bool(n > 0) else math.nan
            )
            self._positions(m, v)
            if keys is not None and self.num_classes:
                self._classes(m, v, keys.detach())
        if reliability is not None:
            values = (
                reliability.mean()
                if hasattr(reliability, "mean") and not isinstance(reliability, Mapping)
                else reliability
            )
            for name in _RELIABILITY:
                if name in values and values[name] is not None:
                    row[name] = _scalar(values[name])
        for name, value in scalars.items():
            row[name] = _scalar(value)
        self.rows.append(row)
        if self._writer is not None:
            for name, value in row.items():
                if name != "step" and not math.isnan(value):
                    self._writer.add_scalar(f"maskwise/{name}", value, int(step))

    def _positions(self, m: torch.Tensor, v: torch.Tensor) -> None:
        L = m.shape[-1]
        masked = (m & v).reshape(-1, L).sum(0).double().cpu()
        seen = v.reshape(-1, L).sum(0).double().cpu()
        if self.position_masked is None or self.position_masked.numel() < L:

            def grow(t: torch.Tensor | None) -> torch.Tensor:
                if t is None:
                    return torch.zeros(L, dtype=torch.float64)
                return torch.nn.functional.pad(t, (0, L - t.numel()))

            self.position_masked, self.position_seen = (
                grow(self.position_masked),
                grow(self.position_seen),
            )
        self.position_masked[:L] += masked
        self.position_seen[:L] += seen  # type: ignore[index]

    def _classes(self, m: torch.Tensor, v: torch.Tensor, keys: torch.Tensor) -> None:
        k = keys.reshape(-1).long()
        ok = v.reshape(-1) & (k >= 0) & (k < self.num_classes)
        k = torch.where(ok, k, 0)
        self.class_seen += torch.bincount(k, weights=ok.double(), minlength=self.num_classes).cpu()[
            : self.num_classes
        ]
        hit = ok & m.reshape(-1)
        self.class_masked += torch.bincount(
            k, weights=hit.double(), minlength=self.num_classes
        ).cpu()[: self.num_classes]

    # -- outputs -------------------------------------------------------------------------------
    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            cols.extend(c for c in row if c not in cols)
        return cols

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per recorded step (missing values empty)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cols = self.columns()
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for row in self.rows:
                w.writerow(
                    {c: ("" if c not in row or math.isnan(row[c]) else row[c]) for c in cols}
                )
        return path

    def series(self, name: str) -> tuple[list[float], list[float]]:
        pts = [(r["step"], r[name]) for r in self.rows if name in r and not math.isnan(r[name])]
        return [p[0] for p in pts], [p[1] for p in pts]

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """PNG: rate and realised masked fraction over steps, the reliability signals, and where
        masks fell (per position). Needs matplotlib (the ``plot`` extra)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        has_pos = self.position_seen is not None and bool((self.position_seen > 0).any())
        n_panels = 3 if has_pos else 2
        fig, axes = plt.subplots(n_panels, 1, figsize=(8, 3.0 * n_panels), constrained_layout=True)
        ax = axes[0]
        for name, style in (("rate", "-"), ("masked_fraction", ":")):
            x, y = self.series(name)
            if x:
                ax.plot(
                    x, y, style, label={"rate": "rate", "masked_fraction": "masked fraction"}[name]
                )
        ax.set_xlabel("step")
        ax.set_ylabel("masking")
        ax.set_title(title or "Masking rate")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
        ax = axes[1]
        plotted = False
        for name in ("accuracy", "confidence"):
            x, y = self.series(name)
            if x:
                ax.plot(x, y, label=name)
                plotted = True
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy / confidence")
        ax.grid(alpha=0.3)
        x, y = self.series("loss")
        if x:
            ax2 = ax.twinx()
            ax2.plot(x, y, color="tab:red", alpha=0.7, label="loss")
            ax2.set_ylabel("loss")
            lines = ax.get_legend_handles_labels()
            lines2 = ax2.get_legend_handles_labels()
            ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="best")
            plotted = True
        elif plotted:
            ax.legend(loc="best")
        ax.set_title("Reliability of predictions" if plotted else "Reliability (not recorded)")
        if has_pos:
            ax = axes[2]
            assert self.position_seen is not None and self.position_masked is not None
            seen = self.position_seen.clamp_min(1)
            ax.bar(range(seen.numel()), (self.position_masked / seen).tolist(), width=1.0)
            ax.set_xlabel("position")
            ax.set_ylabel("masked share")
            ax.set_title("Where masks fell")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def state_dict(self) -> dict[str, Any]:
        def copy(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.clone()

        return {
            "rows": [dict(r) for r in self.rows],
            "position_masked": copy(self.position_masked),
            "position_seen": copy(self.position_seen),
            "class_masked": self.class_masked.clone(),
            "class_seen": self.class_seen.clone(),
            "calls": self._calls,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def copy(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.clone()

        self.rows = [dict(r) for r in state["rows"]]
        self.position_masked, self.position_seen = (
            copy(state["position_masked"]),
            copy(state["position_seen"]),
        )
        self.class_masked, self.class_seen = (
            state["class_masked"].clone(),
            state["class_seen"].clone(),
        )
        self._calls = int(state["calls"])
