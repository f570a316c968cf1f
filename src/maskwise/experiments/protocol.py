"""The evidence protocol: tune each arm on dev with tuning seeds, then train the chosen setting of
every arm on fresh, paired evaluation seeds (SPEC.md, "Evidence protocol").

* An **arm** is a family of runs compared with no masking: ``none`` (its candidates: the
  weight decays it may be given, so that "masking helped" cannot just mean "more regularisation
  helped"), ``static``, ``consistency`` and ``schedule`` (one candidate per rate), ``dynamic``
  (the default controller: one candidate, no sweep) and ``dynamic NAME`` (a named controller of
  :data:`~maskwise.experiments.engine.CONTROLLERS`, e.g. ``dynamic seed``: the seeds' literal
  rule), given as ``dynamic:NAME``.
* **Tuning**: an arm with more than one candidate trains each on the tuning seeds
  ``0 .. tune_seeds - 1``; the candidate with the best mean *dev* metric is chosen (ties: the
  first listed). Test is never read to choose.
* **Evaluation**: the chosen candidate of every arm trains on the evaluation seeds
  ``tune_seeds .. tune_seeds + eval_seeds - 1``, the same seeds for every arm. A seed fixes the
  model's initialisation, the batch order, the masks' random stream and (for tasks whose split
  depends on the seed, :func:`~maskwise.experiments.engine.task_for_seed`) the split, so
  per-seed differences between arms are paired.
* **Parallel runs**: ``jobs > 1`` trains independent runs in that many worker processes
  (``spawn``; the task is pickled once per worker, so tokenizers trained in the parent are
  shared), one torch thread each. Every run seeds everything it draws, so the results equal
  those of ``jobs=1`` with one thread, run for run.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from maskwise.experiments.engine import RunResult, Task, TrainConfig, Variant, train_run

__all__ = ["ROLES", "Arm", "Job", "Protocol", "choose", "plan_arms", "run_jobs", "run_protocol"]

ROLES = ("tune", "eval")
SWEPT = ("static", "schedule", "consistency")  # kinds whose rate is swept


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: its kind and the candidate settings tuned on dev."""

    kind: str
    candidates: tuple[Variant, ...]

    @property
    def name(self) -> str:
        """The arm's name: its kind, or ``dynamic NAME`` for a named controller."""
        return self.candidates[0].arm

    @property
    def tuned(self) -> bool:
        """Whether the arm has a choice to make on dev (more than one candidate)."""
        return len(self.candidates) > 1


@dataclass(frozen=True)
class Job:
    """One training run: a variant, a seed and its role (``"tune"`` or ``"eval"``)."""

    variant: Variant
    seed: int
    role: str


@dataclass(frozen=True)
class Protocol:
    """How many tuning and evaluation seeds, and how many runs in parallel."""

    tune_seeds: int = 2
    eval_seeds: int = 5
    jobs: int = 1

    def __post_init__(self) -> None:
        if self.tune_seeds < 0 or self.eval_seeds < 1 or self.jobs < 1:
            raise ValueError(
                "tune_seeds must be >= 0, eval_seeds and jobs >= 1 "
                f"({self.tune_seeds}, {self.eval_seeds}, {self.jobs} given)."
            )

    @property
    def tune(self) -> list[int]:
        return list(range(self.tune_seeds))

    @property
    def eval(self) -> list[int]:
        return list(range(self.tune_seeds, self.tune_seeds + self.eval_seeds))


def plan_arms(
    task: Task,
    variants: Sequence[str],
    rates: Sequence[float],
    baseline_weight_decays: Sequence[float] | None = None,
) -> list[Arm]:
    """The arms of ``variants`` (kinds, or ``dynamic:NAME`` for a named controller): the swept
    kinds get one candidate per rate; ``none`` gets one per weight decay of
    ``baseline_weight_decays`` (default: the task's own only)."""
    arms = []
    for spec in dict.fromkeys(variants):  # unique, in order
        kind, _, name = spec.partition(":")
        if name:
            v = Variant(kind, 0.0, controller=name)  # checks the kind and the name
            cands: tuple[Variant, ...] = (replace(v, rate=v.controller_config(task).initial_rate),)
        elif kind in SWEPT:
            if not rates:
                raise ValueError(f"the {kind} arm needs at least one rate.")
            cands = tuple(Variant(kind, r) for r in dict.fromkeys(rates))
        elif kind == "none":
            wds = list(dict.fromkeys(baseline_weight_decays or []))
            cands = tuple(Variant("none", 0.0, wd) for wd in wds) if wds else (Variant("none"),)
        else:  # dynamic: the default controller's settings, nothing swept
            cands = (Variant(kind, Variant(kind).controller_config(task).initial_rate),)
        arms.append(Arm(kind, cands))
    return arms


