"""MLMCollator with a dynamic rate: a schedule read at the shared step, a controller whose rate
lives in shared memory, in the main process and in persistent DataLoader workers (forked and
spawned), and the rate source in the collator's state."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from maskwise.collators import IndexedDataset, MLMCollator
from maskwise.dynamic import ReliabilityController, cosine, linear

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = (PAD, CLS, SEP, MASK)
VOCAB = 500
BATCH, LENGTH = 8, 200  # 1600 maskable tokens per batch: sd of the realised rate <= 0.0125
WORKERS, PREFETCH = 2, 2


def mlm(rate: Any, **kwargs: Any) -> MLMCollator:
    kwargs.setdefault("seed", 0)
    return MLMCollator(
        mask_id=MASK, pad_id=PAD, vocab_size=VOCAB, special_ids=SPECIAL, rate=rate, **kwargs
    )


def examples(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [[CLS, *torch.randint(4, VOCAB, (LENGTH,), generator=g).tolist(), SEP] for _ in range(n)]


def realised(batch: dict[str, torch.Tensor]) -> float:
    """Masked share of the maskable tokens (every token but [CLS] and [SEP])."""
    return float((batch["labels"] != -100).sum()) / (batch["labels"].shape[0] * LENGTH)


def fast_controller(rate: float) -> ReliabilityController:
    """One update moves the rate by 0.5 * (accuracy - 0.5) * 2: update(1.0) adds 0.5."""
    return ReliabilityController(
        rate,
        target=0.5,
        gain=1.0,
        momentum=0.0,
        max_delta=1.0,
        direction="curriculum",
        min_rate=0.0,
        max_rate=0.9,
    )


# --------------------------------------------------------------------------------------------
# main process


def test_schedule_rate_follows_set_step() -> None:
    c = mlm(linear(0.1, 0.6, 10))
    data = examples(BATCH)
    assert c.rate == 0.1 and c.step == 0
    r0 = realised(c(data))
    c.set_step(10)
    assert c.step == 10 and c.rate == 0.6
    r10 = realised(c(data))
    c.set_step(5)
    r5 = realised(c(data))
    assert abs(r0 - 0.1) < 0.04 and abs(r10 - 0.6) < 0.05 and abs(r5 - 0.35) < 0.05


def test_controller_rate_follows_updates() -> None:
    ctrl = fast_controller(0.1)
    c = mlm(ctrl)
    data = examples(BATCH)
    r0 = realised(c(data))
    ctrl.update(1.0)
    assert c.rate == pytest.approx(0.6)
    r1 = realised(c(data))
    assert abs(r0 - 0.1) < 0.04 and abs(r1 - 0.6) < 0.05
    # A float set later replaces the controller.
    c.rate = 0.3
    ctrl.update(0.0)
    assert c.rate == 0.3


# --------------------------------------------------------------------------------------------
# DataLoader workers


def loader(c: MLMCollator, n_batches: int, **kwargs: Any) -> DataLoader:
    kwargs.setdefault("persistent_workers", True)
    return DataLoader(
        examples(n_batches * BATCH, seed=1),
        batch_size=BATCH,
        collate_fn=c,
        num_workers=WORKERS,
        prefetch_factor=PREFETCH,
        **kwargs,
    )


def read_change_read(batches: Any, change: Any, before: int = 3) -> tuple[list[float], list[float]]:
    """Read ``before`` batches, make the change, read the rest. Returns the realised rates of
    the batches before the change and of those made surely after it (the first
    WORKERS * PREFETCH batches after the change may have been prefetched before it)."""
    it = iter(batches)
    old = [realised(next(it)) for _ in range(before)]
    change()
    rest = [realised(b) for b in it]
    return old, rest[WORKERS * PREFETCH :]


def test_controller_updates_reach_persistent_workers() -> None:
    ctrl = fast_controller(0.1)
    c = mlm(ctrl)
    dl = loader(c, 14)
    old, new = read_change_read(dl, lambda: ctrl.update(1.0))
    assert all(abs(r - 0.1) < 0.05 for r in old), old
    assert len(new) == 7
    assert all(abs(r - 0.6) < 0.06 for r in new), new
    # The same persistent workers, next epoch, after another update: every batch at 0.1 + 0.5 - 0.5.
    ctrl.update(0.0)
    assert ctrl.rate == pytest.approx(0.1)
    epoch2 = [realised(b) for b in dl]
    assert len(epoch2) == 14 and all(abs(r - 0.1) < 0.05 for r in epoch2), epoch2


def test_schedule_step_reaches_persistent_workers() -> None:
    c = mlm(cosine(0.1, 0.5, 100))
    dl = loader(c, 12)
    old, new = read_change_read(dl, lambda: c.set_step(100))
    assert all(abs(r - 0.1) < 0.05 for r in old), old
    assert len(new) == 5 and all(abs(r - 0.5) < 0.06 for r in new), new


def test_workers_mask_like_the_main_process_when_keyed() -> None:
    """Keyed masks at a controller's rate: workers and the main process agree exactly."""
    ctrl = fast_controller(0.1)
    ctrl.update(0.9)  # rate 0.5: workers must read the updated state, not the initial 0.1
    ds = IndexedDataset(examples(4 * BATCH, seed=2))
    in_workers = list(DataLoader(ds, batch_size=BATCH, collate_fn=mlm(ctrl), num_workers=WORKERS))
    in_main = list(DataLoader(ds, batch_size=BATCH, collate_fn=mlm(ctrl), num_workers=0))
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(in_workers, in_main))
    assert abs(sum(realised(b) for b in in_main) / 4 - 0.5) < 0.04


