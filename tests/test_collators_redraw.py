"""Keyed masks are drawn anew every time an example is collated (``redraw="always"``, the
default), from a per-example draw counter in shared memory: masks stay a pure function of
``(seed, epoch, index, draw)``, whatever the batches, the DataLoader workers or a resume, and
no training loop has to call ``set_epoch`` to get dynamic masking. ``redraw="epoch"`` keeps the
masks keyed by ``(seed, epoch, index)`` only.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from maskwise.collators import IndexedDataset, MLMCollator, T5Collator

PAD, CLS, SEP, MASK, EOS = 0, 1, 2, 3, 4
SPECIAL = (PAD, CLS, SEP, MASK, EOS)
VOCAB = 500
SENTINELS = list(range(499, 449, -1))
IGNORE = -100


def mlm(**kwargs: Any) -> MLMCollator:
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("rate", 0.3)
    return MLMCollator(mask_id=MASK, pad_id=PAD, vocab_size=VOCAB, special_ids=SPECIAL, **kwargs)


def t5(**kwargs: Any) -> T5Collator:
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("rate", 0.3)
    return T5Collator(sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD, **kwargs)


def dataset(n: int, *, seed: int = 0, min_len: int = 12, max_len: int = 30) -> IndexedDataset:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (), generator=g))
        rows.append([CLS, *torch.randint(10, 400, (length,), generator=g).tolist(), SEP])
    return IndexedDataset(rows)


def rows_of(batch: dict[str, torch.Tensor], ds: IndexedDataset, idx: list[int]) -> dict:
    """idx -> (labels, input_ids) of the real tokens of each row (right padding)."""
    out = {}
    for r, i in enumerate(idx):
        n = len(ds.dataset[i])
        out[i] = (batch["labels"][r, :n].clone(), batch["input_ids"][r, :n].clone())
    return out


def passes(
    collator: Any, ds: IndexedDataset, n_passes: int, **loader_kw: Any
) -> list[dict[int, Any]]:
    """Per pass over ``ds`` through a DataLoader: idx -> (labels, input_ids)."""
    loader_kw.setdefault("batch_size", 4)
    loader = DataLoader(ds, collate_fn=collator, **loader_kw)
    out = []
    for _ in range(n_passes):
        seen: dict[int, Any] = {}
        start = 0
        for batch in loader:  # shuffle=False: batches come in index order
            idx = list(range(start, start + batch["labels"].shape[0]))
            seen.update(rows_of(batch, ds, idx))
            start += len(idx)
        out.append(seen)
    return out


def same(a: dict[int, Any], b: dict[int, Any]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1]) for i in a
    )


# --------------------------------------------------------------------------------------------
# default: a new draw every time


def test_keyed_masks_are_redrawn_every_time_without_set_epoch() -> None:
    """Issue 12.1: Trainer never calls set_epoch; keyed masks must not repeat anyway."""
    ds = dataset(8)
    c = mlm()
    batch = [ds[i] for i in range(8)]
    first, second, third = c(batch), c(batch), c(batch)
    assert c.epoch == 0
    for a, b in ((first, second), (second, third), (first, third)):
        assert not torch.equal(a["labels"], b["labels"])


def test_t5_keyed_masks_are_redrawn_every_time_without_set_epoch() -> None:
    ds = dataset(8, min_len=40, max_len=60)
    c = t5()
    batch = [ds[i] for i in range(8)]
    assert not torch.equal(c(batch)["input_ids"], c(batch)["input_ids"])


@pytest.mark.parametrize("make", [mlm, t5])
def test_redraw_epoch_keeps_the_masks_until_set_epoch(make: Any) -> None:
    ds = dataset(8, min_len=40, max_len=60)
    batch = [ds[i] for i in range(8)]
    c = make(redraw="epoch")
    a, b = c(batch), c(batch)
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["input_ids"], b["input_ids"])
    c.set_epoch(1)
    assert not torch.equal(c(batch)["labels"], a["labels"])


def test_the_kth_draw_is_the_same_in_any_batch() -> None:
    """Draw k of example i is a pure function of (seed, epoch, i, k)."""
    ds = dataset(6)
    alone, mixed = mlm(seed=3), mlm(seed=3)
    for k in range(3):
        got = rows_of(mixed([ds[5], ds[2], ds[0]]), ds, [5, 2, 0])
        for i in (0, 2, 5):
            want = rows_of(alone([ds[i]]), ds, [i])
            assert torch.equal(got[i][0], want[i][0]), (i, k)
        # Examples not in this batch do not advance.
        assert mixed.draw_count(1) == 0 and mixed.draw_count(5) == k + 1


def test_an_example_twice_in_one_batch_gets_two_draws() -> None:
    """Samplers with replacement may repeat an example inside a batch: draws k and k + 1."""
    ds = dataset(2)
    twice = mlm()([ds[1], ds[1], ds[1]])
    ref = mlm()
    for r in range(3):
        assert torch.equal(twice["labels"][r], ref([ds[1]])["labels"][0])
    assert not torch.equal(twice["labels"][0], twice["labels"][1])


def test_epoch_still_keys_the_masks() -> None:
    ds = dataset(4)
    batch = [ds[i] for i in range(4)]

    def at(epoch: int) -> MLMCollator:
        c = mlm()
        c.set_epoch(epoch)
        return c

    assert not torch.equal(at(0)(batch)["labels"], at(1)(batch)["labels"])
    assert torch.equal(at(1)(batch)["labels"], at(1)(batch)["labels"])  # same (epoch, draw)


# --------------------------------------------------------------------------------------------
# DataLoader workers: counters in shared memory


@pytest.mark.parametrize("persistent", [True, False])
def test_workers_draw_what_the_main_process_draws(persistent: bool) -> None:
    ds = dataset(24, seed=1)
    main = passes(mlm(seed=5), ds, 3, num_workers=0)
    workers = passes(mlm(seed=5), ds, 3, num_workers=2, persistent_workers=persistent)
    for p in range(3):
        assert same(main[p], workers[p]), f"pass {p}"
    # Every pass is new.
    for i in range(24):
        labels = [main[p][i][0] for p in range(3)]
        assert not (torch.equal(labels[0], labels[1]) and torch.equal(labels[1], labels[2]))


def test_t5_workers_draw_what_the_main_process_draws() -> None:
    ds = dataset(16, seed=2, min_len=30, max_len=50)
    main = passes(t5(seed=1), ds, 2, num_workers=0)
    workers = passes(t5(seed=1), ds, 2, num_workers=2, persistent_workers=True)
    for p in range(2):
        assert same(main[p], workers[p]), f"pass {p}"
    assert not same(main[0], main[1])


# --------------------------------------------------------------------------------------------
# state


def test_state_dict_resumes_the_draw_counts() -> None:
    ds = dataset(12, seed=3)
    run = mlm(seed=2)
    uninterrupted = passes(run, ds, 3)
    first = mlm(seed=2)
    passes(first, ds, 2)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["draws"].tolist() == [2] * 12
    resumed = mlm(seed=99)
    resumed.load_state_dict(state)
    assert same(passes(resumed, ds, 1)[0], uninterrupted[2])
    # A state without draws (older checkpoints) starts the counts at 0.
    old = {k: v for k, v in state.items() if k != "draws"}
    fresh = mlm(seed=7)
    passes(fresh, ds, 1)
    fresh.load_state_dict(old)
    assert same(passes(fresh, ds, 1)[0], uninterrupted[0])


def test_num_examples_sizes_the_counters_and_checks_indices() -> None:
    ds = dataset(4)
    c = mlm(num_examples=4)
    c([ds[i] for i in range(4)])
    assert [c.draw_count(i) for i in range(4)] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"num_examples.*\b4\b"):
        c([{"input_ids": [CLS, 20, 21, SEP], "idx": 4}])
    with pytest.raises(ValueError, match="idx"):
        c([{"input_ids": [CLS, 20, 21, SEP], "idx": -1}])
    with pytest.raises(ValueError, match="num_examples"):
        mlm(num_examples=0)
    with pytest.raises(ValueError, match="redraw"):
        mlm(redraw="sometimes")


def test_indices_beyond_the_default_table_share_a_counter_with_a_warning() -> None:
    from maskwise.collators.base import DEFAULT_DRAW_SLOTS

    c = mlm()
    far = DEFAULT_DRAW_SLOTS + 3
    with pytest.warns(UserWarning, match="num_examples"):
        c([{"input_ids": [CLS, 20, 21, 22, SEP], "idx": far}])
    assert c.draw_count(3) == 1  # folded onto index 3


# --------------------------------------------------------------------------------------------
# property: masks depend only on (seed, epoch, index, draw)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 10),
    batch_size=st.integers(1, 4),
    n_passes=st.integers(1, 3),
    seed=st.integers(0, 2**40),
    unit=st.sampled_from(["token", "span"]),
    data=st.data(),
)
def test_masks_do_not_depend_on_order_or_batching(
    n: int, batch_size: int, n_passes: int, seed: int, unit: str, data: st.DataObject
) -> None:
    ds = dataset(n, seed=seed % 1000, min_len=3, max_len=20)
    ref, other = mlm(seed=seed, unit=unit), mlm(seed=seed, unit=unit)
    for p in range(n_passes):
        want = {}
        for i in range(n):
            want.update(rows_of(ref([ds[i]]), ds, [i]))
        order = data.draw(st.permutations(range(n)), label=f"order of pass {p}")
        got: dict[int, Any] = {}
        for s in range(0, n, batch_size):
            idx = list(order[s : s + batch_size])
            got.update(rows_of(other([ds[i] for i in idx]), ds, idx))
        assert same(got, want)
    assert all(other.draw_count(i) == n_passes for i in range(n))


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(5, 24),
    batch_size=st.integers(1, 6),
    workers=st.integers(1, 3),
    persistent=st.booleans(),
    t5_unit=st.booleans(),
    seed=st.integers(0, 2**40),
)
def test_masks_do_not_depend_on_the_workers(
    n: int, batch_size: int, workers: int, persistent: bool, t5_unit: bool, seed: int
) -> None:
    """Two passes through a DataLoader with workers give exactly the masks of the main
    process, whatever the number of workers, the batch size and whether workers persist."""
    ds = dataset(n, seed=seed % 997, min_len=20, max_len=40)
    make = (lambda: t5(seed=seed)) if t5_unit else (lambda: mlm(seed=seed))
    main = passes(make(), ds, 2, num_workers=0, batch_size=batch_size)
    kw: dict[str, Any] = {"persistent_workers": persistent, "batch_size": batch_size}
    other = passes(make(), ds, 2, num_workers=workers, **kw)
    assert same(main[0], other[0]) and same(main[1], other[1])