def choose(task: Task, arm: Arm, runs: Sequence[RunResult]) -> Variant:
    """The candidate of ``arm`` with the best mean dev metric over its tuning ``runs`` (the
    first listed on a tie; a candidate with a non-finite dev metric, e.g. a diverged run, ranks
    last); the only candidate when there is nothing to choose."""
    if not arm.tuned:
        return arm.candidates[0]
    best: tuple[float, Variant] | None = None
    for cand in arm.candidates:
        values = [
            r.dev[task.metric]
            for r in runs
            if (r.variant, r.rate, r.weight_decay) == (cand.kind, cand.rate, cand.weight_decay)
        ]
        if not values:
            raise ValueError(f"no tuning run of {cand.label}.")
        score = sum(values) / len(values)
        score = score if task.higher_is_better else -score
        if not math.isfinite(score):
            score = -math.inf
        if best is None or score > best[0]:
            best = (score, cand)
    assert best is not None
    return best[1]


# --- running jobs, in this process or in workers ---------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(task: Task, config: TrainConfig | None) -> None:
    torch.set_num_threads(1)
    _WORKER["task"], _WORKER["config"] = task, config


def _work(variant: Variant, seed: int) -> RunResult:
    return train_run(_WORKER["task"], variant, seed, config=_WORKER["config"])


Progress = Callable[[Job], Callable[[int, int, str], None] | None]
#: ``lookup(job)``: a finished run of ``job`` to reuse instead of training it, or None.
Lookup = Callable[[Job], RunResult | None]


def run_jobs(
    task: Task,
    jobs: Sequence[Job],
    *,
    config: TrainConfig | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    done: Callable[[Job, RunResult], None] | None = None,
    lookup: Lookup | None = None,
) -> list[RunResult]:
    """Train every job; return the results in the order of ``jobs``.

    ``workers > 1`` runs them in that many ``spawn`` processes, one torch thread each.
    ``progress(job)`` may return a per-step callback (used with one worker only); ``done(job,
    result)`` is called as each run finishes. A job for which ``lookup(job)`` gives a run is
    not trained: that run is its result.
    """
    found = [lookup(job) if lookup is not None else None for job in jobs]
    todo = [i for i, r in enumerate(found) if r is None]
    if len(todo) < len(jobs):  # some are reused: report them, train the others
        for job, r in zip(jobs, found):
            if r is not None and done is not None:
                done(job, r)
        trained = run_jobs(
            task,
            [jobs[i] for i in todo],
            config=config,
            workers=workers,
            progress=progress,
            done=done,
        )
        for i, r in zip(todo, trained):
            found[i] = r
        return found  # type: ignore[return-value]
    results: list[RunResult | None] = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            cb = progress(job) if progress is not None else None
            results[i] = train_run(task, job.variant, job.seed, config=config, progress=cb)
            if done is not None:
                done(job, results[i])  # type: ignore[arg-type]
        return results  # type: ignore[return-value]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(task, config),
    ) as pool:
        futures = {pool.submit(_work, job.variant, job.seed): i for i, job in enumerate(jobs)}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            if done is not None:
                done(jobs[i], results[i])  # type: ignore[arg-type]
    return results  # type: ignore[return-value]


def run_protocol(
    task: Task,
    arms: Sequence[Arm],
    protocol: Protocol,
    *,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    done: Callable[[Job, RunResult], None] | None = None,
    lookup: Lookup | None = None,
) -> tuple[list[tuple[Job, RunResult]], dict[str, Variant]]:
    """Tune every arm that has a choice on the tuning seeds, then train every arm's chosen
    candidate on the evaluation seeds.

    The first round trains the tuning runs together with the evaluation runs of the arms that
    have nothing to tune (so parallel workers stay busy); the second, the evaluation runs of
    the tuned arms. Returns ``[(job, result)]`` (tuning runs first, then evaluation runs, each
    in arm and seed order: the same order for any number of workers) and each arm's chosen
    variant by arm name (:attr:`Arm.name`). Jobs that ``lookup`` answers are not trained
    (:func:`run_jobs`).
    """
    tuned = [a for a in arms if a.tuned]
    if tuned and not protocol.tune:
        raise ValueError(
            f"arms {', '.join(a.name for a in tuned)} have settings to choose: "
            "they need at least one tuning seed."
        )
    tune_jobs = [Job(c, s, "tune") for a in tuned for c in a.candidates for s in protocol.tune]
    fixed_eval = [
        Job(a.candidates[0], s, "eval") for a in arms if not a.tuned for s in protocol.eval
    ]
    first = run_jobs(
        task,
        tune_jobs + fixed_eval,
        config=config,
        workers=protocol.jobs,
        progress=progress,
        done=done,
        lookup=lookup,
    )
    tune_results = first[: len(tune_jobs)]
    chosen = {a.name: choose(task, a, tune_results) for a in arms}
    tuned_eval = [Job(chosen[a.name], s, "eval") for a in tuned for s in protocol.eval]
    second = run_jobs(
        task,
        tuned_eval,
        config=config,
        workers=protocol.jobs,
        progress=progress,
        done=done,
        lookup=lookup,
    )
    pairs = list(zip(tune_jobs, tune_results)) + list(
        zip(fixed_eval + tuned_eval, first[len(tune_jobs) :] + second)
    )
    order = {a.name: i for i, a in enumerate(arms)}
    tune_part = [p for p in pairs if p[0].role == "tune"]
    eval_part = sorted(
        (p for p in pairs if p[0].role == "eval"),
        key=lambda p: (order[p[0].variant.arm], p[0].seed),
    )
    return tune_part + eval_part, chosen
