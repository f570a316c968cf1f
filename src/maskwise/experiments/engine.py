"""One small training engine shared by every experiment task.

A :class:`Task` says how to build its model, its masker, its batches, one training step and an
evaluation; the engine does the rest the same way for every task:

* seeded runs (model init, batch order and masks all follow ``seed``);
* AdamW with linear warm-up and cosine decay, gradient clipping at 1.0;
* model selection on dev: the weights of the epoch with the best dev metric are kept, and
  train / dev / test are measured with them (test is never looked at before that);
* the overfitting measure: ``gap = train - test`` of the task's metric, signed so that a positive
  gap means the model does better on data it was trained on (``test - train`` for metrics where
  lower is better, e.g. perplexity);
* the variants: ``none`` (no masker), ``static`` (a fixed rate), ``dynamic`` (the rate from a
  :class:`~maskwise.dynamic.ReliabilityController` fed with every training step's reliability,
  plus :class:`~maskwise.dynamic.DifficultyTracker` sampling weights when the masker takes
  them), ``schedule`` (a linear warm-up of the rate); each masked variant is a
  :class:`~maskwise.nn.DynamicMask`, so the rate and the masked fraction are recorded by a
  :class:`~maskwise.monitor.MaskMonitor` the same way for all;
* wall time per epoch and throughput (the task's items: examples or tokens).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from maskwise.dynamic import DifficultyTracker, ReliabilityController, linear
from maskwise.dynamic import reliability as compute_reliability
from maskwise.monitor import MaskMonitor
from maskwise.nn import DynamicMask, MaskModule, TokenMask

__all__ = [
    "ControllerConfig",
    "RunResult",
    "StepOutput",
    "Task",
    "TokenTask",
    "TrainConfig",
    "Variant",
    "train_run",
]

VARIANTS = ("none", "static", "dynamic", "schedule")


@dataclass(frozen=True)
class Variant:
    """A masking variant: ``kind`` in ``none / static / dynamic / schedule`` and its rate (the
    fixed rate, the controller's initial rate, or the schedule's final rate)."""

    kind: str
    rate: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS} ({self.kind!r} given).")

    @property
    def label(self) -> str:
        return self.kind if self.kind in ("none", "dynamic") else f"{self.kind} {self.rate:g}"


@dataclass
class ControllerConfig:
    """Settings of the dynamic variant's :class:`~maskwise.dynamic.ReliabilityController`.

    The default steers the rate by the accuracy of the training step's own predictions (on
    masked inputs, the logits it already has) in the ``curriculum`` direction: while the model
    predicts its training batches more reliably than ``target``, the rate rises, so the training
    task stays hard and memorising the training set stops paying; when predictions fall below
    the target the rate falls. ``direction="seed"`` is the seed documents' rule (reliable ->
    less masking); ``signal="loss_gap"`` feeds the dev-minus-train loss once per epoch instead.
    """

    signal: str = "accuracy"
    target: float = 0.9
    direction: str = "curriculum"
    initial_rate: float = 0.1
    min_rate: float = 0.0
    max_rate: float = 0.6
    gain: float = 0.05
    momentum: float = 0.9
    max_delta: float = 0.01
    tracker: bool = True
    temperature: float = 1.0

    def build(self) -> ReliabilityController:
        return ReliabilityController(
            self.initial_rate,
            signal=self.signal,
            target=self.target,
            gain=self.gain,
            min_rate=self.min_rate,
            max_rate=self.max_rate,
            direction=self.direction,
            momentum=self.momentum,
            max_delta=self.max_delta,
        )


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    max_steps: int | None = None  # stop early (tests, --fast)
    device: str = "cpu"


@dataclass
class StepOutput:
    """What a task's training step returns: the loss to minimise, and what the controller and
    tracker need (the step's logits and labels, optional per-position keys) plus the number of
    items (examples or tokens) for the throughput."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    items: int
    keys: torch.Tensor | None = None
    key_valid: torch.Tensor | None = None


class Task:
    """Base class of an experiment task. Subclasses set the attributes and implement the methods."""

    name: str = ""
    metric: str = "accuracy"
    higher_is_better: bool = True
    item_name: str = "examples"
    default_rates: tuple[float, ...] = (0.1, 0.2, 0.3)
    controller: ControllerConfig = ControllerConfig()
    train_config: TrainConfig = TrainConfig()

    def describe(self) -> dict[str, Any]:
        """Data set sizes and settings, for the report."""
        return {}

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        raise NotImplementedError

    def num_keys(self) -> int | None:
        """Number of distinct keys for a difficulty tracker (None: the masker takes no weights)."""
        return None

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        raise NotImplementedError

    def train_step(
        self, model: nn.Module, masker: DynamicMask | None, batch: Any, device: torch.device
    ) -> StepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        """Metrics of ``split`` (``train``, ``dev``, ``test``); must contain ``self.metric`` and
        ``loss``."""
        raise NotImplementedError

    def final_metrics(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        """Metrics measured once on the selected model (default: :meth:`evaluate`); tasks with an
        expensive metric (decoding + BLEU) compute it here only."""
        return self.evaluate(model, split, device)


class TokenTask(Task):
    """A task over token ids whose first five ids are special (padding, unknown, two markers,
    ``[MASK]`` = 4): inputs are masked by :class:`~maskwise.nn.TokenMask` (special ids never
    masked) and the difficulty tracker keys are the ``vocab`` token ids."""

    vocab: int
    mask_id: int = 4
    num_specials: int = 5

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        return TokenMask(
            rate, mask_id=self.mask_id, special_ids=range(self.num_specials), seed=seed
        )

    def num_keys(self) -> int:
        return self.vocab


@dataclass
class RunResult:
    task: str
    variant: str
    rate: float
    seed: int
    train: dict[str, float]
    dev: dict[str, float]
    test: dict[str, float]
    gap: float
    best_epoch: int
    epochs: int
    steps: int
    epoch_time_s: float
    items_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    monitor: MaskMonitor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("monitor")
        return d


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def gap_of(task: Task, train: dict[str, float], test: dict[str, float]) -> float:
    d = train[task.metric] - test[task.metric]
    return d if task.higher_is_better else -d


def _better(task: Task, a: float, b: float) -> bool:
    return a > b if task.higher_is_better else a < b


def build_masker(
    task: Task, variant: Variant, seed: int, total_steps: int, monitor: MaskMonitor | None
) -> DynamicMask | None:
    """The variant's masker, always a :class:`DynamicMask` (None for ``none``)."""
    if variant.kind == "none":
        return None
    if variant.kind == "static":
        return DynamicMask(task.make_masker(variant.rate, seed), variant.rate, monitor=monitor)
    if variant.kind == "schedule":
        sched = linear(0.0, variant.rate, max(1, total_steps // 2))
        return DynamicMask(task.make_masker(0.0, seed), sched, monitor=monitor)
    cfg = task.controller
    tracker = None
    n = task.num_keys()
    if cfg.tracker and n is not None:
        tracker = DifficultyTracker(n)
    return DynamicMask(
        task.make_masker(cfg.initial_rate, seed),
        cfg.build(),
        tracker=tracker,
        temperature=cfg.temperature,
        monitor=monitor,
    )


def _count(batches: Iterable[Any]) -> int:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return sum(1 for _ in batches)


def train_run(
    task: Task,
    variant: Variant,
    seed: int,
    *,
    config: TrainConfig | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> RunResult:
    """Train ``task``'s model once with ``variant`` and ``seed``; return the measured result.

    ``progress(step, total_steps, message)`` is called after every step (for progress bars).
    """
    cfg = config or task.train_config
    device = torch.device(cfg.device)
    torch.manual_seed(seed)
    model = task.build_model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order = torch.Generator().manual_seed(seed)
    steps_per_epoch = _count(task.train_batches(0, torch.Generator().manual_seed(seed)))
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, max(1, int(cfg.warmup_fraction * total)))
    )
    monitor = MaskMonitor() if variant.kind != "none" else None
    masker = build_masker(task, variant, seed, total, monitor)
    if masker is not None:
        masker.to(device)
        if masker.tracker is not None:
            masker.tracker.to(device)
    gap_signal = (
        masker is not None
        and masker.controller is not None
        and masker.controller.signal.endswith("_gap")
    )

    best_value, best_state, best_epoch = None, None, 0
    history: list[dict[str, float]] = []
    step, epoch_times, items = 0, [], 0
    train_time = 0.0
    for epoch in range(cfg.epochs):
        model.train()
        if masker is not None:
            masker.train()
        t0 = time.perf_counter()
        losses = []
        for batch in task.train_batches(epoch, order):
            out = task.train_step(model, masker, batch, device)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if masker is not None and (masker.controller is not None or masker.tracker is not None):
                # The controller and the monitor (observe() leaves gap signals to the epoch end).
                rel = compute_reliability(out.logits, out.labels)
                masker.observe(reliability=rel)
                if masker.tracker is not None and out.keys is not None:
                    # Per-example losses (classification) are shared by the example's keys.
                    per_key = (
                        rel.loss
                        if rel.loss.shape == out.keys.shape
                        else rel.loss.unsqueeze(-1).expand_as(out.keys)
                    )
                    masker.tracker.update(out.keys, per_key, valid=out.key_valid)
            losses.append(float(out.loss.detach()))
            items += out.items
            step += 1
            if progress is not None:
                progress(step, total, f"epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.3f}")
            if step >= total:
                break
        elapsed = time.perf_counter() - t0
        train_time += elapsed
        epoch_times.append(elapsed)
        model.eval()
        if masker is not None:
            masker.eval()
        dev = task.evaluate(model, "dev", device)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": sum(losses) / max(1, len(losses)),
            **{f"dev_{k}": v for k, v in dev.items()},
        }
        if masker is not None:
            row["rate"] = masker.current_rate()
        if gap_signal:
            tr = task.evaluate(model, "train", device)
            masker.controller.update(tr["loss"], dev["loss"])
            row["rate_next"] = masker.current_rate()
        history.append(row)
        if best_value is None or _better(task, dev[task.metric], best_value):
            best_value, best_epoch = dev[task.metric], epoch + 1
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if step >= total:
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    train = task.final_metrics(model, "train", device)
    dev = task.final_metrics(model, "dev", device)
    test = task.final_metrics(model, "test", device)
    return RunResult(
        task=task.name,
        variant=variant.kind,
        rate=variant.rate if variant.kind != "dynamic" else task.controller.initial_rate,
        seed=seed,
        train=train,
        dev=dev,
        test=test,
        gap=gap_of(task, train, test),
        best_epoch=best_epoch,
        epochs=len(history),
        steps=step,
        epoch_time_s=sum(epoch_times) / len(epoch_times),
        items_per_s=items / train_time if train_time > 0 else float("nan"),
        history=history,
        monitor=monitor,
    )


def batched(
    n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: shuffled with ``generator``, in order without."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i : i + batch_size]


class Batches:
    """A re-iterable, sized view of :func:`batched` (so the engine can count steps per epoch)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator | None,
        fetch: Callable[[torch.Tensor], Any],
        drop_last: bool = False,
    ) -> None:
        self.n, self.batch_size, self.generator, self.fetch, self.drop_last = (
            n,
            batch_size,
            generator,
            fetch,
            drop_last,
        )

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        for idx in batched(self.n, self.batch_size, self.generator, self.drop_last):
            yield self.fetch(idx)
