"""maskwise.experiments.protocol: arms and their candidates, the choice on dev (never on test),
tuning seeds before fresh evaluation seeds, the same seeds in every arm, and parallel workers that
give the same runs as one process."""

from __future__ import annotations

import pytest
import torch

from maskwise.experiments.engine import RunResult, TrainConfig, Variant
from maskwise.experiments.protocol import Arm, Protocol, choose, plan_arms, run_protocol
from tests.experiments.test_engine import ScriptedTask

TIMING = ("epoch_time_s", "items_per_s", "seconds", "cpu_seconds")


def _run(kind: str, rate: float, seed: int, dev: float, test: float) -> RunResult:
    return RunResult(
        task="t",
        variant=kind,
        rate=rate,
        seed=seed,
        train={"accuracy": 1.0},
        dev={"accuracy": dev},
        test={"accuracy": test},
        gap=1.0 - test,
        best_epoch=1,
        epochs=1,
        steps=1,
        epoch_time_s=1.0,
        items_per_s=1.0,
    )


RUNS = [
    _run("static", 0.1, 0, 0.80, 0.90),
    _run("static", 0.1, 1, 0.80, 0.92),
    _run("static", 0.2, 0, 0.85, 0.70),
    _run("static", 0.2, 1, 0.87, 0.72),  # best dev
    _run("static", 0.3, 0, 0.60, 0.95),
    _run("static", 0.3, 1, 0.62, 0.97),  # best test, worst dev
]
STATIC = Arm("static", tuple(Variant("static", r) for r in (0.1, 0.2, 0.3)))


def test_choose_reads_dev_never_test() -> None:
    assert choose(ScriptedTask(), STATIC, RUNS) == Variant("static", 0.2)


def test_choose_lower_is_better_and_ties() -> None:
    error_rate = ScriptedTask(higher_is_better=False)  # the metric read as an error rate
    assert choose(error_rate, STATIC, RUNS) == Variant("static", 0.3)
    tied = [_run("static", r, 0, 0.5, t) for r, t in ((0.1, 0.1), (0.2, 0.9))]
    two = Arm("static", (Variant("static", 0.1), Variant("static", 0.2)))
    assert choose(ScriptedTask(), two, tied) == Variant("static", 0.1)  # the first listed
    with pytest.raises(ValueError, match="no tuning run of static 0.3"):
        choose(ScriptedTask(), STATIC, RUNS[:4])
    diverged = [_run("static", 0.1, 0, float("nan"), 0.1), _run("static", 0.2, 0, 0.3, 0.1)]
    assert choose(ScriptedTask(), two, diverged) == Variant("static", 0.2)  # NaN ranks last


def test_plan_arms() -> None:
    arms = plan_arms(ScriptedTask(), ["none", "static", "dynamic", "static"], [0.1, 0.2, 0.1])
    assert [(a.kind, [c.label for c in a.candidates]) for a in arms] == [
        ("none", ["none"]),
        ("static", ["static 0.1", "static 0.2"]),  # repeated rates and kinds counted once
        ("dynamic", ["dynamic"]),
    ]
    assert [a.tuned for a in arms] == [False, True, False]
    none = plan_arms(ScriptedTask(), ["none"], [], baseline_weight_decays=[0.01, 0.1])[0]
    assert [c.label for c in none.candidates] == ["none wd 0.01", "none wd 0.1"]
    with pytest.raises(ValueError, match="needs at least one rate"):
        plan_arms(ScriptedTask(), ["consistency"], [])


def test_named_controller_arm_is_its_own_arm() -> None:
    from maskwise.experiments.engine import build_masker

    task = ScriptedTask()
    arms = plan_arms(task, ["dynamic", "dynamic:seed"], [])
    assert [(a.kind, a.name, [c.label for c in a.candidates]) for a in arms] == [
        ("dynamic", "dynamic", ["dynamic"]),
        ("dynamic", "dynamic seed", ["dynamic seed"]),
    ]
    seed = arms[1].candidates[0]
    assert seed.controller_config(task).direction == "seed"
    # The plain arm is the library default, whatever the task's own controller says.
    assert arms[0].candidates[0].controller_config(task).start == "overfit"
    masker = build_masker(task, seed, 0, 10, None)
    assert masker is not None and masker.controller.direction == "seed"
    for bad in ("dynamic:nope", "static:seed"):
        with pytest.raises(ValueError, match="named controller"):
            plan_arms(task, [bad], [0.1])
    task.train_config = TrainConfig(epochs=1, lr=0.05)
    pairs, chosen = run_protocol(task, arms, Protocol(tune_seeds=0, eval_seeds=2))
    assert [(j.variant.label, j.seed) for j, _ in pairs] == [
        ("dynamic", 0),
        ("dynamic", 1),
        ("dynamic seed", 0),
        ("dynamic seed", 1),
    ]
    assert set(chosen) == {"dynamic", "dynamic seed"}


