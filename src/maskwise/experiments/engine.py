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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from maskwise.dynamic import DifficultyTracker, linear
from maskwise.experiments.controllers import CONTROLLERS, DEFAULT_CONTROLLER, ControllerConfig
from maskwise.functional.consistency import consistency_loss
from maskwise.monitor import MaskMonitor
from maskwise.nn import DynamicMask, MaskModule

__all__ = [
    "CONTROLLERS",
    "DEFAULT_CONTROLLER",
    "ControllerConfig",
    "RunResult",
    "StepOutput",
    "Task",
    "TrainConfig",
    "Variant",
    "train_run",
]

VARIANTS = ("none", "static", "dynamic", "schedule", "consistency")


@dataclass(frozen=True)
class Variant:
    """A masking variant: ``kind`` in ``none / static / dynamic / schedule / consistency`` and
    its rate (the fixed rate, the controller's initial rate, the schedule's final rate, or the
    masked view's rate), with an optional ``weight_decay`` replacing the training config's (the
    unmasked arm's own regularisation, tuned on dev like the masking rates) and, for
    ``dynamic``, an optional named ``controller`` of :data:`CONTROLLERS` instead of the
    default (:data:`DEFAULT_CONTROLLER`)."""

    kind: str
    rate: float = 0.0
    weight_decay: float | None = None
    controller: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS} ({self.kind!r} given).")
        if self.controller is not None and (
            self.kind != "dynamic" or self.controller not in CONTROLLERS
        ):
            raise ValueError(
                f"a named controller is for the dynamic variant, one of {sorted(CONTROLLERS)} "
                f"({self.kind} {self.controller!r} given)."
            )
        if self.weight_decay is not None and not 0.0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be finite and >= 0 ({self.weight_decay} given).")

    @property
    def arm(self) -> str:
        """The arm this variant is a candidate of: its kind, and a named controller's name
        (``dynamic seed``)."""
        return self.kind if self.controller is None else f"{self.kind} {self.controller}"

    @property
    def label(self) -> str:
        """The arm's name in reports: ``none``, ``dynamic``, ``dynamic seed``, ``static 0.25``,
        and for a weight-decay override ``none wd 0.1``."""
        base = self.arm if self.kind in ("none", "dynamic") else f"{self.kind} {self.rate:g}"
        return base if self.weight_decay is None else f"{base} wd {self.weight_decay:g}"

    def controller_config(self, task: Task) -> ControllerConfig:
        """The dynamic variant's controller settings: the task's, changed by the named controller
        (:data:`DEFAULT_CONTROLLER` when none is named)."""
        named = replace(task.controller, **CONTROLLERS[self.controller or DEFAULT_CONTROLLER])
        # Settings the user gave for every dynamic arm (`maskwise run --target ...`) win.
        return replace(named, **getattr(task, "controller_overrides", {}))


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    max_steps: int | None = None  # stop early (tests, --fast)
    eval_limit: int | None = None  # score at most this many items per split (--fast)
    patience: int | None = None  # stop after this many epochs without a better dev metric
    consistency_weight: float = 1.0  # the consistency variant: loss = clean + weight * term
    consistency_kind: str = "kl"  # "kl" (clean view teaches the masked one), "sym_kl", "js"
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
    prediction: torch.Tensor | None = None  # the logits with their graph (consistency variant)


