"""``consistency_loss``: literal values, a naive reference, gradients only where each kind says,
padding and unconfident positions contribute nothing, stability for large logits, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from maskwise.functional.consistency import CONSISTENCY_KINDS, consistency_loss


def _reference(p_logits, t_logits, kind, valid=None, temperature=1.0, t_temp=None, threshold=None):
    """Loops over positions in float64 with plain probabilities."""
    t_temp = temperature if t_temp is None else t_temp
    P = torch.softmax(p_logits.double() / temperature, -1).reshape(-1, p_logits.shape[-1])
    T = torch.softmax(t_logits.double() / t_temp, -1).reshape(-1, p_logits.shape[-1])
    v = torch.ones(P.shape[0], dtype=torch.bool) if valid is None else valid.reshape(-1)
    total, n = 0.0, 0
    for i in range(P.shape[0]):
        if not v[i] or (threshold is not None and float(T[i].max()) < threshold):
            continue
        p, t = P[i].tolist(), T[i].tolist()
        kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731
        if kind == "sym_kl":
            d = 0.5 * (kl(t, p) + kl(p, t))
        elif kind == "js":
            m = [(x + y) / 2 for x, y in zip(p, t)]
            d = 0.5 * (kl(p, m) + kl(t, m))
        else:
            d = kl(t, p)
        total, n = total + d, n + 1
    return total / n if n else 0.0


@pytest.mark.parametrize("kind", CONSISTENCY_KINDS)
def test_zero_for_equal_inputs(kind: str) -> None:
    x = torch.randn(4, 7, 11)
    assert float(consistency_loss(x, x.clone(), kind=kind)) == pytest.approx(0.0, abs=1e-6)


def test_known_values() -> None:
    p = torch.tensor([[0.0, 0.0]])  # (1/2, 1/2)
    t = torch.tensor([[math.log(3.0), 0.0]])  # (3/4, 1/4)
    kl_tp = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    kl_pt = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert float(consistency_loss(p, t, kind="kl")) == pytest.approx(kl_tp, abs=1e-6)
    assert float(consistency_loss(p, t)) == pytest.approx((kl_tp + kl_pt) / 2, abs=1e-6)
    m = (0.625, 0.375)
    js = 0.5 * (
        0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
        + 0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])
    )  # fmt: skip
    assert float(consistency_loss(p, t, kind="js")) == pytest.approx(js, abs=1e-6)


@pytest.mark.parametrize("kind", CONSISTENCY_KINDS)
@pytest.mark.parametrize("shape", [(5, 3), (3, 6, 9)])
def test_matches_reference(kind: str, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(*shape, generator=g) * 3, torch.randn(*shape, generator=g) * 3
    valid = torch.rand(shape[:-1], generator=g) > 0.3
    for kw in ({}, {"valid": valid}, {"temperature": 2.0}, {"target_temperature": 0.4},
               {"threshold": 0.6, "valid": valid}):  # fmt: skip
        ref_kw = {
            "valid": kw.get("valid"), "temperature": kw.get("temperature", 1.0),
            "t_temp": kw.get("target_temperature"), "threshold": kw.get("threshold"),
        }  # fmt: skip
        got = float(consistency_loss(a, b, kind=kind, **kw))
        assert got == pytest.approx(_reference(a, b, kind, **ref_kw), rel=1e-5, abs=1e-6)


def test_gradients_only_where_the_kind_says() -> None:
    for kind, into_target in (("sym_kl", True), ("js", True), ("kl", False)):
        a = torch.randn(4, 5, requires_grad=True)
        b = torch.randn(4, 5, requires_grad=True)
        consistency_loss(a, b, kind=kind).backward()
        assert a.grad is not None and bool(a.grad.abs().sum() > 0)
        if into_target:
            assert b.grad is not None and bool(b.grad.abs().sum() > 0)
        else:
            assert b.grad is None  # the clean view is a detached teacher


def test_padding_contributes_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    valid = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    base = consistency_loss(a, b, valid=valid)
    a2, b2 = a.clone(), b.clone()
    a2[0, 4:] = torch.nan  # padding may hold anything, even NaN
    b2[0, 4:] = 1e4
    a2.requires_grad_(True)
    out = consistency_loss(a2, b2, valid=valid)
    assert torch.equal(out, base)
    out.backward()
    assert a2.grad is not None and bool((a2.grad[0, 4:] == 0).all())


def test_nothing_counted_gives_zero_with_a_gradient() -> None:
    a = torch.randn(3, 4, requires_grad=True)
    out = consistency_loss(a, torch.randn(3, 4), valid=torch.zeros(3, dtype=torch.bool))
    assert float(out.detach()) == 0.0
    out.backward()
    assert a.grad is not None and bool((a.grad == 0).all())
    low = consistency_loss(torch.zeros(2, 4), torch.zeros(2, 4) + 1.0, threshold=0.9)
    assert float(low) == 0.0  # uniform targets are never confident


@pytest.mark.parametrize("kind", CONSISTENCY_KINDS)
def test_stable_for_large_logits(kind: str) -> None:
    a = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    b = torch.tensor([[-1e4, 1e4, 0.0]])
    out = consistency_loss(a, b, kind=kind)
    assert torch.isfinite(out)
    out.backward()
    assert a.grad is not None and bool(torch.isfinite(a.grad).all())
    half = consistency_loss(a.detach().half(), b.half(), kind=kind)
    assert torch.isfinite(half) and half.dtype == torch.float32


def test_bad_input() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="kind"):
        consistency_loss(x, x, kind="mse")
    with pytest.raises(ValueError, match="one shape"):
        consistency_loss(x, torch.randn(2, 4))
    with pytest.raises(ValueError, match="valid must be bool"):
        consistency_loss(x, x, valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        consistency_loss(x, x, temperature=0.0)
    with pytest.raises(ValueError, match="threshold"):
        consistency_loss(x, x, threshold=1.5)
    with pytest.raises(ValueError, match="logits must be float"):
        consistency_loss(torch.ones(2, 3, dtype=torch.long), x)
