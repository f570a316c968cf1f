"""DifficultyTracker: the EMA per key (literal and against a naive loop), what is ignored,
sampling weights (direction, unseen keys, literal values), its effect on sample_mask, state."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwise.dynamic import DifficultyTracker
from maskwise.functional import sample_mask

# --------------------------------------------------------------------------------------------
# naive references


def reference_update(
    ema: list[float],
    count: list[float],
    momentum: float,
    keys: list[int],
    losses: list[float],
    valid: list[bool] | None = None,
) -> None:
    """One batch, one key at a time: group the usable losses per key, blend their mean."""
    groups: dict[int, list[float]] = {}
    for i, (k, x) in enumerate(zip(keys, losses)):
        if valid is not None and not valid[i]:
            continue
        if not 0 <= k < len(ema) or math.isnan(x):
            continue
        groups.setdefault(k, []).append(x)
    for k, xs in groups.items():
        m = sum(xs) / len(xs)
        ema[k] = m if count[k] == 0 else momentum * ema[k] + (1 - momentum) * m
        count[k] += len(xs)


def reference_weights(
    ema: list[float], count: list[float], keys: list[int], temperature: float
) -> list[float]:
    seen = [k for k in range(len(ema)) if count[k] > 0]
    n = max(len(seen), 1)
    mean = sum(ema[k] for k in seen) / n
    std = max(math.sqrt(sum((ema[k] - mean) ** 2 for k in seen) / n), 1e-6)
    out = []
    for k in keys:
        if count[k] == 0:
            out.append(1.0)
        else:
            out.append(math.exp(min(10.0, max(-10.0, (ema[k] - mean) / (std * temperature)))))
    return out


# --------------------------------------------------------------------------------------------
# the EMA


def test_ema_literal() -> None:
    t = DifficultyTracker(4, momentum=0.5)
    assert t.loss.tolist() == [0.0] * 4 and t.count.tolist() == [0.0] * 4
    t.update(torch.tensor([0]), torch.tensor([2.0]))
    assert t.loss.tolist() == [2.0, 0.0, 0.0, 0.0]  # the first observation sets the value
    t.update(torch.tensor([0, 2]), torch.tensor([4.0, 8.0]))
    assert t.loss.tolist() == [3.0, 0.0, 8.0, 0.0]  # 0.5 * 2 + 0.5 * 4; key 2 is new
    t.update(torch.tensor([0, 0, 2]), torch.tensor([1.0, 3.0, 0.0]))
    assert t.loss.tolist() == [2.5, 0.0, 4.0, 0.0]  # key 0: batch mean 2
    assert t.count.tolist() == [4.0, 0.0, 2.0, 0.0]


def test_first_observation_sets_the_value_whatever_the_momentum() -> None:
    t = DifficultyTracker(3, momentum=0.99)
    t.update(torch.tensor([1, 1]), torch.tensor([3.0, 5.0]))
    assert t.loss.tolist() == [0.0, 4.0, 0.0]
    t.update(torch.tensor([1]), torch.tensor([104.0]))
    assert t.loss[1].item() == pytest.approx(0.99 * 4.0 + 0.01 * 104.0)


def test_batched_2d_input_with_valid() -> None:
    t = DifficultyTracker(5, momentum=0.0)
    keys = torch.tensor([[1, 2, 3], [1, 4, 0]])
    losses = torch.tensor([[1.0, 2.0, 3.0], [3.0, 9.0, 9.0]])
    labels = torch.tensor([[7, 7, -100], [7, -100, 7]])
    t.update(keys, losses, valid=labels != -100)
    assert t.loss.tolist() == [9.0, 2.0, 2.0, 0.0, 0.0]
    assert t.count.tolist() == [1.0, 2.0, 1.0, 0.0, 0.0]


def test_out_of_range_nan_and_invalid_entries_are_ignored() -> None:
    t = DifficultyTracker(3, momentum=0.5)
    t.update(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    loss, count = t.loss.clone(), t.count.clone()
    t.update(torch.tensor([-1, 3, 100, -100]), torch.tensor([5.0, 5.0, 5.0, 5.0]))
    t.update(torch.tensor([0, 1, 2]), torch.tensor([float("nan")] * 3))
    t.update(
        torch.tensor([0, 1, 2]), torch.tensor([5.0, 5.0, 5.0]), valid=torch.tensor([False] * 3)
    )
    t.update(torch.tensor([], dtype=torch.long), torch.tensor([]))
    assert torch.equal(t.loss, loss) and torch.equal(t.count, count)
    # Mixed: only the usable entries count.
    t.update(
        torch.tensor([0, -1, 1, 2]),
        torch.tensor([3.0, 50.0, float("nan"), 7.0]),
        valid=torch.tensor([True, True, True, True]),
    )
    assert t.loss.tolist() == [2.0, 2.0, 7.0]
    assert t.count.tolist() == [2.0, 1.0, 1.0]


def test_update_does_not_keep_the_graph() -> None:
    t = DifficultyTracker(3)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    t.update(torch.tensor([0, 1]), x * 2)
    assert not t.loss.requires_grad


@settings(max_examples=50, deadline=None)
@given(
    num_keys=st.integers(1, 12),
    momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    batches=st.lists(
        st.lists(
            st.tuples(
                st.integers(-2, 14),
                st.one_of(st.floats(0, 20, allow_nan=False), st.just(float("nan"))),
                st.booleans(),
            ),
            min_size=0,
            max_size=20,
        ),
        min_size=1,
        max_size=6,
    ),
    temperature=st.sampled_from([0.5, 1.0, 3.0, -1.0, -0.25]),
)
def test_batched_update_and_weights_equal_the_naive_loop(
    num_keys: int, momentum: float, batches: list, temperature: float
) -> None:
    t = DifficultyTracker(num_keys, momentum=momentum)
    ema, count = [0.0] * num_keys, [0.0] * num_keys
    for batch in batches:
        keys = [k for k, _, _ in batch]
        losses = [x for _, x, _ in batch]
        valid = [v for _, _, v in batch]
        t.update(
            torch.tensor(keys, dtype=torch.long),
            torch.tensor(losses, dtype=torch.float32),
            valid=torch.tensor(valid, dtype=torch.bool),
        )
        reference_update(ema, count, momentum, keys, losses, valid)
        assert torch.allclose(t.loss, torch.tensor(ema), rtol=1e-5, atol=1e-4)
        assert t.count.tolist() == count
    all_keys = list(range(num_keys))
    got = t.weights(torch.tensor(all_keys), temperature=temperature)
    want = reference_weights(t.loss.tolist(), t.count.tolist(), all_keys, temperature)
    assert torch.allclose(got, torch.tensor(want), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# weights


def hard_tracker() -> DifficultyTracker:
    """Keys 0..4 seen with losses 1..5 (key 4 hardest); keys 5, 6 unseen."""
    t = DifficultyTracker(7, momentum=0.0)
    t.update(torch.arange(5), torch.arange(1.0, 6.0))
    return t


def test_weights_literal() -> None:
    t = DifficultyTracker(3, momentum=0.0)
    t.update(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))  # mean 2, std 1
    w = t.weights(torch.tensor([0, 1, 2]))
    assert torch.allclose(w, torch.tensor([math.exp(-1), math.exp(1), 1.0]))
    w2 = t.weights(torch.tensor([0, 1]), temperature=2.0)
    assert torch.allclose(w2, torch.tensor([math.exp(-0.5), math.exp(0.5)]))
    # Shape of the keys, any shape.
    assert t.weights(torch.tensor([[0, 1], [2, 2]])).shape == (2, 2)


def test_weights_increase_with_difficulty_for_positive_temperature() -> None:
    t = hard_tracker()
    w = t.weights(torch.arange(5), temperature=1.0)
    assert all(a < b for a, b in zip(w.tolist(), w.tolist()[1:]))


def test_weights_decrease_with_difficulty_for_negative_temperature() -> None:
    t = hard_tracker()
    w = t.weights(torch.arange(5), temperature=-1.0)
    assert all(a > b for a, b in zip(w.tolist(), w.tolist()[1:]))
    # Negative temperature mirrors positive: w(-T) = 1 / w(T).
    assert torch.allclose(w, 1.0 / t.weights(torch.arange(5), temperature=1.0))


def test_large_temperature_flattens_and_unseen_keys_weigh_one() -> None:
    t = hard_tracker()
    flat = t.weights(torch.arange(5), temperature=1e6)
    assert torch.allclose(flat, torch.ones(5), atol=1e-5)
    assert t.weights(torch.tensor([5, 6])).tolist() == [1.0, 1.0]
    # Nothing seen at all: every key weighs 1.
    assert DifficultyTracker(4).weights(torch.arange(4)).tolist() == [1.0] * 4


def test_weights_are_clipped() -> None:
    t = DifficultyTracker(100, momentum=0.0)
    t.update(torch.arange(100), torch.cat([torch.zeros(99), torch.tensor([1000.0])]))
    w = t.weights(torch.tensor([0, 99]), temperature=0.01)
    assert w[1].item() == pytest.approx(math.exp(10.0), rel=1e-5)
    assert w[0].item() == pytest.approx(math.exp(-10.0), rel=1e-5)


def test_out_of_range_keys_weigh_one_like_unseen_keys() -> None:
    t = hard_tracker()  # key 0 is the easiest, key 6 unseen
    t2 = DifficultyTracker(5, momentum=0.0)
    t2.update(torch.arange(5), torch.arange(1.0, 6.0))  # key 4, the last, is the hardest
    assert t.weights(torch.tensor([-1])).tolist() == [1.0]  # -1: padding / no word
    assert t2.weights(torch.tensor([5, 1000])).tolist() == [1.0, 1.0]


def test_temperature_zero_is_an_error() -> None:
    with pytest.raises(ValueError, match="temperature"):
        hard_tracker().weights(torch.arange(3), temperature=0)


def mask_frequency(
    weights: torch.Tensor, keys: torch.Tensor, exact: bool, draws: int = 200
) -> torch.Tensor:
    """How often each key is masked, over ``draws`` calls of sample_mask(rate=0.15)."""
    g = torch.Generator().manual_seed(0)
    valid = torch.ones_like(keys, dtype=torch.bool)
    hits = torch.zeros(int(keys.max()) + 1)
    seen = torch.bincount(keys.flatten(), minlength=hits.numel()).float() * draws
    for _ in range(draws):
        m = sample_mask(valid, 0.15, exact=exact, weights=weights, generator=g)
        hits += torch.bincount(keys[m], minlength=hits.numel()).float()
    return hits / seen


@pytest.mark.parametrize("exact", [False, True])
def test_hardest_key_is_masked_more_often_through_sample_mask(exact: bool) -> None:
    # 20 keys; key 19 is hard (loss 5), the others easy (loss ~1).
    t = DifficultyTracker(20, momentum=0.0)
    t.update(torch.arange(20), torch.cat([1.0 + 0.01 * torch.arange(19.0), torch.tensor([5.0])]))
    keys = torch.arange(20).repeat(8, 5)  # (8, 100), every key 5 times per row
    harder = mask_frequency(t.weights(keys, temperature=4.0), keys, exact)
    easier = mask_frequency(t.weights(keys, temperature=-4.0), keys, exact)
    uniform = mask_frequency(torch.ones(keys.shape), keys, exact)
    others = slice(0, 19)
    # ~16000 draws per key: the frequencies are known to about +-0.01.
    assert harder[19] > 2.0 * harder[others].mean()
    assert easier[19] < 0.5 * easier[others].mean()
    assert abs(uniform[19] - uniform[others].mean()) < 0.03
    # The overall masked fraction stays the rate.
    for freq in (harder, easier, uniform):
        assert abs(freq.mean().item() - 0.15) < 0.02


# --------------------------------------------------------------------------------------------
# state and errors


def test_state_dict_round_trip() -> None:
    a = DifficultyTracker(6, momentum=0.8)
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randint(0, 6, (10,), generator=g), torch.rand(10, generator=g) * 3) for _ in range(6)
    ]
    for keys, losses in batches[:3]:
        a.update(keys, losses)
    state = a.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    b = DifficultyTracker(6, momentum=0.1)
    b.load_state_dict(state)
    assert b.momentum == 0.8
    assert torch.equal(a.loss, b.loss) and torch.equal(a.count, b.count)
    for keys, losses in batches[3:]:
        a.update(keys, losses)
        b.update(keys, losses)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.count, b.count)
    assert torch.equal(a.weights(torch.arange(6)), b.weights(torch.arange(6)))
    # A snapshot, not a view.
    assert not torch.equal(state["count"], a.count)
    assert "seen=" in repr(a)


@pytest.mark.parametrize(
    ("make", "exc", "shown"),
    [
        (lambda: DifficultyTracker(0), ValueError, "0"),
        (lambda: DifficultyTracker(2.5), ValueError, "2.5"),
        (lambda: DifficultyTracker(True), ValueError, "True"),
        (lambda: DifficultyTracker(4, momentum=1.0), ValueError, "1.0"),
        (
            lambda: DifficultyTracker(4).update(torch.tensor([0, 1]), torch.tensor([1.0])),
            ValueError,
            r"\(2,\)",
        ),
        (
            lambda: DifficultyTracker(4).update(torch.tensor([0.0]), torch.tensor([1.0])),
            TypeError,
            "float32",
        ),
        (
            lambda: DifficultyTracker(4).update(torch.tensor([True]), torch.tensor([1.0])),
            TypeError,
            "bool",
        ),
    ],
)
def test_bad_input_raises_with_the_value(make, exc: type[Exception], shown: str) -> None:
    with pytest.raises(exc, match=shown):
        make()


# --------------------------------------------------------------------------------------------
# sync() under torch.distributed (gloo, 2 ranks): idempotent, as the controller's

SYNCS = 200


def _sync_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import traceback
    from pathlib import Path

    import torch.distributed as dist

    out = Path(out_dir)
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
        )
        g = torch.Generator().manual_seed(rank)
        t = DifficultyTracker(6, momentum=0.9)
        observed = torch.zeros(6)  # observations made on this rank
        history = []
        for i in range(SYNCS):
            if i % 2 == 0:  # every other sync: new observations on both ranks
                keys = torch.randint(0, 6, (8,), generator=g)
                t.update(keys, torch.rand(8, generator=g) * (rank + 1))
                observed += torch.bincount(keys, minlength=6).float()
            t.sync()
            history.append((t.loss.clone(), t.count.clone()))
        total = observed.clone()
        dist.all_reduce(total)
        torch.save({"history": history, "total": total}, out / f"rank{rank}.pt")
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_sync_is_idempotent_over_many_syncs(tmp_path) -> None:
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    error: BaseException | None = None
    try:
        mp.spawn(_sync_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    except BaseException as e:  # the rank's traceback is in its .err file
        error = e
    errors = {p.name: p.read_text() for p in sorted(tmp_path.glob("rank*.err"))}
    assert not errors and error is None, (error, errors)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for (l0, c0), (l1, c1) in zip(r0["history"], r1["history"]):
        assert torch.equal(l0, l1) and torch.equal(c0, c1)  # every rank holds the same state
        assert torch.isfinite(l0).all() and torch.isfinite(c0).all()
    # The count is the number of observations made on all ranks, however often they synced.
    assert torch.equal(r0["history"][-1][1], r0["total"])
    # A sync with nothing new observed since the last changes nothing.
    for i in range(1, SYNCS, 2):
        assert torch.equal(r0["history"][i][0], r0["history"][i - 1][0])
        assert torch.equal(r0["history"][i][1], r0["history"][i - 1][1])
    final = DifficultyTracker(6)
    final.load_state_dict({"loss": r0["history"][-1][0], "count": r0["total"], "momentum": 0.9})
    assert torch.isfinite(final.weights(torch.arange(6))).all()
