"""maskwise.experiments.engine: seeded runs, dev model selection, the gap's
sign, what each variant does to the rate, step accounting; on a tiny task whose dev metric,
predictions and final metrics the test scripts."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskwise.dynamic import ReliabilityController
from maskwise.experiments.batching import Batches
from maskwise.experiments.engine import (
    ControllerConfig,
    RunResult,
    StepOutput,
    Task,
    TrainConfig,
    Variant,
    train_run,
)
from maskwise.nn import DynamicMask, MaskModule, TokenMask

V, L, MASK = 40, 12, 1  # vocabulary, tokens per example, the mask id (never in the data)
TIMING = ("epoch_time_s", "items_per_s", "seconds", "cpu_seconds")


class Bag(nn.Module):
    """Mean of token embeddings -> 2 logits: no dropout, so a run depends only on its seed."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(V, 2, mode="mean")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


class ScriptedTask:
    """32 examples of 12 token ids, 4 batches of 8 per epoch.

    ``dev_script``: the dev metric ``evaluate`` reports at each epoch (the weights at that moment
    are kept in ``epoch_weights``); ``final``: the metric ``final_metrics`` reports per split
    (the weights then are ``final_weights``); ``shown``: the logits the training step reports
    to the controller, ``"model"`` or always ``"right"`` / ``"wrong"``.
    """

    name = "scripted"
    item_name = "examples"
    default_rates = (0.1, 0.2, 0.3)

    def __init__(
        self,
        *,
        dev_script: list[float] | None = None,
        final: dict[str, float] | None = None,
        metric: str = "accuracy",
        higher_is_better: bool = True,
        shown: str = "model",
        controller: ControllerConfig | None = None,
        dev_loss_offset: float = 0.0,
    ) -> None:
        self.metric, self.higher_is_better = metric, higher_is_better
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(2, V, (32, L), generator=g)  # (N, L), never MASK
        self.labels = self.ids[:, 0] % 2
        self.dev_script, self.final, self.shown = dev_script, final, shown
        self.dev_loss_offset = dev_loss_offset
        self.controller = controller or ControllerConfig()
        self.train_config = TrainConfig()
        self.epoch_weights: list[torch.Tensor] = []
        self.final_weights: torch.Tensor | None = None
        self.fed: list[torch.Tensor] = []  # the (masked) ids of every training step
        self.evaluated: list[str] = []

    def describe(self) -> dict[str, Any]:
        return {}

    def build_model(self) -> nn.Module:
        return Bag()

    def make_masker(self, rate: float, seed: int) -> MaskModule:
        return TokenMask(rate, mask_id=MASK, seed=seed)

    def num_keys(self) -> None:
        return None

    def train_batches(self, epoch: int, generator: torch.Generator) -> Batches:
        return Batches(len(self.ids), 8, generator, lambda i: (self.ids[i], self.labels[i]))

    def train_step(
        self, model: nn.Module, masker: DynamicMask | None, batch: Any, device: torch.device
    ) -> StepOutput:
        x, y = batch
        if masker is not None:
            x = masker(x)[0]
        self.fed.append(x.clone())
        logits = model(x)
        shown = logits.detach()
        if self.shown != "model":
            shown = 10.0 * F.one_hot(y if self.shown == "right" else 1 - y, 2).float()
        return StepOutput(F.cross_entropy(logits, y), shown, y, items=len(y))

    def _measure(self, model: nn.Module) -> dict[str, float]:
        logits = model(self.ids)
        loss = float(F.cross_entropy(logits, self.labels))
        return {
            "accuracy": float((logits.argmax(-1) == self.labels).float().mean()),
            "loss": loss,
            "perplexity": math.exp(loss),
        }

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        self.evaluated.append(split)
        m = self._measure(model)
        if split == "dev":
            m["loss"] += self.dev_loss_offset
            self.epoch_weights.append(model.emb.weight.detach().clone())
            if self.dev_script is not None:
                m[self.metric] = self.dev_script[len(self.epoch_weights) - 1]
        return m

    @torch.no_grad()
    def final_metrics(
        self, model: nn.Module, split: str, device: torch.device, limit: int | None = None
    ) -> dict[str, float]:
        self.final_weights = model.emb.weight.detach().clone()
        m = self._measure(model)
        if self.final is not None:
            m[self.metric] = self.final[split]
        return m


