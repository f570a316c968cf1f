"""Reliability of predictions from the outputs a training step already has."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Reliability", "reliability"]


class Reliability(NamedTuple):
    """Per-position reliability; every field has the shape of ``labels``."""

    loss: torch.Tensor  # float: cross-entropy (0 where not valid)
    correct: torch.Tensor  # bool: argmax == label
    confidence: torch.Tensor  # float: max softmax probability
    valid: torch.Tensor  # bool: label != ignore_index

    def mean(self) -> dict[str, torch.Tensor]:
        """Means over valid positions (0-d tensors; NaN when nothing is valid)."""
        v = self.valid
        n = v.sum()
        nan = torch.tensor(float("nan"), device=v.device)

        def avg(x: torch.Tensor) -> torch.Tensor:
            return torch.where(n > 0, (x.float() * v).sum() / n.clamp_min(1), nan)

        return {
            "loss": avg(self.loss),
            "accuracy": avg(self.correct),
            "confidence": avg(self.confidence),
        }


@torch.no_grad()
def reliability(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    losses: torch.Tensor | None = None,
) -> Reliability:
    """Per-position loss, correctness and confidence of a classifier's or LM's outputs.

    Uses only the logits and labels the training step already has: dynamic masking costs no
    extra forward pass (one ``log_softmax`` over the logits, without gradient). With
    ``losses``, the per-position cross-entropy the step computed for its objective
    (``F.cross_entropy(..., reduction="none")``), there is no ``log_softmax`` either: one
    ``max`` over the logits and a gather at the labels give the rest, since
    ``max softmax = exp(max logit - label logit - loss)``. Confidence is then 0 where there is
    no target.

    Args:
        logits: (..., C).
        labels: (...) integer class ids in ``[0, C)``, ``ignore_index`` where there is no
            target. Other values raise a ``ValueError`` on CPU; on other devices, where checking
            them would sync, they count as no target.
        losses: optional float (...), the shape of ``labels``: each position's cross-entropy,
            as the training step computed it.

    >>> r = reliability(
    ...     torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]), torch.tensor([0, 0, -100])
    ... )
    >>> r.correct.tolist(), r.valid.tolist(), round(float(r.mean()["accuracy"]), 2)
    ([True, False, False], [True, True, False], 0.5)
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits (..., C) must match labels (...) "
            f"({tuple(logits.shape)} and {tuple(labels.shape)} given)."
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class ids ({labels.dtype} given).")
    C = logits.shape[-1]
    valid = labels != ignore_index
    in_range = (labels >= 0) & (labels < C)
    if labels.device.type == "cpu":
        bad = valid & ~in_range
        if bool(bad.any()):
            raise ValueError(
                f"labels must be class ids in [0, {C}) or ignore_index={ignore_index} "
                f"({labels[bad].unique().tolist()[:5]} given)."
            )
    else:  # reading them would sync: a label out of range is no target (as ignore_index)
        valid = valid & in_range
    safe = torch.where(valid, labels, 0).long()
    if losses is not None:
        if losses.shape != labels.shape:
            raise ValueError(
                f"losses must have the shape of labels ({tuple(losses.shape)} and "
                f"{tuple(labels.shape)} given)."
            )
        z = logits.detach()
        top, pred = z.max(dim=-1)
        at_label = z.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        ce = losses.detach().float()
        confidence = torch.exp(top.float() - at_label.float() - ce).clamp(max=1.0)
        return Reliability(
            loss=torch.where(valid, ce, 0.0),
            correct=(pred == safe) & valid,
            confidence=torch.where(valid, confidence, 0.0),
            valid=valid,
        )
    logp = torch.log_softmax(logits.detach().float(), dim=-1)
    best, pred = logp.max(dim=-1)
    loss = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return Reliability(
        loss=torch.where(valid, loss, 0.0),
        correct=(pred == safe) & valid,
        confidence=best.exp(),
        valid=valid,
    )
