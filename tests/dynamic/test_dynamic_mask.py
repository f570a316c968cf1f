"""maskwise.nn.DynamicMask: train / eval, the three kinds of rate, the tracker's weights, the
monitor, the step buffer, checkpoint / resume of every piece of maskwise state, a tiny model
trained end to end, and the other maskers (FeatureMask, PatchMask, SpecAugment, TimeSpanMask)."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from torch import nn

from maskwise.collators import MLMCollator, pad_examples
from maskwise.dynamic import (
    DifficultyTracker,
    ReliabilityController,
    cosine,
    linear,
    reliability,
    step,
)
from maskwise.functional import SpecAugmentResult
from maskwise.monitor import MaskMonitor
from maskwise.nn import (
    DynamicMask,
    FeatureMask,
    PatchMask,
    SpecAttention,
    SpecAugment,
    TimeSpanMask,
    TokenMask,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL = (PAD, CLS, SEP, MASK)
V = 50  # ids 4..49 are words


def token_ids(b: int = 8, length: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, V, (b, length), generator=g)


def token_mask(rate: float = 0.3, seed: int = 0, **kwargs: Any) -> TokenMask:
    return TokenMask(rate, mask_id=MASK, special_ids=SPECIAL, seed=seed, **kwargs)


# The rate bounds these tests assume, whatever the controller's defaults are.
FREE = dict(min_rate=0.0, max_rate=0.9)


def perfect_logits(labels: torch.Tensor, classes: int = V) -> torch.Tensor:
    """Logits that predict ``labels`` (any class where labels are ignored)."""
    return 10.0 * nn.functional.one_hot(labels.clamp_min(0), classes).float()


# --------------------------------------------------------------------------------------------
# train / eval and the rate sources


def test_eval_is_the_identity_with_an_all_false_mask() -> None:
    dm = DynamicMask(token_mask(0.5), 0.5)
    ids = token_ids()
    dm.eval()
    out, mask = dm(ids)
    assert out is ids
    assert mask.shape == ids.shape and mask.dtype == torch.bool and not mask.any()
    assert int(dm.step) == 0  # eval forwards are not training steps
    dm.train()
    out, mask = dm(ids)
    assert mask.any() and (out[mask] == MASK).all() and torch.equal(out[~mask], ids[~mask])
    assert int(dm.step) == 1


def test_float_rate() -> None:
    dm = DynamicMask(token_mask(0.9), 0.25)
    masks = [dm(token_ids(seed=s))[1] for s in range(10)]
    assert dm.masker.rate == 0.25 and dm.current_rate() == 0.25
    assert abs(torch.stack(masks).float().mean().item() - 0.25) < 0.03


def test_schedule_rate_changes_with_the_step() -> None:
    dm = DynamicMask(token_mask(0.0), linear(0.0, 0.8, 4))
    ids = token_ids(b=16, length=100)
    realised, rates = [], []
    for _ in range(6):
        rates.append(dm.current_rate())
        realised.append(dm(ids)[1].float().mean().item())
        assert dm.masker.rate == rates[-1]
    assert rates == [0.0, 0.2, 0.4, 0.6, 0.8, 0.8]
    assert realised[0] == 0.0
    for r, want in zip(realised[1:], rates[1:]):
        assert abs(r - want) < 0.05  # 1600 tokens: sd <= 0.0125
    # A step schedule too.
    dm = DynamicMask(token_mask(), step([0.1, 0.6], [2]))
    assert [dm(ids) and dm.masker.rate for _ in range(4)] == [0.1, 0.1, 0.6, 0.6]


@pytest.mark.parametrize("direction", ["seed", "curriculum"])
def test_controller_rate_moves_the_right_way_with_observe(direction: str) -> None:
    ids = token_ids()
    for reliable in (True, False):
        c = ReliabilityController(
            0.3, target=0.5, gain=0.5, momentum=0.0, max_delta=0.05, direction=direction
        )
        dm = DynamicMask(token_mask(), c)
        assert dm.controller is c
        rates = [dm.current_rate()]
        for _ in range(3):
            noisy, mask = dm(ids)
            assert dm.masker.rate == rates[-1]
            labels = ids.masked_fill(~mask, -100)
            logits = perfect_logits(labels if reliable else (labels + 1) % V)
            new = dm.observe(logits, labels)
            assert new == c.rate == dm.current_rate()
            rates.append(new)
        up = (direction == "curriculum") == reliable
        want = [0.3, 0.35, 0.4, 0.45] if up else [0.3, 0.25, 0.2, 0.15]
        assert rates == pytest.approx(want)
        assert c.updates == 3


def test_observe_uses_valid_positions_only_and_precomputed_reliability() -> None:
    c = ReliabilityController(0.3, target=0.5, momentum=0.0)
    dm = DynamicMask(token_mask(), c)
    labels = torch.tensor([[5, -100, 7, -100]])
    logits = perfect_logits(torch.tensor([[5, 9, 8, 9]]))  # right on 1 of 2 valid positions
    dm.observe(logits, labels)
    assert c.smoothed == pytest.approx(0.5)
    dm.observe(reliability=reliability(perfect_logits(labels), labels))
    assert c.smoothed == pytest.approx(1.0)
    # Loss as the signal: the per-position cross-entropy over valid positions.
    cl = ReliabilityController(0.3, signal="loss", target=1.0, momentum=0.0)
    DynamicMask(token_mask(), cl).observe(logits, labels)
    r = reliability(logits, labels)
    assert cl.smoothed == pytest.approx(r.loss[r.valid].mean().item())
    with pytest.raises(ValueError, match="logits and labels"):
        dm.observe(logits)


def test_heldout_gap_observes_the_step_loss_without_touching_the_logits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import maskwise.dynamic.feedback as feedback

    def no_pass(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("reliability() computed: a second pass over the logits")

    monkeypatch.setattr(feedback, "compute_reliability", no_pass)
    c = ReliabilityController(
        0.0, signal="heldout_gap", min_rate=0.0, momentum=0.0, gain=0.5, max_delta=1.0
    )
    dm = DynamicMask(token_mask(), c)
    labels = torch.tensor([[5, -100, 7, -100]])
    logits = perfect_logits(labels)
    assert dm.observe(logits, labels, loss=torch.tensor(1.0)) == 0.0  # no reference yet
    assert c.updates == 0
    c.set_reference(2.0)
    assert dm.observe(logits, labels, loss=torch.tensor(1.0)) == pytest.approx(0.25)
    assert dm.observe(loss=1.0) == pytest.approx(0.5)  # the loss alone is enough
    # Without a scalar loss, the mean per-position loss of the logits stands in.
    monkeypatch.undo()
    dm.observe(logits, labels)
    assert c.smoothed == pytest.approx(1.0 - float(reliability(logits, labels).mean()["loss"]) / 2)
    with pytest.raises(ValueError, match="loss="):
        dm.observe(logits)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="Linear"):
        DynamicMask(nn.Linear(2, 2), 0.3)
    with pytest.raises(TypeError, match="str"):
        DynamicMask(token_mask(), "0.3")


# --------------------------------------------------------------------------------------------
# tracker, monitor, step buffer


def masked_share(
    dm: DynamicMask, ids: torch.Tensor, hard: torch.Tensor, draws: int = 40, **kw: Any
) -> tuple[float, float]:
    """(share of hard tokens masked, share of easy tokens masked) over ``draws`` forwards."""
    hits_hard = hits_easy = 0
    for _ in range(draws):
        mask = dm(ids, **kw)[1]
        hits_hard += int(mask[hard].sum())
        hits_easy += int(mask[~hard].sum())
    n_hard, n_easy = int(hard.sum()) * draws, int((~hard).sum()) * draws
    return hits_hard / n_hard, hits_easy / n_easy


@pytest.mark.parametrize("temperature", [1.0, -1.0])
def test_tracker_weights_reach_the_token_mask(temperature: float) -> None:
    tracker = DifficultyTracker(V, momentum=0.0)
    all_ids = torch.arange(4, V)
    tracker.update(all_ids, torch.where(all_ids >= 40, 4.0, 1.0))  # ids 40..49 are hard
    dm = DynamicMask(token_mask(seed=1), 0.15, tracker=tracker, temperature=temperature)
    ids = token_ids(b=16, length=64, seed=2)
    hard = ids >= 40
    hard_share, easy_share = masked_share(dm, ids, hard)
    if temperature > 0:
        assert hard_share > 2.0 * easy_share
    else:
        assert hard_share < 0.5 * easy_share
    # Without a tracker the two groups are masked alike.
    plain = DynamicMask(token_mask(seed=1), 0.15)
    h, e = masked_share(plain, ids, hard)
    assert abs(h - e) < 0.04


def test_tracker_keys_argument_and_observe_updates_the_tracker() -> None:
    positions = torch.arange(32).expand(16, 32)
    tracker = DifficultyTracker(32, momentum=0.0)
    tracker.update(torch.arange(32), torch.where(torch.arange(32) == 5, 5.0, 1.0))
    dm = DynamicMask(token_mask(seed=3), 0.1, tracker=tracker)
    ids = token_ids(b=16, length=32, seed=4)
    hard_share, easy_share = masked_share(dm, ids, positions == 5, keys=positions)
    assert hard_share > 3.0 * easy_share
    # observe(keys=...) feeds the per-position losses of valid positions to the tracker.
    t2 = DifficultyTracker(V, momentum=0.0)
    dm2 = DynamicMask(token_mask(), 0.3, tracker=t2)
    labels = torch.tensor([[10, -100, 11]])
    logits = perfect_logits(torch.tensor([[10, 0, 0]]))
    dm2.observe(logits, labels, keys=torch.tensor([[10, 12, 11]]))
    r = reliability(logits, labels)
    assert t2.count[[10, 11, 12]].tolist() == [1.0, 1.0, 0.0]
    assert torch.allclose(t2.loss[[10, 11]], r.loss[0, [0, 2]])


def test_per_sample_rates_follow_the_example_tracker() -> None:
    tracker = DifficultyTracker(10)
    # examples 0-4 memorised (loss 0.1), 5-9 not (loss 3.0)
    tracker.update(torch.arange(10), torch.tensor([0.1] * 5 + [3.0] * 5))
    dm = DynamicMask(token_mask(0.3), 0.3, tracker=tracker, temperature=-1.0, per_sample=True)
    ids = token_ids(b=10, length=200)
    examples = torch.arange(10)
    rates = dm._sample_rates(0.3, examples)
    # Literal: weights e^{+1} (easy) and e^{-1} (hard), normalised to the batch mean.
    e = math.e
    easy, hard = 0.3 * e / ((e + 1 / e) / 2), 0.3 * (1 / e) / ((e + 1 / e) / 2)
    assert rates[:5].tolist() == pytest.approx([easy] * 5)
    assert rates[5:].tolist() == pytest.approx([hard] * 5)
    assert float(rates.mean()) == pytest.approx(0.3)
    mask = dm(ids, keys=examples)[1]
    share = mask.float().mean(1)
    assert float(share[:5].mean()) == pytest.approx(easy, abs=0.05)
    assert float(share[5:].mean()) == pytest.approx(hard, abs=0.05)
    assert dm.masker.rate == 0.3  # the batch's rate, back in the masker's state
    # The context gives the keys to a masker called without them; same draws as keys=.
    a = DynamicMask(token_mask(0.3), 0.3, tracker=tracker, temperature=-1.0, per_sample=True)
    with a.sample_keys(examples):
        in_context = a(ids)[1]
    assert torch.equal(in_context, mask)
    with pytest.raises(ValueError, match="example ids"):
        a(ids)


def test_per_sample_observe_keys_examples_by_their_mean_loss() -> None:
    tracker = DifficultyTracker(4, momentum=0.0)
    dm = DynamicMask(token_mask(0.2), 0.2, tracker=tracker, per_sample=True)
    labels = torch.tensor([[5, 6, -100], [7, -100, -100]])
    logits = perfect_logits(labels)
    logits[0, 1] = 0.0  # a wrong position in example 2's row
    losses = reliability(logits, labels).loss
    dm.observe(logits, labels, keys=torch.tensor([2, 0]))
    assert tracker.count.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert tracker.loss[2].item() == pytest.approx(float(losses[0, :2].mean()))
    assert tracker.loss[0].item() == pytest.approx(float(losses[1, 0]))


def test_per_sample_needs_a_tracker_and_a_per_sample_masker() -> None:
    with pytest.raises(ValueError, match="tracker"):
        DynamicMask(token_mask(), 0.2, per_sample=True)
    with pytest.raises(ValueError, match="one rate per batch"):
        DynamicMask(SpecAugment(0.5, seed=0), 0.2, tracker=DifficultyTracker(4), per_sample=True)


def test_monitor_records_rows() -> None:
    mon = MaskMonitor()
    c = ReliabilityController(0.3, target=0.5, momentum=0.0, direction="seed", **FREE)
    dm = DynamicMask(token_mask(), c, monitor=mon)
    ids = token_ids()
    _, mask = dm(ids)
    labels = ids.masked_fill(~mask, -100)
    dm.observe(perfect_logits(labels), labels)
    dm.eval()
    dm(ids)  # eval: nothing recorded
    assert len(mon.rows) == 2
    fwd, obs = mon.rows
    assert fwd["step"] == 0 and fwd["rate"] == pytest.approx(0.3)
    assert fwd["masked_fraction"] == pytest.approx(mask.float().mean().item())
    assert obs["step"] == 1 and obs["accuracy"] == 1.0 and obs["rate"] == pytest.approx(c.rate)
    assert obs["rate"] < fwd["rate"]


def test_step_buffer_is_in_the_state_dict() -> None:
    dm = DynamicMask(token_mask(), linear(0.1, 0.5, 4))
    for _ in range(3):
        dm(token_ids())
    state = dm.state_dict()
    assert int(state["step"]) == 3
    fresh = DynamicMask(token_mask(), linear(0.1, 0.5, 4))
    assert fresh.current_rate() == 0.1
    fresh.load_state_dict(state)
    assert int(fresh.step) == 3 and fresh.current_rate() == dm.current_rate() == 0.4
    assert "step=3" in repr(fresh)


# --------------------------------------------------------------------------------------------
# checkpoint / resume


N_EXAMPLES = 24


def examples() -> list[list[int]]:
    g = torch.Generator().manual_seed(42)
    out = []
    for _ in range(N_EXAMPLES):
        n = int(torch.randint(8, 20, (), generator=g))
        out.append([CLS, *torch.randint(4, V, (n,), generator=g).tolist(), SEP])
    return out


def build(keyed: bool, seed_offset: int = 0) -> dict[str, Any]:
    """Every maskwise object of a run. ``seed_offset`` makes fresh objects whose own seeds differ
    from the saved ones (so the restored state, not the constructor, must decide the masks)."""
    c = ReliabilityController(
        0.3, target=0.5, gain=0.5, momentum=0.5, max_delta=0.05, direction="seed", **FREE
    )
    tracker = DifficultyTracker(V, momentum=0.5)
    dm = DynamicMask(token_mask(0.3, seed=11 + seed_offset), c, tracker=tracker)
    # A collator whose rate follows a schedule, and one whose rate follows the controller.
    kw = dict(mask_id=MASK, pad_id=PAD, vocab_size=V, special_ids=SPECIAL)
    sched = MLMCollator(rate=cosine(0.4, 0.1, 10), seed=5 + seed_offset, **kw)
    ctrl = MLMCollator(rate=c, seed=6 + seed_offset, index_key="idx" if keyed else None, **kw)
    return {"controller": c, "tracker": tracker, "module": dm, "sched": sched, "ctrl": ctrl}


W = torch.Generator().manual_seed(0)
READOUT = torch.randn(V, V, generator=W)  # the fake model: logits = READOUT[input id]


def train_step(o: dict[str, Any], t: int, data: list[list[int]]) -> dict[str, torch.Tensor]:
    rows = [(4 * t + j) % N_EXAMPLES for j in range(4)]
    o["sched"].set_epoch(t // 6)
    o["sched"].set_step(t)
    o["ctrl"].set_epoch(t // 6)
    keyed = [{"input_ids": data[i], "idx": i} for i in rows]
    b_sched = o["sched"](keyed)
    b_ctrl = o["ctrl"](keyed)
    batch = pad_examples([data[i] for i in rows], pad_id=PAD)
    ids = batch["input_ids"]
    noisy, mask = o["module"](ids, batch["attention_mask"])
    labels = ids.masked_fill(~mask, -100)
    # Deterministic "model": a fixed readout of the noisy input plus step-seeded noise.
    noise = torch.randn(*ids.shape, V, generator=torch.Generator().manual_seed(1000 + t))
    logits = READOUT[noisy] + 3.0 * noise
    o["module"].observe(logits, labels, keys=ids)
    return {
        "mask": mask,
        "noisy": noisy,
        "sched_labels": b_sched["labels"],
        "ctrl_labels": b_ctrl["labels"],
        "ctrl_inputs": b_ctrl["input_ids"],
        "rate": torch.tensor(o["controller"].rate),
        "tracker": o["tracker"].loss.clone(),
    }


def save(o: dict[str, Any]) -> dict[str, Any]:
    state = {
        "module": o["module"].state_dict(),
        "controller": o["controller"].state_dict(),
        "tracker": o["tracker"].state_dict(),
        "sched": o["sched"].state_dict(),
        "ctrl": o["ctrl"].state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # a checkpoint loads without pickled code


def restore(o: dict[str, Any], state: dict[str, Any]) -> None:
    o["module"].load_state_dict(state["module"])
    o["controller"].load_state_dict(state["controller"])
    o["tracker"].load_state_dict(state["tracker"])
    o["sched"].load_state_dict(state["sched"])
    o["ctrl"].load_state_dict(state["ctrl"])


@pytest.mark.parametrize(
    "keyed",
    [
        True,
        False,
    ],
    ids=["keyed", "stream"],
)
def test_checkpoint_resume_gives_the_masks_of_the_uninterrupted_run(keyed: bool) -> None:
    data = examples()
    before, after = 5, 7
    run = build(keyed)
    for t in range(before):
        train_step(run, t, data)
    state = save(run)
    uninterrupted = [train_step(run, t, data) for t in range(before, before + after)]

    fresh = build(keyed, seed_offset=100)
    # Sanity: the fresh objects alone would draw other masks.
    probe = build(keyed, seed_offset=100)
    assert not torch.equal(train_step(probe, before, data)["mask"], uninterrupted[0]["mask"])
    restore(fresh, state)
    assert int(fresh["module"].step) == before
    resumed = [train_step(fresh, t, data) for t in range(before, before + after)]

    # The rate moved during the run (the controller is live) and the masks varied.
    rates = [float(r["rate"]) for r in uninterrupted]
    assert len(set(rates)) > 1
    assert not torch.equal(uninterrupted[0]["mask"], uninterrupted[1]["mask"])
    for t, (u, r) in enumerate(zip(uninterrupted, resumed)):
        for key in ("mask", "noisy", "sched_labels", "rate", "tracker"):
            assert torch.equal(u[key], r[key]), (t, key)
        for key in ("ctrl_labels", "ctrl_inputs"):
            assert torch.equal(u[key], r[key]), (t, key)


# --------------------------------------------------------------------------------------------
# a tiny model, end to end


class TokenClassifier(nn.Module):
    def __init__(self, vocab: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 32)
        self.attn = SpecAttention(32, 4)
        self.head = nn.Linear(32, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)  # (B, L, 32)
        return self.head(h + self.attn(h))  # (B, L, C)


def test_tiny_model_trains_with_dynamic_masking() -> None:
    torch.manual_seed(0)
    classes = 5
    model = TokenClassifier(V, classes)
    c = ReliabilityController(
        0.1,
        target=0.7,
        gain=0.5,
        momentum=0.5,
        max_delta=0.03,
        direction="curriculum",
        min_rate=0.05,
        max_rate=0.5,
    )
    mon = MaskMonitor()
    tracker = DifficultyTracker(V, momentum=0.5)
    dm = DynamicMask(token_mask(seed=0), c, tracker=tracker, monitor=mon)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(1)
    losses, rates = [], []
    for _ in range(30):
        ids = torch.randint(4, V, (16, 24), generator=g)
        labels = ids % classes  # the class of every token
        noisy, mask = dm(ids)
        logits = model(noisy)
        loss = nn.functional.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        rates.append(dm.observe(logits.detach(), labels, keys=ids))
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert all(0.05 <= r <= 0.5 for r in rates)
    assert max(rates) > 0.1  # accuracy passed the target: the curriculum raised the rate
    assert c.updates == 30 and int(dm.step) == 30
    assert len(mon.rows) == 60
    assert (tracker.count[4:] > 0).all()


# --------------------------------------------------------------------------------------------
# other maskers


def test_with_feature_mask() -> None:
    dm = DynamicMask(FeatureMask(0.0, seed=0), linear(0.2, 0.6, 2))
    x = torch.ones(8, 50, 16)
    fractions = []
    for want in (0.2, 0.4, 0.6):
        out, mask = dm(x)
        assert out.shape == x.shape and mask.shape == x.shape
        assert torch.equal(out, x * (~mask))
        fractions.append(mask.float().mean().item())
        assert abs(fractions[-1] - want) < 0.03
    dm.eval()
    out, mask = dm(x)
    assert out is x and not mask.any()


def test_with_patch_mask() -> None:
    c = ReliabilityController(
        0.5, target=0.5, gain=1.0, momentum=0.0, max_delta=0.25, direction="seed", **FREE
    )
    dm = DynamicMask(PatchMask(0.0, drop=True, seed=0), c)
    x = torch.randn(4, 16, 8)
    vis, mask = dm(x)
    assert mask.sum(1).tolist() == [8] * 4 and vis.shape == (4, 8, 8)
    dm.observe(perfect_logits(torch.tensor([1, 2]), 4), torch.tensor([1, 2]))  # accuracy 1
    assert c.rate == pytest.approx(0.25)
    vis, mask = dm(x)
    assert mask.sum(1).tolist() == [4] * 4 and vis.shape == (4, 12, 8)
    dm.eval()
    out, mask = dm(x)
    assert out is x and not mask.any()


def test_with_spec_augment() -> None:
    dm = DynamicMask(
        SpecAugment(freq_masks=1, freq_width=10, time_masks=4, time_width=20, seed=0),
        linear(1.0, 0.5, 1),
    )
    spec = torch.randn(3, 40, 200) + 5.0
    lengths = torch.tensor([200, 150, 100])
    out = dm(spec, lengths=lengths)
    assert isinstance(out, SpecAugmentResult)  # passed through, not squeezed into a pair
    assert out.spec.shape == spec.shape and out.freq_masked.shape == (3, 40)
    assert out.time_masked.shape == (3, 200)
    assert not out.time_masked[1, 150:].any() and not out.time_masked[2, 100:].any()
    assert dm.masker.rate == 1.0
    out2 = dm(spec, lengths=lengths)
    assert dm.masker.rate == 0.5  # 2 time masks, and 0 or 1 frequency mask (0.5 * 1)
    assert dm.masker.draw_mask_counts()[1] == 2
    assert isinstance(out2, SpecAugmentResult)
    dm.eval()
    out3 = dm(spec, lengths=lengths)
    assert out3.spec is spec and not out3.freq_masked.any() and not out3.time_masked.any()


def test_spec_augment_rate_reaching_zero_masks_nothing() -> None:
    dm = DynamicMask(
        SpecAugment(freq_masks=2, freq_width=10, time_masks=2, seed=0), linear(0.5, 0.0, 1)
    )
    spec = torch.randn(4, 40, 100)
    assert dm(spec).mask.any()
    zero = dm(spec)
    assert dm.masker.rate == 0.0 and zero.spec is spec and not zero.mask.any()


def test_spec_augment_legacy_rate_zero_keeps_frequency_masks() -> None:
    spec = torch.randn(4, 40, 100)
    kw = dict(freq_masks=2, freq_width=10, time_masks=2, rate_scales="time_masks", seed=0)
    small = SpecAugment(0.01, **kw)(spec)
    zero = SpecAugment(0.0, **kw)(spec)
    assert not small.time_masked.any() and small.freq_masked.any()  # round(0.02) = 0 time masks
    assert not zero.time_masked.any()
    assert zero.freq_masked.any()


def test_with_time_span_mask() -> None:
    dm = DynamicMask(TimeSpanMask(0.0, span=5, mask_token_dim=8, seed=0), step([0.2, 0.8], [1]))
    x = torch.randn(16, 200, 8)
    lengths = torch.full((16,), 200)
    lengths[0] = 120
    out1, m1 = dm(x, lengths=lengths)
    out2, m2 = dm(x, lengths=lengths)
    assert m1.shape == (16, 200) and out1.shape == x.shape
    assert not m1[0, 120:].any() and not m2[0, 120:].any()
    # About 1 - exp(-rate) of the frames: 0.18 then 0.55.
    assert 0.1 < m1[1:].float().mean().item() < 0.26
    assert 0.45 < m2[1:].float().mean().item() < 0.65
    assert torch.equal(out1[~m1], x[~m1])
    assert torch.allclose(out2[m2], dm.masker.mask_token.expand_as(out2)[m2])