def test_a_task_is_anything_with_the_protocol() -> None:
    assert isinstance(ScriptedTask(), Task)  # no base class: the attributes and methods


def _untimed(r: RunResult) -> dict[str, Any]:
    from maskwise.experiments.summary import finite_json

    d = finite_json(r.to_dict())  # NaN (a controller not yet started) as in results.json
    for k in TIMING:
        d.pop(k)
    return d


CFG = TrainConfig(epochs=3, lr=0.05)


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [Variant("none"), Variant("static", 0.3), Variant("dynamic"), Variant("schedule", 0.4)],
    ids=lambda v: v.label,
)
def test_same_seed_same_run_other_seed_other_run(variant: Variant) -> None:
    a_task, b_task, c_task = ScriptedTask(), ScriptedTask(), ScriptedTask()
    a = train_run(a_task, variant, 0, config=CFG)
    b = train_run(b_task, variant, 0, config=CFG)
    c = train_run(c_task, variant, 1, config=CFG)
    assert _untimed(a) == _untimed(b)
    assert all(torch.equal(x, y) for x, y in zip(a_task.fed, b_task.fed, strict=True))
    assert torch.equal(a_task.final_weights, b_task.final_weights)
    # another seed: another init, batch order (and masks): other losses
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]
    assert not torch.equal(a_task.fed[0], c_task.fed[0])
    assert (a.seed, c.seed) == (0, 1)


def test_same_seed_same_run_on_a_real_task() -> None:
    from maskwise.experiments.tasks.image import ImageClassification

    task = ImageClassification("digits", train_size=64)
    cfg = TrainConfig(epochs=1, max_steps=3)
    a = train_run(task, Variant("dynamic"), 5, config=cfg)
    b = train_run(task, Variant("dynamic"), 5, config=cfg)
    c = train_run(task, Variant("dynamic"), 6, config=cfg)
    assert _untimed(a) == _untimed(b)
    assert a.history[0]["train_loss"] != c.history[0]["train_loss"]


# ----------------------------------------------------------------------------------------------
# Model selection and the gap
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "higher_is_better", "best"),
    [
        ([0.5, 0.8, 0.7], True, 2),
        ([0.9, 0.2, 0.3], True, 1),
        ([0.1, 0.2, 0.3], True, 3),
        ([3.0, 2.0, 1.0, 4.0], False, 3),
        ([1.0, 2.0, 3.0, 4.0], False, 1),
    ],
)
def test_model_selection_keeps_the_best_dev_epoch(
    script: list[float], higher_is_better: bool, best: int
) -> None:
    metric = "accuracy" if higher_is_better else "perplexity"
    task = ScriptedTask(dev_script=script, metric=metric, higher_is_better=higher_is_better)
    r = train_run(task, Variant("none"), 0, config=TrainConfig(epochs=len(script), lr=0.05))
    assert r.best_epoch == best
    assert [h[f"dev_{metric}"] for h in r.history] == script
    assert len(task.epoch_weights) == len(script)
    # the weights measured at the end are those of the chosen epoch, and the epochs differ
    assert torch.equal(task.final_weights, task.epoch_weights[best - 1])
    others = [w for i, w in enumerate(task.epoch_weights) if i != best - 1]
    assert all(not torch.equal(task.final_weights, w) for w in others)
    assert task.evaluated == ["dev"] * len(script)  # test is never looked at while training