def test_protocol_seeds_and_checks() -> None:
    p = Protocol(tune_seeds=3, eval_seeds=4)
    assert p.tune == [0, 1, 2] and p.eval == [3, 4, 5, 6]  # fresh: never a tuning seed
    for bad in ({"tune_seeds": -1}, {"eval_seeds": 0}, {"jobs": 0}):
        with pytest.raises(ValueError):
            Protocol(**bad)
    task = ScriptedTask()
    with pytest.raises(ValueError, match="need at least one tuning seed"):
        run_protocol(task, plan_arms(task, ["static"], [0.1, 0.2]), Protocol(tune_seeds=0))


def _strip(r: RunResult) -> dict:
    from maskwise.experiments.summary import finite_json

    d = finite_json(r.to_dict())  # NaN (a controller not yet started) as in results.json
    for k in TIMING:
        d.pop(k)
    return d


@pytest.fixture(scope="module")
def protocol_runs() -> tuple:
    task = ScriptedTask()
    task.train_config = TrainConfig(epochs=2, lr=0.05)
    arms = plan_arms(task, ["none", "static", "dynamic"], [0.1, 0.5])
    return task, arms, run_protocol(task, arms, Protocol(tune_seeds=2, eval_seeds=3))


def test_run_protocol_tunes_then_evaluates_on_fresh_paired_seeds(protocol_runs: tuple) -> None:
    task, _, (pairs, chosen) = protocol_runs
    roles = [(j.role, j.variant.label, j.seed) for j, _ in pairs]
    assert roles[:4] == [
        ("tune", "static 0.1", 0),
        ("tune", "static 0.1", 1),
        ("tune", "static 0.5", 0),
        ("tune", "static 0.5", 1),
    ]
    tune = [r for j, r in pairs if j.role == "tune"]
    best = max(
        (0.1, 0.5),
        key=lambda rate: sum(r.dev["accuracy"] for r in tune if r.rate == rate),
    )
    assert chosen["static"] == Variant("static", best)
    assert chosen["none"] == Variant("none") and chosen["dynamic"].kind == "dynamic"
    assert roles[4:] == [
        ("eval", label, seed)
        for label in ("none", f"static {best:g}", "dynamic")
        for seed in (2, 3, 4)
    ]
    for job, r in pairs:  # each result is the run of its job
        assert (r.variant, r.seed) == (job.variant.kind, job.seed)


class FoldedTask(ScriptedTask):
    """ScriptedTask whose data depend on the seed (``for_seed``), as a speaker split does."""

    def for_seed(self, seed: int) -> FoldedTask:
        other = FoldedTask()
        other.train_config = self.train_config
        g = torch.Generator().manual_seed(100 + seed)
        other.ids = torch.randint(2, 40, self.ids.shape, generator=g)
        other.labels = other.ids[:, 0] % 2
        return other


def test_jobs_give_the_same_runs_as_one_process() -> None:
    task = FoldedTask()
    task.train_config = TrainConfig(epochs=2, lr=0.05)
    arms = plan_arms(task, ["none", "static", "dynamic"], [0.1, 0.5])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # workers run one thread; so does the reference here
    try:
        one, chosen = run_protocol(task, arms, Protocol(tune_seeds=2, eval_seeds=3, jobs=1))
        two, chosen2 = run_protocol(task, arms, Protocol(tune_seeds=2, eval_seeds=3, jobs=2))
    finally:
        torch.set_num_threads(threads)
    assert chosen2 == chosen
    assert [j for j, _ in two] == [j for j, _ in one]
    assert [_strip(r) for _, r in two] == [_strip(r) for _, r in one]
    assert all(r.seconds > 0 for _, r in two)
