"""Text generation metrics, from the reference libraries: BLEU (sacrebleu) and ROUGE
(rouge-score). Both need the ``experiments`` extra and are imported on use."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["bleu", "bleu_score", "rouge", "rouge_items", "rouge_scores"]


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU, 0-100 (sacrebleu defaults: 13a tokenisation, case-sensitive).

    Args:
        hypotheses: one detokenised output per item.
        references: the references of each item (every item must have the same number).
    """
    import sacrebleu

    counts = {len(r) for r in references}
    if len(counts) > 1 or len(references) != len(hypotheses):
        raise ValueError(
            f"bleu needs one list of references per hypothesis, all of one length "
            f"({len(hypotheses)} hypotheses, reference counts {sorted(counts)} given)."
        )
    streams = [list(r) for r in zip(*references)]  # sacrebleu: one stream per reference index
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


def rouge(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], reduce: str = "max"
) -> dict[str, float]:
    """Mean ROUGE-1 / 2 / L F1, 0-100 (rouge-score, Porter stemming).

    With several references an item scores its best one (``reduce="max"``: ``score_multi``, as
    SciTLDR's evaluation) or the mean over them (``reduce="mean"``: each reference counts, as
    DialogSum's three-reference evaluation).
    """
    from rouge_score import rouge_scorer

    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean' ({reduce!r} given).")
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    sums = dict.fromkeys(keys, 0.0)
    for hyp, refs in zip(hypotheses, references):
        if reduce == "mean":
            each = [scorer.score(r, hyp) for r in refs]
            for k in keys:
                sums[k] += sum(e[k].fmeasure for e in each) / len(each)
            continue
        s = scorer.score_multi(list(refs), hyp) if len(refs) > 1 else scorer.score(refs[0], hyp)
        for k in keys:
            sums[k] += s[k].fmeasure
    n = max(1, len(hypotheses))
    return {k: 100.0 * v / n for k, v in sums.items()}


def rouge_items(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], key: str = "rougeL"
) -> list[float]:
    """Each item's ROUGE ``key`` F1 x 100 against its first reference (rouge-score, Porter
    stemming): their mean is :func:`rouge`'s ``key`` against the first references."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer([key], use_stemmer=True)
    return [100.0 * scorer.score(r[0], h)[key].fmeasure for h, r in zip(hypotheses, references)]


def bleu_score(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """The translation task's ``score``: ``{"bleu": bleu(...)}``."""
    return {"bleu": bleu(hypotheses, references)}


def rouge_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """ROUGE-1 / 2 / L against each item's first reference, ``rouge*_max``: the best over all
    references (SciTLDR's multi-reference protocol), and ``rouge*_mean``: the mean over all
    references (DialogSum's three); both equal the first where items have one reference."""
    first = rouge(hypotheses, [r[:1] for r in references])
    if not any(len(r) > 1 for r in references):
        best = mean = first
    else:
        best, mean = rouge(hypotheses, references), rouge(hypotheses, references, "mean")
    return {
        **first,
        **{f"{k}_max": v for k, v in best.items()},
        **{f"{k}_mean": v for k, v in mean.items()},
    }
