"""Consistency between the predictions of two views of the same batch.

Masking regularises most reliably when the model is asked to predict the same thing from a
clean and a masked view, or from two masked views (Cutoff, R-Drop, SimCut, UDA / AugMask,
FreeMatch): :func:`consistency_loss` is that term, for classification logits (B, C) and sequence
logits (B, L, V).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["CONSISTENCY_KINDS", "consistency_loss"]

#: The divergences :func:`consistency_loss` computes.
CONSISTENCY_KINDS = ("sym_kl", "js", "kl")


def _check(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    kind: str,
    valid: torch.Tensor | None,
    temperature: float,
    target_temperature: float,
    threshold: float | None,
) -> None:
    if kind not in CONSISTENCY_KINDS:
        raise ValueError(f"kind must be one of {CONSISTENCY_KINDS} ({kind!r} given).")
    for name, t in (("logits", logits), ("target_logits", target_logits)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() not in (2, 3):
            shape = tuple(getattr(t, "shape", ()))
            raise ValueError(f"{name} must be float (B, C) or (B, L, V) ({shape} given).")
    if logits.shape != target_logits.shape:
        raise ValueError(
            f"logits and target_logits must have one shape "
            f"({tuple(logits.shape)} and {tuple(target_logits.shape)} given)."
        )
    if valid is not None and (valid.dtype != torch.bool or valid.shape != logits.shape[:-1]):
        raise ValueError(
            f"valid must be bool of shape {tuple(logits.shape[:-1])} "
            f"({valid.dtype} {tuple(valid.shape)} given)."
        )
    for name, value in (("temperature", temperature), ("target_temperature", target_temperature)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0 ({value} given).")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be None or in [0, 1] ({threshold} given).")


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension, from log-probabilities (exact at p = 0)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def consistency_loss(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    kind: str = "sym_kl",
    valid: torch.Tensor | None = None,
    temperature: float = 1.0,
    target_temperature: float | None = None,
    threshold: float | None = None,
) -> torch.Tensor:
    """A divergence between the predictions of two views, averaged over the positions that count.

    With ``p = softmax(logits / temperature)`` (the view being trained, e.g. masked) and
    ``p_t = softmax(target_logits / target_temperature)`` (the other view), per position:

    * ``"sym_kl"`` (R-Drop, Liang et al. 2021): ``(KL(p_t || p) + KL(p || p_t)) / 2``, gradients
      into both views;
    * ``"js"`` (Jensen-Shannon): ``(KL(p || m) + KL(p_t || m)) / 2`` with ``m = (p + p_t) / 2``,
      gradients into both views; bounded by ``log 2``;
    * ``"kl"`` (UDA / AugMask-style distillation from the clean view): ``KL(p_t || p)`` with
      ``target_logits`` detached, so only the first view learns; a mask that deletes the
      evidence of the label is then taught the clean prediction, not a wrong label.

    The counted positions are those where ``valid`` is True (default: all) and, with
    ``threshold``, where the target's largest probability (detached) is at least ``threshold``
    (FreeMatch / FixMatch-style confidence masking). The result is the mean over counted
    positions, and 0 (with a zero gradient) when none counts; it needs no host sync.
    Computed in float32 (or float64) from ``log_softmax``, so large logits are stable. It is
    not scaled by ``temperature ** 2`` (multiply by it for Hinton-style distillation).

    Args:
        logits: (B, C) or (B, L, V) float, the view being trained.
        target_logits: the other view, same shape.
        kind: ``"sym_kl"``, ``"js"`` or ``"kl"``.
        valid: bool (B,) or (B, L), the positions that count (e.g. ``labels != -100``).
        temperature: softmax temperature of ``logits``.
        target_temperature: softmax temperature of ``target_logits`` (default ``temperature``;
            below 1 sharpens the target, as UDA's 0.4).
        threshold: count only positions whose target confidence is at least this.

    Returns:
        A scalar tensor.

    >>> a = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    >>> float(consistency_loss(a, a))
    0.0
    >>> p = torch.tensor([[0.0, 0.0]])             # probabilities (1/2, 1/2)
    >>> t = torch.tensor([[math.log(3.0), 0.0]])   # probabilities (3/4, 1/4)
    >>> round(float(consistency_loss(p, t, kind="kl")), 6)   # 3/4 ln(3/2) + 1/4 ln(1/2)
    0.130812
    """
    target_temperature = temperature if target_temperature is None else target_temperature
    _check(logits, target_logits, kind, valid, temperature, target_temperature, threshold)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    target = target_logits.detach() if kind == "kl" else target_logits
    logits, target = logits.to(dtype), target.to(dtype)
    if valid is not None:  # positions that do not count may hold anything (padding, NaN):
        keep = valid.to(logits.device).unsqueeze(-1)  # replace them so no NaN reaches a gradient
        logits, target = logits.where(keep, 0.0), target.where(keep, 0.0)
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    log_t = torch.log_softmax(target / target_temperature, dim=-1)
    if kind == "sym_kl":
        per = 0.5 * (_kl(log_t, log_p) + _kl(log_p, log_t))
    elif kind == "js":
        log_m = torch.logaddexp(log_p, log_t) - math.log(2.0)
        per = 0.5 * (_kl(log_p, log_m) + _kl(log_t, log_m))
    else:
        per = _kl(log_t, log_p)
    weight = torch.ones_like(per) if valid is None else valid.to(per.device, per.dtype)
    if threshold is not None and threshold > 0:
        confident = log_t.detach().amax(dim=-1) >= math.log(threshold)
        weight = weight * confident.to(per.dtype)
    return (per * weight).sum() / weight.sum().clamp_min(1.0)