@pytest.mark.slow
def test_controller_updates_reach_spawned_workers() -> None:
    """With the spawn start method the controller is pickled into the workers: its rate must
    travel as a handle to the same shared memory, not as a copy."""
    ctrl = fast_controller(0.1)
    c = mlm(ctrl)
    dl = loader(c, 12, multiprocessing_context="spawn")
    old, new = read_change_read(dl, lambda: ctrl.update(1.0))
    assert all(abs(r - 0.1) < 0.05 for r in old), old
    assert len(new) == 5 and all(abs(r - 0.6) < 0.06 for r in new), new


# --------------------------------------------------------------------------------------------
# state


def test_state_dict_includes_the_rate_source() -> None:
    ctrl = fast_controller(0.1)
    ctrl.update(0.8)
    c = mlm(ctrl)
    state = c.state_dict()
    assert state["rate_source"] == ctrl.state_dict()
    assert state["rate"] == pytest.approx(0.4)
    other = fast_controller(0.2)
    d = mlm(other, seed=9)
    d.load_state_dict(state)
    assert other.state_dict() == ctrl.state_dict() and d.rate == pytest.approx(0.4) and d.seed == 0

    sched = cosine(0.4, 0.0, 100)
    s = mlm(sched)
    s.set_step(50)
    state = s.state_dict()
    assert state["rate_source"] == sched.state_dict() and state["step"] == 50
    t = mlm(cosine(0.9, 0.9, 3))
    t.load_state_dict(state)
    assert t.step == 50 and t.rate == pytest.approx(0.2)

    assert mlm(0.15).state_dict()["rate_source"] is None


# --------------------------------------------------------------------------------------------
# switching the kind of rate source while persistent workers run (issue 12.16)


def epoch_rate(batches: Any) -> float:
    """Masked share over one whole pass of a loader."""
    rates = [realised(b) for b in batches]
    return sum(rates) / len(rates)


def test_switching_the_rate_source_reaches_persistent_workers() -> None:
    c = mlm(0.1)
    dl = loader(c, 6)  # 9600 maskable tokens per pass: sd of the rate <= 0.005
    assert abs(epoch_rate(dl) - 0.1) < 0.03
    ctrl = fast_controller(0.6)  # a controller the running workers have never seen
    c.rate = ctrl
    assert abs(epoch_rate(dl) - 0.6) < 0.03
    ctrl.update(0.0)  # 0.6 - 0.5
    assert abs(epoch_rate(dl) - 0.1) < 0.03
    c.rate = 0.4  # controller -> float
    assert abs(epoch_rate(dl) - 0.4) < 0.03
    c.rate = ctrl  # float -> the same controller again
    ctrl.update(1.0)  # 0.1 + 0.5
    assert abs(epoch_rate(dl) - 0.6) < 0.03
    c.rate = linear(0.2, 0.8, 10)  # a schedule the workers have never seen
    assert abs(epoch_rate(dl) - 0.2) < 0.03
    c.set_step(5)
    assert abs(epoch_rate(dl) - 0.5) < 0.03
    c.rate = 0.3
    assert abs(epoch_rate(dl) - 0.3) < 0.03


def test_a_schedule_that_cannot_reach_running_workers_warns() -> None:
    c = mlm(0.1)
    dl = loader(c, 4)
    epoch_rate(dl)
    # A lambda cannot be pickled: the running workers cannot receive it. They keep the rate it
    # had when it was set, and say so; new workers get the schedule itself.
    with pytest.warns(UserWarning, match="cannot be pickled"):
        c.rate = lambda step: 0.5 if step == 0 else 0.2
    assert abs(epoch_rate(dl) - 0.5) < 0.03
    assert c.rate == 0.5
