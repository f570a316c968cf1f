"""maskwise.experiments.metrics: BLEU and ROUGE from the reference libraries on known pairs."""

from __future__ import annotations

import pytest

from maskwise.experiments.metrics import bleu, rouge


def test_bleu_on_known_pairs() -> None:
    import sacrebleu

    perfect = bleu(["the cat sat on the mat ."], [["the cat sat on the mat ."]])
    assert perfect == pytest.approx(100.0)
    hyps = ["the cat sat on a mat", "a dog runs in the park"]
    refs = [["the cat sat on the mat"], ["the dog runs in a park"]]
    want = sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs]]).score
    assert bleu(hyps, refs) == pytest.approx(want) and 0 < want < 100
    # brevity-penalised 1- to 4-gram precisions 2/2, 1/1, 0/0, 0/0, smoothed by sacrebleu: small
    assert bleu(["the cat"], [["the cat sat on the mat"]]) < 10
    with pytest.raises(ValueError, match="one list of references per hypothesis"):
        bleu(["a", "b"], [["a"], ["b", "c"]])


def test_rouge_on_known_pairs() -> None:
    r = rouge(["the cat"], [["the cat sat"]])
    assert r["rouge1"] == pytest.approx(80.0)  # P 2/2, R 2/3
    assert r["rouge2"] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)  # P 1/1, R 1/2
    assert r["rougeL"] == pytest.approx(80.0)
    stemmed = rouge(["cats sitting"], [["cat sits"]])
    assert stemmed["rouge1"] == pytest.approx(100.0)  # Porter stemming
    best = rouge(["the cat"], [["a dog", "the cat"]])
    assert best["rouge1"] == pytest.approx(100.0)  # the best reference counts
    mean = rouge(["the cat"], [["a dog", "the cat"]], reduce="mean")
    assert mean["rouge1"] == pytest.approx(50.0)  # every reference counts: (0 + 100) / 2
    with pytest.raises(ValueError, match="reduce must be"):
        rouge(["a"], [["a"]], reduce="min")