@runtime_checkable
class Task(Protocol):
    """What the engine needs from an experiment task.

    A task is any object with these attributes and methods (tasks hold their configs per
    instance; they share code by holding small parts, e.g.
    :class:`~maskwise.experiments.tasks.parts.Classifier`, not by inheriting from each other).

    Attributes:
        name: the task's name (``maskwise run NAME``).
        metric: the metric of model selection and of the report (a key of :meth:`evaluate`).
        higher_is_better: whether a larger ``metric`` is better (False for perplexity).
        item_name: what the throughput counts (``"examples"``, ``"tokens"``...).
        default_rates: the static rates swept when none are given.
        controller: the dynamic variant's controller settings.
        train_config: the training settings.
    """

    name: str
    metric: str
    higher_is_better: bool
    item_name: str
    default_rates: tuple[float, ...]
    controller: ControllerConfig
    train_config: TrainConfig

    def describe(self) -> dict[str, Any]:
        """Data set sizes and settings, for the report."""
        ...

    def build_model(self) -> nn.Module:
        """A freshly initialised model (the engine seeds torch before calling it)."""
        ...

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        """The input masker at ``rate``, seeded with ``seed``."""
        ...

    def num_keys(self) -> int | None:
        """Number of distinct keys for a difficulty tracker (None: the masker takes no weights)."""
        ...

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterable[Any]:
        """The training batches of ``epoch`` in the order drawn with ``generator`` (sized, or
        re-iterable so the engine can count them)."""
        ...

    def train_step(
        self, model: nn.Module, masker: DynamicMask | None, batch: Any, device: torch.device
    ) -> StepOutput:
        """Mask the batch (when ``masker`` is given), run the model, return the loss and what the
        controller and tracker need."""
        ...

    def evaluate(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        """Metrics of ``split`` (``train``, ``dev``, ``test``) after an epoch; must contain
        ``self.metric`` and ``loss``. ``limit``: score at most the first ``limit`` items."""
        ...

    def final_metrics(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        """Metrics measured once on the selected model (tasks with an expensive metric, e.g.
        decoding + BLEU, compute it fully here only; others return :meth:`evaluate`)."""
        ...


def task_for_seed(task: Task, seed: int) -> Task:
    """The task a run with ``seed`` trains: ``task.for_seed(seed)`` when the task defines it
    (data whose split depends on the seed, e.g. a held-out speaker per seed: every arm run with
    the same seed then sees the same split), else ``task`` itself."""
    for_seed = getattr(task, "for_seed", None)
    return task if for_seed is None else for_seed(seed)


def item_scores_of(
    task: Task, model: nn.Module, device: torch.device, limit: int | None = None
) -> dict[str, Any] | None:
    """``task.item_scores(model, "test", device, limit)`` when the task defines it: the
    selected model's statistics on every test item (:mod:`maskwise.experiments.items`), for
    item-level tests between arms; else None."""
    item_scores = getattr(task, "item_scores", None)
    return None if item_scores is None else dict(item_scores(model, "test", device, limit))


def samples_of(task: Task, model: nn.Module, device: torch.device) -> list[dict[str, str]]:
    """``task.samples(model, device)`` when the task defines it: a few outputs of the selected
    model on fixed test items (``{"input", "reference", "output"}``: generated text, so a reader
    sees the quality behind the metric), else ``[]``."""
    samples = getattr(task, "samples", None)
    return [] if samples is None else list(samples(model, device))


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
    seconds: float = 0.0  # wall time of the whole run: training, dev scoring, final scoring
    cpu_seconds: float = 0.0  # CPU time of the run's process (the compute; with one thread,
    # independent of what else shares the machine)
    weight_decay: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    samples: list[dict[str, str]] = field(default_factory=list)  # outputs on fixed test items
    test_items: dict[str, Any] | None = None  # per-item test statistics (experiments.items)
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


def consistency_step(
    task: Task,
    model: nn.Module,
    masker: DynamicMask | None,
    batch: Any,
    device: torch.device,
    cfg: TrainConfig,
) -> StepOutput:
    """The ``consistency`` variant's step: the task's loss on the clean batch plus
    ``cfg.consistency_weight`` times :func:`~maskwise.functional.consistency_loss` between the
    masked view's predictions and the clean ones (``cfg.consistency_kind``; the default ``"kl"``
    distils the detached clean prediction into the masked view, so a mask that deletes the
    label's evidence is taught the clean prediction, not the label). Two forward passes per
    step. Positions without a target (``labels == -100``) do not count."""
    clean = task.train_step(model, None, batch, device)
    masked = task.train_step(model, masker, batch, device)
    if clean.prediction is None or masked.prediction is None:
        raise TypeError(f"{task.name}: its train_step gives no prediction for consistency.")
    valid = clean.labels != -100 if clean.labels.dim() == clean.prediction.dim() - 1 else None
    term = consistency_loss(
        masked.prediction, clean.prediction, kind=cfg.consistency_kind, valid=valid
    )
    return replace(masked, loss=clean.loss + cfg.consistency_weight * term)


def build_masker(
    task: Task, variant: Variant, seed: int, total_steps: int, monitor: MaskMonitor | None
) -> DynamicMask | None:
    """The variant's masker, always a :class:`DynamicMask` (None for ``none``)."""
    if variant.kind == "none":
        return None
    if variant.kind in ("static", "consistency"):
        return DynamicMask(task.make_masker(variant.rate, seed), variant.rate, monitor=monitor)
    if variant.kind == "schedule":
        sched = linear(0.0, variant.rate, max(1, total_steps // 2))
        return DynamicMask(task.make_masker(0.0, seed), sched, monitor=monitor)
    cfg = variant.controller_config(task)
    tracker = None
    n = task.num_keys()
    if cfg.per_example:
        num_examples = getattr(task, "num_examples", None)
        if num_examples is None:
            raise ValueError(f"{task.name}: per-example masking needs a task with example keys.")
        tracker = DifficultyTracker(int(num_examples()))
    elif cfg.tracker and n is not None:
        tracker = DifficultyTracker(n)
    return DynamicMask(
        task.make_masker(cfg.initial_rate, seed),
        cfg.build(),
        tracker=tracker,
        temperature=cfg.temperature,
        monitor=monitor,
        per_sample=cfg.per_example,
    )


def key_weight_spread(tracker: DifficultyTracker, temperature: float) -> float:
    """How unequal a tracker's per-key sampling weights are: the largest weight over the mean
    weight of the keys seen so far (1: every key masked alike; NaN before any key is seen)."""
    seen = torch.nonzero(tracker.count > 0).flatten()
    if seen.numel() == 0:
        return math.nan
    w = tracker.weights(seen, temperature=temperature)
    return float(w.max() / w.mean())


def heldout_loss(task: Task, model: nn.Module, device: torch.device, limit: int) -> float:
    """The model's mean loss on the first ``limit`` dev items, in eval mode (the reference of a
    ``heldout_gap`` controller): ``task.loss_of`` when the task has a loss-only evaluation
    (sequence tasks, whose ``evaluate`` decodes), else ``task.evaluate``'s loss."""
    model.eval()
    loss_of = getattr(task, "loss_of", None)
    if loss_of is not None:
        return float(loss_of(model, "dev", device, limit))
    return float(task.evaluate(model, "dev", device, limit=limit)["loss"])


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
    started, cpu_started = time.perf_counter(), time.process_time()
    task = task_for_seed(task, seed)
    cfg = config or task.train_config
    if variant.weight_decay is not None:
        cfg = replace(cfg, weight_decay=variant.weight_decay)
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
    controller = masker.controller if masker is not None else None
    signal = getattr(controller, "signal", None)
    gap_signal = signal in ("loss_gap", "accuracy_gap")  # fed once per epoch, below
    every = variant.controller_config(task).reference_every if signal == "heldout_gap" else None

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
            if variant.kind == "consistency":
                out = consistency_step(task, model, masker, batch, device, cfg)
            else:
                out = task.train_step(model, masker, batch, device)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if masker is not None and (masker.controller is not None or masker.tracker is not None):
                # The controller, the tracker and the monitor, from the step's own outputs (gap
                # signals are left to the epoch end); per-example losses are shared by the
                # example's keys.
                masker.observe(
                    out.logits,
                    out.labels,
                    loss=out.loss.detach(),
                    keys=out.keys,
                    key_valid=out.key_valid,
                )
            if every is not None and controller is not None and (step + 1) % every == 0:
                size = variant.controller_config(task).reference_size
                controller.set_reference(heldout_loss(task, model, device, size))
                model.train()
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
        if progress is not None:
            progress(step, total, f"epoch {epoch + 1}/{cfg.epochs}: scoring dev")
        dev = task.evaluate(model, "dev", device, limit=cfg.eval_limit)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": sum(losses) / max(1, len(losses)),
            **{f"dev_{k}": v for k, v in dev.items()},
        }
        if masker is not None:
            row["rate"] = masker.current_rate()
        if controller is not None:
            row["signal"] = controller.smoothed
        if masker is not None and masker.tracker is not None:
            row["key_weight_spread"] = key_weight_spread(masker.tracker, masker.temperature)
        if gap_signal and controller is not None:
            tr = task.evaluate(model, "train", device, limit=cfg.eval_limit)
            controller.update(tr["loss"], dev["loss"])
            row["rate_next"] = controller.rate
        if signal == "heldout_gap" and every is None and controller is not None:
            controller.set_reference(dev["loss"])  # the dev loss just measured: no extra pass
        if signal == "heldout_gap" and controller is not None:
            row["set_point"] = controller.set_point
            row["reference"] = controller.reference
        history.append(row)
        if best_value is None or _better(task, dev[task.metric], best_value):
            best_value, best_epoch = dev[task.metric], epoch + 1
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if step >= total:
            break
        if cfg.patience is not None and epoch + 1 - best_epoch >= cfg.patience:
            break  # early stopping on dev: the weights of the best epoch are restored below
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    final = {}
    for split in ("train", "dev", "test"):
        if progress is not None:
            progress(step, total, f"best epoch {best_epoch}: scoring {split}")
        final[split] = task.final_metrics(model, split, device, limit=cfg.eval_limit)
    train, dev, test = final["train"], final["dev"], final["test"]
    samples = samples_of(task, model, device)
    test_items = item_scores_of(task, model, device, cfg.eval_limit)
    return RunResult(
        task=task.name,
        variant=variant.kind,
        rate=variant.rate
        if variant.kind != "dynamic"
        else variant.controller_config(task).initial_rate,
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
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        weight_decay=variant.weight_decay,
        history=history,
        samples=samples,
        test_items=test_items,
        monitor=monitor,
    )
