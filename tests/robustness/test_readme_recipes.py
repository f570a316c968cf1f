"""The README's dynamic-masking recipes do what their comments say.

Each recipe below is the exact code the README shows (``README_RECIPES``). The controllers are
fed a synthetic signal shaped like the masked-token accuracy of MLM pre-training (starting near
0.05 and rising to ~0.4 over a few hundred updates, noisy: the share of correct predictions
among 64 masked tokens per step) or like the training accuracy of a small classifier (rising
to ~1.0), and the rate is checked against the recipe's comment at every step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from maskwise.dynamic import CONTROLLER_DEFAULTS, ReliabilityController, resolve_rate

README = Path(__file__).resolve().parents[2] / "README.md"

#: The recipes, exactly as the README's "Dynamic masking" section shows them.
SCHEDULE_RECIPE = "schedule = cosine_decay(0.3, 10_000)"
MLM_RECIPE = "controller = ReliabilityController(0.15, target=0.3, min_rate=0.1, max_rate=0.3)"
DEFAULT_RECIPE = "classifier = ReliabilityController(0.1)"
README_RECIPES = (SCHEDULE_RECIPE, MLM_RECIPE, DEFAULT_RECIPE)

STEPS = 600
TOKENS = 64  # masked tokens per step


def run_recipe(code: str) -> Any:
    namespace: dict[str, Any] = {}
    exec("from maskwise.dynamic import ReliabilityController, cosine_decay\n" + code, namespace)
    return namespace[code.split("=")[0].strip()]


def accuracy_signal(start: float, end: float, rise: int, seed: int) -> list[torch.Tensor]:
    """Per step, the correctness (1.0 / 0.0) of ``TOKENS`` predictions whose accuracy rises
    linearly from ``start`` to ``end`` over ``rise`` steps, then stays at ``end``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(STEPS):
        p = start + (end - start) * min(t / rise, 1.0)
        out.append((torch.rand(TOKENS, generator=g) < p).float())
    return out


def mlm_signal(seed: int) -> list[torch.Tensor]:
    return accuracy_signal(0.05, 0.4, 400, seed)


def drive(c: ReliabilityController, signal: list[torch.Tensor]) -> list[float]:
    return [c.update(x) for x in signal]


def test_the_readme_shows_these_recipes() -> None:
    text = README.read_text()
    section = text[text.index("### Dynamic masking") :]
    for recipe in README_RECIPES:
        assert re.search(re.escape(recipe) + r"\s", section), recipe


def test_schedule_recipe_starts_at_its_argument_and_decays_to_the_floor() -> None:
    # "masking ratio 0.3 at step 0, cosine down to 0.02 at step 10k"
    schedule = run_recipe(SCHEDULE_RECIPE)
    rates = [resolve_rate(schedule, t) for t in range(0, 10_001, 25)]  # 401 steps
    assert rates[0] == 0.3
    assert rates[-1] == 0.02
    assert resolve_rate(schedule, 20_000) == 0.02
    assert rates[200] == pytest.approx(0.16)  # half way: the mean of the endpoints
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlm_controller_recipe_on_masked_token_accuracy(seed: int) -> None:
    # "masked-token accuracy above 0.3 -> mask more, below -> mask less; the rate stays in
    # [0.1, 0.3] and moves by at most 0.01 per update"
    c = run_recipe(MLM_RECIPE)
    signal = mlm_signal(seed)
    rates = drive(c, signal)
    assert all(0.1 <= r <= 0.3 for r in rates)
    steps = [abs(b - a) for a, b in zip([0.15, *rates], rates)]
    assert max(steps) <= 0.01 + 1e-12
    # Accuracy below 0.3 (the first ~270 steps): down to the floor within 5 updates, and there.
    assert rates[4] == pytest.approx(0.1)
    assert all(r == pytest.approx(0.1) for r in rates[4:250])
    # Accuracy ~0.4 > 0.3 at the end: the rate has risen to its ceiling, not beyond.
    assert rates[-1] == pytest.approx(0.3)
    assert rates[350] < rates[450] <= rates[-1]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_old_recipe_ran_away_and_the_defaults_do_not(seed: int) -> None:
    """The README's former recipe, with the former defaults spelled out, climbed to its bound on
    this signal within 15 updates; with today's defaults the same call stays at the floor."""
    old = ReliabilityController(
        0.15,
        signal="accuracy",
        target=0.6,
        gain=0.1,
        direction="seed",
        min_rate=0.0,
        max_rate=0.9,
        max_delta=0.05,
    )
    assert drive(old, mlm_signal(seed))[14] == pytest.approx(0.9)
    new = ReliabilityController(0.15, signal="accuracy", target=0.6, gain=0.1)
    rates = drive(new, mlm_signal(seed))
    assert max(rates) <= 0.15 and rates[-1] == pytest.approx(CONTROLLER_DEFAULTS.min_rate)


@pytest.mark.parametrize("seed", [0, 1])
def test_default_controller_recipe(seed: int) -> None:
    # "the defaults (CONTROLLER_DEFAULTS), as `maskwise run`: training accuracy above 0.9 ->
    # mask more, up to 0.6; below -> mask less, not under 0.1"
    c = run_recipe(DEFAULT_RECIPE)
    assert (c.min_rate, c.max_rate, c.target, c.direction) == (0.1, 0.6, 0.9, "curriculum")
    # Masked-token accuracy of MLM never reaches 0.9: the rate stays at the floor.
    assert all(r == pytest.approx(0.1) for r in drive(c, mlm_signal(seed)))
    # A classifier that learns its training set: the rate rises once accuracy passes 0.9 ...
    c = run_recipe(DEFAULT_RECIPE)
    rates = drive(c, accuracy_signal(0.1, 1.0, 300, seed))
    assert all(0.1 <= r <= 0.6 for r in rates)
    assert all(r == pytest.approx(0.1) for r in rates[:250])
    assert rates[-1] > 0.2
    # ... and falls back when accuracy drops below the target.
    after = drive(c, accuracy_signal(0.5, 0.5, 1, seed + 10))
    assert after[-1] == pytest.approx(0.1)