@pytest.mark.parametrize(
    ("metric", "higher_is_better", "final", "gap"),
    [
        ("accuracy", True, {"train": 0.9, "dev": 0.8, "test": 0.6}, 0.3),
        ("accuracy", True, {"train": 0.5, "dev": 0.8, "test": 0.7}, -0.2),
        ("perplexity", False, {"train": 5.0, "dev": 9.0, "test": 20.0}, 15.0),
    ],
)
def test_gap_is_positive_when_better_on_train(
    metric: str, higher_is_better: bool, final: dict[str, float], gap: float
) -> None:
    task = ScriptedTask(
        metric=metric,
        higher_is_better=higher_is_better,
        final=final,
        dev_script=[1.0, 1.0] if metric == "perplexity" else None,
    )
    r = train_run(task, Variant("none"), 0, config=TrainConfig(epochs=2))
    assert r.gap == pytest.approx(gap)
    assert (r.train[metric], r.dev[metric], r.test[metric]) == (
        final["train"],
        final["dev"],
        final["test"],
    )


# ----------------------------------------------------------------------------------------------
# Steps, epochs, progress
# ----------------------------------------------------------------------------------------------


def test_max_steps_and_progress() -> None:
    calls: list[tuple[int, int, str]] = []
    r = train_run(
        ScriptedTask(),
        Variant("none"),
        0,
        config=TrainConfig(epochs=3, max_steps=6),
        progress=lambda step, total, msg: calls.append((step, total, msg)),
    )
    assert (r.steps, r.epochs) == (6, 2)  # 4 steps per epoch
    assert [h["step"] for h in r.history] == [4, 6]
    assert [h["epoch"] for h in r.history] == [1, 2]
    training = [(s, t) for s, t, m in calls if "loss" in m]
    assert training == [(s, 6) for s in range(1, 7)]
    scoring = [(s, m) for s, _, m in calls if "scoring" in m]  # evaluation shows progress too
    assert scoring == [
        (4, "epoch 1/3: scoring dev"),
        (6, "epoch 2/3: scoring dev"),
        (6, f"best epoch {r.best_epoch}: scoring train"),
        (6, f"best epoch {r.best_epoch}: scoring dev"),
        (6, f"best epoch {r.best_epoch}: scoring test"),
    ]
    full = train_run(ScriptedTask(), Variant("none"), 0, config=TrainConfig(epochs=3))
    assert (full.steps, full.epochs) == (12, 3)
    assert full.items_per_s > 0 and full.epoch_time_s > 0


