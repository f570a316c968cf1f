"""reliability(): per-position loss, correctness and confidence from logits and labels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from maskwise.dynamic import Reliability, reliability


def random_case(shape: tuple[int, ...], classes: int, seed: int, ignore_index: int = -100):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, classes, generator=g) * 3
    labels = torch.randint(0, classes, shape, generator=g)
    labels = labels.masked_fill(torch.rand(shape, generator=g) < 0.3, ignore_index)
    return logits, labels


@pytest.mark.parametrize("shape", [(7,), (3, 11), (2, 3, 5)], ids=["N", "BL", "BLK"])
def test_loss_equals_cross_entropy_on_valid_positions(shape: tuple[int, ...]) -> None:
    logits, labels = random_case(shape, classes=13, seed=len(shape))
    r = reliability(logits, labels)
    want = F.cross_entropy(logits.reshape(-1, 13), labels.reshape(-1), reduction="none").reshape(
        shape
    )
    assert r.loss.shape == r.correct.shape == r.confidence.shape == r.valid.shape == labels.shape
    valid = labels != -100
    assert torch.equal(r.valid, valid)
    assert valid.any() and (~valid).any()
    assert torch.allclose(r.loss[valid], want[valid], atol=1e-5)
    assert (r.loss[~valid] == 0).all()
    # correct / confidence against argmax / softmax
    probs = logits.softmax(-1)
    assert torch.equal(r.correct, (logits.argmax(-1) == labels) & valid)
    assert torch.allclose(r.confidence, probs.max(-1).values, atol=1e-6)
    assert r.correct.dtype == torch.bool and r.valid.dtype == torch.bool
    # The mean loss is the mean cross-entropy.
    m = r.mean()
    assert m["loss"].item() == pytest.approx(
        F.cross_entropy(logits.reshape(-1, 13), labels.reshape(-1)).item(), abs=1e-5
    )
    assert m["accuracy"].item() == pytest.approx(r.correct[valid].float().mean().item())
    assert m["confidence"].item() == pytest.approx(r.confidence[valid].mean().item(), abs=1e-6)


def test_literal_two_classes() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [0.0, 0.0]])
    labels = torch.tensor([0, 0, -100, 1])
    r = reliability(logits, labels)
    assert r.correct.tolist() == [True, False, False, False]  # ties: argmax picks class 0
    assert r.valid.tolist() == [True, True, False, True]
    s = 1 / (1 + math.exp(-2.0))  # softmax of a margin of 2
    t = 1 / (1 + math.exp(-3.0))
    assert torch.allclose(r.confidence, torch.tensor([s, t, 0.5, 0.5]))
    assert torch.allclose(r.loss, torch.tensor([-math.log(s), -math.log(1 - t), 0.0, math.log(2)]))
    m = r.mean()
    assert m["accuracy"].item() == pytest.approx(1 / 3)
    assert m["loss"].item() == pytest.approx((-math.log(s) - math.log(1 - t) + math.log(2)) / 3)
    assert m["confidence"].item() == pytest.approx((s + t + 0.5) / 3)


def test_custom_ignore_index() -> None:
    logits, labels = random_case((4, 6), classes=5, seed=9, ignore_index=-1)
    r = reliability(logits, labels, ignore_index=-1)
    assert torch.equal(r.valid, labels != -1)
    want = F.cross_entropy(
        logits.reshape(-1, 5), labels.reshape(-1), reduction="none", ignore_index=-1
    )
    assert torch.allclose(r.loss.reshape(-1), want, atol=1e-5)
    # With the default ignore_index, -1 is not ignored: it is a (bad) label, and valid.
    assert reliability(logits, torch.where(labels < 0, 0, labels)).valid.all()


def test_no_gradient_and_low_precision_logits() -> None:
    logits, labels = random_case((3, 4), classes=7, seed=1)
    x = logits.clone().requires_grad_()
    r = reliability(x, labels)
    assert not r.loss.requires_grad and not r.confidence.requires_grad
    half = reliability(logits.to(torch.bfloat16), labels)
    assert half.loss.dtype == torch.float32
    assert torch.allclose(half.loss, r.loss, atol=0.1)


def test_mean_is_nan_when_nothing_is_valid() -> None:
    logits = torch.randn(2, 3, 4)
    r = reliability(logits, torch.full((2, 3), -100))
    assert not r.valid.any()
    m = r.mean()
    assert set(m) == {"loss", "accuracy", "confidence"}
    assert all(v.dim() == 0 and math.isnan(v.item()) for v in m.values())


def test_is_a_named_tuple() -> None:
    r = reliability(torch.randn(2, 3), torch.tensor([0, 1]))
    assert isinstance(r, Reliability) and r._fields == ("loss", "correct", "confidence", "valid")


@pytest.mark.parametrize(
    ("logits_shape", "labels_shape"), [((2, 3, 4), (2, 4)), ((5, 4), (4,)), ((2, 3, 4), (3, 2))]
)
def test_shape_mismatch_is_an_error(logits_shape: tuple, labels_shape: tuple) -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., C\)"):
        reliability(torch.randn(*logits_shape), torch.zeros(labels_shape, dtype=torch.long))


@pytest.mark.parametrize("shape", [(7,), (3, 11), (2, 3, 5)], ids=["N", "BL", "BLK"])
def test_from_the_steps_losses_equals_the_full_computation(shape: tuple[int, ...]) -> None:
    logits, labels = random_case(shape, classes=13, seed=10 + len(shape))
    ce = F.cross_entropy(
        logits.reshape(-1, 13), labels.reshape(-1), reduction="none", ignore_index=-100
    ).reshape(shape)
    full, light = reliability(logits, labels), reliability(logits, labels, losses=ce)
    valid = full.valid
    assert torch.equal(light.valid, valid) and torch.equal(light.correct, full.correct)
    assert torch.allclose(light.loss, full.loss, atol=1e-5)
    assert torch.allclose(light.confidence[valid], full.confidence[valid], atol=1e-5)
    assert (light.confidence[~valid] == 0).all()
    for k, v in full.mean().items():
        assert light.mean()[k].item() == pytest.approx(v.item(), abs=1e-5)


def test_from_losses_needs_their_shape_and_uses_no_log_softmax(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logits, labels = random_case((4, 6), classes=5, seed=3)
    with pytest.raises(ValueError, match="losses must have the shape of labels"):
        reliability(logits, labels, losses=torch.zeros(4))

    def no_log_softmax(*args: object, **kwargs: object) -> None:
        raise AssertionError("log_softmax called")

    monkeypatch.setattr(torch, "log_softmax", no_log_softmax)
    ce = torch.zeros(4, 6)
    assert reliability(logits, labels, losses=ce).loss.shape == (4, 6)
