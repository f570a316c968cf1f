"""Reusing finished runs: ``maskwise run ... --reuse DIR`` takes from earlier results folders the
runs that the new comparison would train again, so that adding an arm to a setting costs that
arm's runs only.

A run is deterministic given the task's data and model settings, the training settings, the
variant (kind, rate, weight decay, named controller and, for a dynamic arm, the controller's
settings) and the seed: the protocol's pairing rests on that. A stored run is reused only when
every one of those matches; the record keeps where it came from (``reused_from``), and the
results page says how many runs were reused. Settings added to the code after a folder was
written count as their defaults (the behaviour the older code had).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskwise.experiments.engine import (
    ControllerConfig,
    RunResult,
    Task,
    TrainConfig,
    Variant,
)
from maskwise.experiments.protocol import Job
from maskwise.experiments.summary import finite_json

__all__ = ["Reuse"]

_FIELDS = [f.name for f in dataclasses.fields(RunResult) if f.name != "monitor"]


def _plain(obj: Any) -> Any:
    """``obj`` as results.json stores it (JSON types; non-finite floats as None)."""
    return json.loads(json.dumps(finite_json(obj)))


def _same(stored: Any, current: Any, defaults: dict[str, Any]) -> bool:
    """Whether a stored settings dict equals the current one, keys it lacks taking their
    defaults."""
    return isinstance(stored, dict) and {**_plain(defaults), **stored} == _plain(current)


def _nan(metrics: Any) -> dict[str, float]:
    return {k: (math.nan if v is None else v) for k, v in (metrics or {}).items()}


def _result(record: dict[str, Any]) -> RunResult:
    d = {k: record[k] for k in _FIELDS if k in record}
    for split in ("train", "dev", "test"):
        d[split] = _nan(d.get(split))
    d["gap"] = math.nan if d.get("gap") is None else d["gap"]
    return RunResult(**d)


class Reuse:
    """The runs of earlier results folders that a comparison of ``task`` with ``config`` may
    reuse; call it with a job (:data:`~maskwise.experiments.protocol.Lookup`).

    Args:
        task: the task of the new comparison.
        config: its training settings.
        dirs: results folders (each with a ``results.json``).

    Raises:
        ValueError: a folder without results, or of another task.
    """

    def __init__(self, task: Task, config: TrainConfig, dirs: Sequence[str | Path]) -> None:
        self.task, self.config = task, config
        self.sources: dict[tuple[Any, ...], tuple[RunResult, str]] = {}
        self.used: dict[int, str] = {}  # id(job) -> the folder its run came from
        data = _plain(task.describe())
        for d in dirs:
            path = Path(d) / "results.json"
            if not path.is_file():
                raise ValueError(f"--reuse {d}: no results.json there.")
            result = json.loads(path.read_text())
            if result.get("task") != task.name:
                raise ValueError(f"--reuse {d}: runs of {result.get('task')!r}, not {task.name!r}.")
            s = result.get("settings", {})
            if s.get("data") != data or not _same(
                s.get("train"), dataclasses.asdict(config), dataclasses.asdict(TrainConfig())
            ):
                continue  # other data or training settings: nothing here is the same run
            for rec in result.get("runs", []):
                variant = self._variant(rec)
                if variant is None or not self._same_controller(variant, s):
                    continue
                key = self._key(variant, int(rec["seed"]))
                self.sources.setdefault(key, (_result(rec), str(d)))

    @staticmethod
    def _variant(rec: dict[str, Any]) -> Variant | None:
        kind = str(rec.get("kind", rec.get("variant")))
        arm = str(rec.get("arm", kind))
        name = arm.split(" ", 1)[1] if kind == "dynamic" and " " in arm else None
        try:
            return Variant(kind, float(rec["rate"]), rec.get("weight_decay"), name)
        except (ValueError, KeyError, TypeError):
            return None  # a named controller this code no longer has

    def _same_controller(self, variant: Variant, settings: dict[str, Any]) -> bool:
        if variant.kind != "dynamic":
            return True
        current = dataclasses.asdict(variant.controller_config(self.task))
        stored = (
            settings.get("controller")
            if variant.controller is None
            else settings.get("named_controllers", {}).get(variant.arm)
        )
        return _same(stored, current, dataclasses.asdict(ControllerConfig()))

    @staticmethod
    def _key(variant: Variant, seed: int) -> tuple[Any, ...]:
        return (variant.kind, variant.rate, variant.weight_decay, variant.controller, seed)

    def __call__(self, job: Job) -> RunResult | None:
        hit = self.sources.get(self._key(job.variant, job.seed))
        if hit is None:
            return None
        self.used[id(job)] = hit[1]
        return hit[0]

    def source(self, job: Job) -> str | None:
        """The folder the run of ``job`` was reused from (None: trained here)."""
        return self.used.get(id(job))