def test_train_loss_is_the_epoch_mean() -> None:
    r = train_run(ScriptedTask(), Variant("none"), 0, config=TrainConfig(epochs=1, lr=0.0))
    # lr 0: the model never changes, so the mean of the 4 equal batches' losses is the loss over
    # all 32 training examples, which final_metrics measures
    assert r.history[0]["train_loss"] == pytest.approx(r.train["loss"], rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------


def test_none_has_no_masker() -> None:
    task = ScriptedTask()
    r = train_run(task, Variant("none"), 0, config=CFG)
    assert r.monitor is None
    assert all("rate" not in h for h in r.history)
    assert all(not (x == MASK).any() for x in task.fed)
    assert (r.variant, r.rate) == ("none", 0.0)


def test_static_masks_at_its_rate() -> None:
    task = ScriptedTask()
    r = train_run(task, Variant("static", 0.3), 0, config=CFG)
    assert r.monitor is not None
    forwards = [row for row in r.monitor.rows if "masked_fraction" in row]
    assert len(forwards) == 12  # one per training step
    assert all(row["rate"] == pytest.approx(0.3) for row in forwards)
    assert [h["rate"] for h in r.history] == pytest.approx([0.3] * 3)
    fed = torch.stack(task.fed)  # (steps, B, L)
    assert abs(float((fed == MASK).float().mean()) - 0.3) < 0.06  # 1,152 tokens, sd ~0.014
    assert statistics.fmean(row["masked_fraction"] for row in forwards) == pytest.approx(
        0.3, abs=0.06
    )
    assert (r.variant, r.rate) == ("static", 0.3)


@pytest.mark.parametrize(
    ("shown", "direction", "sign"),
    [
        ("right", "curriculum", +1),
        ("wrong", "curriculum", -1),
        ("right", "seed", -1),
        ("wrong", "seed", +1),
    ],
)
def test_dynamic_controller_moves_the_rate(shown: str, direction: str, sign: int) -> None:
    # accuracy 1 (right) or 0 (wrong) against target 0.9: each step moves the rate by max_delta
    ctrl = ControllerConfig(
        initial_rate=0.3,
        target=0.9,
        direction=direction,
        gain=0.5,
        momentum=0.0,
        max_delta=0.01,
        max_rate=0.6,
        tracker=False,
    )
    task = ScriptedTask(shown=shown, controller=ctrl)
    r = train_run(task, Variant("dynamic", controller="accuracy"), 0, config=CFG)
    assert [h["rate"] for h in r.history] == pytest.approx(
        [0.3 + sign * 0.04 * e for e in (1, 2, 3)]
    )
    forward_rates = [row["rate"] for row in r.monitor.rows if "masked_fraction" in row]
    assert forward_rates == pytest.approx([0.3 + sign * 0.01 * s for s in range(12)])
    assert r.rate == 0.3  # the dynamic row reports the controller's initial rate
    fed = torch.stack(task.fed[-4:])
    assert float((fed == MASK).float().mean()) == pytest.approx(0.3 + sign * 0.1, abs=0.08)


def test_dynamic_gap_signal_updates_once_per_epoch() -> None:
    ctrl = ControllerConfig(
        signal="loss_gap",
        target=0.0,
        initial_rate=0.2,
        gain=1.0,
        momentum=0.0,
        max_delta=0.05,
        tracker=False,
    )
    task = ScriptedTask(controller=ctrl, dev_loss_offset=1.0)  # dev loss = train loss + 1
    r = train_run(task, Variant("dynamic", controller="accuracy"), 0, config=CFG)
    assert task.evaluated == ["dev", "train"] * 3
    assert [h["rate"] for h in r.history] == pytest.approx([0.2, 0.25, 0.3])
    assert [h["rate_next"] for h in r.history] == pytest.approx([0.25, 0.3, 0.35])


def _heldout(**kwargs: Any) -> ControllerConfig:
    return ControllerConfig(
        signal="heldout_gap",
        target=0.0,
        initial_rate=0.0,
        min_rate=0.0,
        gain=10.0,
        momentum=0.0,
        max_delta=0.05,
        tracker=False,
        **kwargs,
    )


@pytest.mark.parametrize(("offset", "rises"), [(1.0, True), (-0.3, False)])
def test_heldout_gap_follows_the_step_loss_against_the_epochs_dev_loss(
    offset: float, rises: bool
) -> None:
    # dev loss = the model's loss + offset: +1 looks like memorising (the rate rises by
    # max_delta per step once there is a reference), -0.3 like still fitting (rate 0 throughout)
    task = ScriptedTask(controller=_heldout(), dev_loss_offset=offset)
    r = train_run(task, Variant("dynamic", controller="accuracy"), 0, config=CFG)
    assert task.evaluated == ["dev"] * 3  # no extra pass: the epoch's dev loss is the reference
    expected = [0.0, 0.2, 0.4] if rises else [0.0, 0.0, 0.0]
    assert [h["rate"] for h in r.history] == pytest.approx(expected)
    # The reference of each row is the dev loss measured at that epoch's end.
    assert [h["reference"] for h in r.history] == pytest.approx([h["dev_loss"] for h in r.history])
    forward_rates = [row["rate"] for row in r.monitor.rows if "masked_fraction" in row]
    assert forward_rates[:5] == [0.0] * 5  # epoch 1 (no reference yet) and the first step after


def test_heldout_gap_reference_every_n_steps_on_a_dev_slice() -> None:
    task = ScriptedTask(controller=_heldout(reference_every=3, reference_size=5))
    task.dev_loss_offset = 1.0
    r = train_run(task, Variant("dynamic", controller="accuracy"), 0, config=CFG)
    # 12 steps: a slice of dev after steps 3, 6, 9, 12 (and the epoch ends' dev evaluation)
    assert task.evaluated.count("dev") == 3 + 4 and "train" not in task.evaluated
    forward_rates = [row["rate"] for row in r.monitor.rows if "masked_fraction" in row]
    assert forward_rates[:4] == [0.0] * 4 and forward_rates[4] == pytest.approx(0.05)
    assert forward_rates[-1] == pytest.approx(0.4)


def test_named_easy_controller_flips_the_tracker_weights() -> None:
    from maskwise.experiments.engine import build_masker

    class Keyed(ScriptedTask):
        def num_keys(self) -> int:
            return V

    task = Keyed()
    easy = build_masker(task, Variant("dynamic", controller="easy"), 0, 12, None)
    plain = build_masker(task, Variant("dynamic", controller="accuracy"), 0, 12, None)
    assert easy is not None and plain is not None
    assert (easy.temperature, plain.temperature) == (-1.0, 1.0)
    assert easy.tracker is not None and easy.controller.signal == plain.controller.signal
    easy.tracker.update(torch.tensor([4, 5]), torch.tensor([0.1, 3.0]))  # 4 easy, 5 hard
    w = easy.tracker.weights(torch.tensor([4, 5]), temperature=easy.temperature)
    assert w[0] > w[1]  # the easy token weighs more: masked more


def test_named_gap_controller() -> None:
    task = ScriptedTask(dev_loss_offset=1.0)
    v = Variant("dynamic", controller="gap")
    cfg = v.controller_config(task)
    assert (cfg.signal, cfg.initial_rate, cfg.min_rate) == ("heldout_gap", 0.0, 0.0)
    assert v.label == "dynamic gap"
    r = train_run(task, v, 0, config=CFG)
    assert r.history[0]["rate"] == 0.0 and r.history[-1]["rate"] > 0.0


@pytest.mark.parametrize("name", ["overfit", "hold"])
def test_named_overfit_controllers_train_as_no_masking_until_dev_loss_rises(name: str) -> None:
    cfg = TrainConfig(epochs=5, lr=0.05)
    # dev losses (the model's loss + offset): fall for two epochs, then rise from epoch 3
    offsets = iter([1.0, 0.5, 0.9, 1.5, 2.0])

    class Rising(ScriptedTask):
        def evaluate(self, model: nn.Module, split: str, device: Any, limit: Any = None) -> Any:
            if split == "dev":
                self.dev_loss_offset = next(offsets)
            return super().evaluate(model, split, device, limit)

    plain, waiting = ScriptedTask(), Rising()
    v = Variant("dynamic", controller=name)
    assert (v.controller_config(waiting).start, v.label) == ("overfit", f"dynamic {name}")
    r = train_run(waiting, v, 0, config=cfg)
    none = train_run(plain, Variant("none"), 0, config=cfg)
    rates = [h["rate"] for h in r.history]
    assert rates[:3] == [0.0, 0.0, 0.0] and rates[3] > 0.0  # started after epoch 3's rise
    # Until then, the very batches and weights of the unmasked run.
    steps = 3 * 4
    assert all(torch.equal(a, b) for a, b in zip(waiting.fed[:steps], plain.fed[:steps]))
    assert all(torch.equal(a, b) for a, b in zip(waiting.epoch_weights[:3], plain.epoch_weights))
    assert not all(torch.equal(a, b) for a, b in zip(waiting.fed[steps:], plain.fed[steps:]))
    assert none.history[0]["train_loss"] == r.history[0]["train_loss"]
    # The set point: 0 for overfit; for hold the gap at the lowest dev loss (epoch 2's).
    points = [h["set_point"] for h in r.history]
    if name == "overfit":
        assert points == [0.0] * 5
    else:
        train, dev = r.history[1]["train_loss"], r.history[1]["dev_loss"]
        assert points[1:] == pytest.approx([1 - train / dev] * 4)


def test_the_plain_dynamic_arm_is_the_library_default_whatever_the_task() -> None:
    from maskwise.dynamic import GAP_DEFAULTS
    from maskwise.experiments.engine import DEFAULT_CONTROLLER

    task = ScriptedTask(controller=ControllerConfig(target=0.3, max_delta=0.05, max_rate=0.9))
    cfg = Variant("dynamic").controller_config(task)
    assert DEFAULT_CONTROLLER == "hold" and Variant("dynamic").label == "dynamic"
    assert cfg == Variant("dynamic", controller="hold").controller_config(task)
    built = cfg.build().state_dict()
    library = ReliabilityController.default().state_dict()
    assert math.isnan(built.pop("smoothed")) and math.isnan(library.pop("smoothed"))
    assert built == library  # one setting: nothing of the task's controller is left
    assert (cfg.signal, cfg.start, cfg.target, cfg.initial_rate) == (
        GAP_DEFAULTS.signal,
        "overfit",
        "best",
        0.0,
    )
    # The task's own controller stays available by name.
    assert Variant("dynamic", controller="accuracy").controller_config(task) == task.controller


def test_schedule_warms_up_to_its_rate() -> None:
    r = train_run(ScriptedTask(), Variant("schedule", 0.4), 0, config=CFG)
    rates = [row["rate"] for row in r.monitor.rows if "masked_fraction" in row]
    assert rates[0] == 0.0
    assert rates == sorted(rates)
    assert rates[6:] == pytest.approx([0.4] * 6)  # linear over the first half of 12 steps
    assert r.history[-1]["rate"] == pytest.approx(0.4)


def test_unknown_variant() -> None:
    with pytest.raises(
        ValueError,
        match=r"variant must be one of \('none', 'static', 'dynamic', 'schedule', 'consistency'\)"
        r" \('random' given\)",
    ):
        Variant("random")
    assert (
        Variant("static", 0.25).label == "static 0.25"
        and Variant("dynamic", 0.1).label == "dynamic"
    )


@pytest.mark.parametrize(
    ("script", "patience", "epochs_run", "best"),
    [
        ([0.5, 0.7, 0.6, 0.65, 0.6, 0.9], 2, 4, 2),  # two epochs without beating 0.7: stop
        ([0.5, 0.7, 0.6, 0.75, 0.6, 0.6], 2, 6, 4),  # 0.75 resets the count; the budget ends
        ([0.5, 0.7, 0.6, 0.65, 0.6, 0.9], None, 6, 6),  # no patience: every epoch
    ],
)
def test_early_stopping_on_dev(
    script: list[float], patience: int | None, epochs_run: int, best: int
) -> None:
    task = ScriptedTask(dev_script=script)
    cfg = TrainConfig(epochs=len(script), lr=0.05, patience=patience)
    r = train_run(task, Variant("none"), 0, config=cfg)
    assert (r.epochs, r.best_epoch) == (epochs_run, best)
    assert torch.equal(task.final_weights, task.epoch_weights[best - 1])


def test_report_flags_a_baseline_still_fitting() -> None:
    from maskwise.experiments.report import _still_fitting

    def result(fraction: float | None) -> dict:
        return {"summary": [{"kind": "none", "baseline_best_epoch_fraction": fraction}]}

    assert _still_fitting(result(0.5)) == []  # best epoch in the first 60 %: a real test
    assert _still_fitting(result(None)) == []  # no unmasked arm: nothing to say
    assert "Baseline still fitting" in "".join(_still_fitting(result(0.9)))
