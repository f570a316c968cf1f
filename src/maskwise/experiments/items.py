"""Per-item test statistics of a run, for item-level tests across arms (a paired bootstrap over
test items, :func:`~maskwise.experiments.stats.paired_bootstrap_items`).

A run records its selected model's statistics on every test item as ``{"kind", "items",
"values"}`` (``results.json``: ``test_items``); ``items`` is a fingerprint of the test items
(:func:`fingerprint`: runs are compared item by item only when it matches, e.g. not across the
speech task's per-seed speakers); the kind says how the items add up to the test metric:

* ``"mean"``: one number per item, the metric their mean (accuracy: 0/1 per item; ROUGE-L: the
  item's F1 x 100);
* ``"bleu"``: sacrebleu's additive sentence statistics (n-gram matches and totals, hypothesis
  and reference lengths), the metric sacrebleu's BLEU of their sum (as ``--paired-bs``);
* ``"perplexity"``: ``[loss_sum, targets]`` per row of tokens, the metric ``exp(sum / count)``.

:func:`item_metric` turns rows of such statistics, of any leading shape (items, or items x
seeds: the seeds pooled), back into the metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ITEM_KINDS", "bleu_statistics", "fingerprint", "item_metric"]

ITEM_KINDS = ("mean", "bleu", "perplexity")


def fingerprint(*parts: torch.Tensor | Sequence[str]) -> str:
    """A short hash of test items (tensors' bytes, texts), naming which items were scored.

    >>> fingerprint(torch.tensor([1, 2])) == fingerprint(torch.tensor([1, 2]))
    True
    >>> fingerprint(["a b"]) == fingerprint(["ab"])
    False
    """
    import hashlib

    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
        else:
            for text in part:
                h.update(text.encode("utf-8") + b"\x00")
    return h.hexdigest()[:16]


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[Any]:
    """sacrebleu's per-sentence BLEU statistics (one list per hypothesis) against the first
    reference of each item; summed, they give sacrebleu's corpus BLEU of those references."""
    from sacrebleu.metrics import BLEU

    return [
        list(s)
        for s in BLEU()._extract_corpus_statistics(list(hypotheses), [[r[0] for r in references]])
    ]


def _mean(rows: np.ndarray) -> float:
    return float(rows.mean())


def _bleu(rows: np.ndarray) -> float:
    from sacrebleu.metrics import BLEU

    totals = rows.reshape(-1, rows.shape[-1]).sum(0)
    return float(BLEU()._compute_score_from_stats([int(x) for x in totals]).score)


def _perplexity(rows: np.ndarray) -> float:
    totals = rows.reshape(-1, 2).sum(0)
    return math.exp(min(float(totals[0]) / max(1.0, float(totals[1])), 50.0))


def item_metric(kind: str) -> Callable[[np.ndarray], float]:
    """The function from rows of per-item statistics of ``kind`` to the metric.

    >>> import numpy as np
    >>> item_metric("mean")(np.array([[1, 0], [1, 1]]))  # 2 items x 2 seeds: pooled accuracy
    0.75
    >>> round(item_metric("perplexity")(np.array([[2.0, 2], [0.0, 2]])), 4)  # exp(2 / 4)
    1.6487
    """
    metrics = {"mean": _mean, "bleu": _bleu, "perplexity": _perplexity}
    if kind not in metrics:
        raise ValueError(f"item kind must be one of {ITEM_KINDS} ({kind!r} given).")
    return metrics[kind]
