"""Sequence tasks (language modeling, translation, summarization): each end to end for a few
steps on a slice of the shared data and on synthetic files of every accepted format; decoding
produces text; BLEU / ROUGE from the libraries on known pairs; packed and padded batches give the
same loss; no token attends across documents (on a tiny model's attention weights)."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from maskwise.attention import attend
from maskwise.cli import main
from maskwise.experiments.engine import TrainConfig, Variant, train_run
from maskwise.experiments.models import DecoderLM, Seq2Seq
from maskwise.experiments.sequence import (
    BOS,
    EOS,
    IGNORE,
    PAD,
    CharTokenizer,
    LanguageModeling,
    Summarization,
    Translation,
    bleu,
    detect_fields,
    greedy_decode,
    lm_spec,
    load_jsonl_references,
    load_translation,
    pack_plan,
    pack_rows,
    pad_rows,
    pieces_of,
    read_documents,
    repeated_ngram_ban,
    rouge,
    split_documents,
)
from tests.conftest import shared_data_dir

FEW = TrainConfig(epochs=1, max_steps=3)
TINY_LM = {"dim": 32, "heads": 2, "layers": 1, "seq_len": 32, "batch_size": 4}
TINY_S2S = {
    "dim": 32,
    "heads": 2,
    "layers": 1,
    "batch_size": 8,
    "vocab_size": 200,
    "select_size": 8,
    "train_eval_size": 8,
}


def _shared(*parts: str) -> Path:
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"shared data not found at {path} (the repository's ../shared/data; set MASKWISE_DATA)"
        )
    return path


def _finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


WORDS = "red green blue cat dog bird runs jumps sits fast slow the a on under".split()


def _sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(n)]


def _write_lines(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


# ----------------------------------------------------------------------------------------------
# Tokens, documents, pieces, layouts
# ----------------------------------------------------------------------------------------------


def test_char_tokenizer_round_trip_and_unknown_characters() -> None:
    tok = CharTokenizer("Hello, world!\nÄö")
    text = "world, Hello!\nöÄ"
    assert tok.decode(tok.encode(text).tolist()) == text
    ids = tok.encode("Hz")  # z never seen in training
    assert ids[1] == 1 and tok.decode(ids.tolist()) == "H"
    assert tok.encode("").numel() == 0


def test_read_documents_from_a_file_a_gzip_and_a_folder(tmp_path: Path) -> None:
    text = "First:\nOne line.\n\nSecond:\nTwo\nlines.\n  \nThird:\nx\n\n\n\nFourth:\ny\n"
    _write_lines(tmp_path / "a.txt", [text])
    assert read_documents(tmp_path / "a.txt") == [
        "First:\nOne line.",
        "Second:\nTwo\nlines.",
        "Third:\nx",
        "Fourth:\ny",
    ]
    _write_lines(tmp_path / "a.txt.gz", [text])
    assert len(read_documents(tmp_path / "a.txt.gz")) == 4
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for name, body in (
        ("b.txt", "doc b\n\nstill b"),
        ("a.md", "doc a"),
        ("sub/c.txt", "doc c"),
        ("README.md", "not a document"),
        (".hidden", "not one either"),
    ):
        (folder / name).write_text(body)
    assert read_documents(folder) == [
        "doc a",
        "doc b\n\nstill b",
        "doc c",
    ]  # one file, one document
    single = tmp_path / "single"
    single.mkdir()
    (single / "input.txt").write_text(text)
    (single / "SOURCE.txt").write_text("where it came from")
    assert (
        len(read_documents(single)) == 4
    )  # a folder holding one text file: that file's paragraphs
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "x.txt").write_text("only\n\ntwo")
    with pytest.raises(ValueError, match="need at least 3"):
        read_documents(tmp_path / "two" / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no text files"):
        read_documents(tmp_path / "empty")
    with pytest.raises(ValueError, match="neither a text file nor a folder"):
        read_documents(tmp_path / "missing")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    with pytest.raises(ValueError, match="bad.txt"):
        read_documents(tmp_path / "bad.txt")


def test_split_documents_is_contiguous_by_characters() -> None:
    docs = [f"{i}" * 10 for i in range(10)]
    s = split_documents(docs)
    assert s["train"] == docs[:8] and s["dev"] == docs[8:9] and s["test"] == docs[9:]
    s = split_documents(["a", "b", "c"])  # every split gets a document
    assert [len(v) for v in s.values()] == [1, 1, 1]


def test_pieces_of_cuts_sequences_into_row_sized_predictions() -> None:
    p = pieces_of([torch.arange(5), torch.tensor([7]), torch.arange(100, 112)], 4)
    assert p.lengths.tolist() == [4, 4, 4, 3]  # the one-token sequence predicts nothing
    assert p.inputs.tolist() == [0, 1, 2, 3] + list(range(100, 111))
    assert p.targets.tolist() == [1, 2, 3, 4] + list(range(101, 112))
    sub = p.select(torch.tensor([3, 0]))
    assert sub.lengths.tolist() == [3, 4] and sub.inputs.tolist() == [108, 109, 110, 0, 1, 2, 3]


def _random_docs(n: int, vocab: int, seed: int, max_len: int = 40) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, max_len, (n,), generator=g).tolist()
    return [
        torch.cat(
            [torch.tensor([BOS]), torch.randint(5, vocab, (m,), generator=g), torch.tensor([EOS])]
        )
        for m in lengths
    ]


def _segments(rows) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:  # noqa: ANN001
    """(inputs, targets) of every document of every row, sorted (a test-side naive loop)."""
    out = []
    for r in range(len(rows)):
        ids = rows.doc_ids[r]
        for d in ids[ids >= 0].unique().tolist():
            sel = ids == d
            out.append((tuple(rows.inputs[r][sel].tolist()), tuple(rows.targets[r][sel].tolist())))
    return sorted(out)


def test_packed_and_padded_rows_hold_the_same_pieces() -> None:
    pieces = pieces_of(_random_docs(30, 50, 0), 16)
    packed, padded = pack_rows(pieces, 16), pad_rows(pieces, 16)
    assert _segments(packed) == _segments(padded)
    assert packed.tokens == padded.tokens == int(pieces.lengths.sum())
    assert len(packed) < len(padded) == pieces.lengths.numel()
    for rows in (packed, padded):
        real = rows.doc_ids >= 0
        assert torch.equal(real, rows.targets != IGNORE) and torch.equal(~real, rows.inputs == PAD)
        assert not (real[:, 1:] & ~real[:, :-1]).any()  # padding only at the end of a row
        assert (rows.doc_ids[:, 1:] >= rows.doc_ids[:, :-1])[
            real[:, 1:]
        ].all()  # non-decreasing ids
        starts = real & torch.nn.functional.pad(
            rows.doc_ids[:, 1:] != rows.doc_ids[:, :-1], (1, 0), value=True
        )
        assert (rows.positions[starts] == 0).all()  # positions restart at every document
        inner = real & ~starts
        assert (
            rows.positions[:, 1:][inner[:, 1:]] == rows.positions[:, :-1][inner[:, 1:]] + 1
        ).all()
    with pytest.raises(ValueError, match=r"piece lengths must be in \[1, 4\]"):
        pack_plan([5], 4)


# ----------------------------------------------------------------------------------------------
# Packing: same loss as padding; no attention across documents
# ----------------------------------------------------------------------------------------------


def _doc_losses(model: torch.nn.Module, rows, layout: str) -> torch.Tensor:  # noqa: ANN001
    """Summed loss of every (row, document), sorted."""
    logits = model(rows.inputs, lm_spec(layout, rows.doc_ids), rows.positions)
    loss = F.cross_entropy(
        logits.flatten(0, 1), rows.targets.flatten(), ignore_index=IGNORE, reduction="none"
    )
    L = rows.inputs.shape[1]
    key = (torch.arange(len(rows)).unsqueeze(1) * L + rows.doc_ids.clamp_min(0)).flatten()
    sums = torch.zeros(len(rows) * L, dtype=torch.float64).scatter_add_(0, key, loss.double())
    counts = torch.zeros(len(rows) * L).scatter_add_(
        0, key, (rows.targets.flatten() != IGNORE).float()
    )
    return sums[counts > 0].sort().values


def test_packed_and_padded_batches_give_the_same_loss() -> None:
    torch.manual_seed(0)
    model = DecoderLM(50, dim=32, heads=4, layers=2, max_len=16).eval()
    pieces = pieces_of(_random_docs(24, 50, 1), 16)
    packed, padded = pack_rows(pieces, 16), pad_rows(pieces, 16)
    with torch.no_grad():
        a, b = _doc_losses(model, packed, "pack"), _doc_losses(model, padded, "pad")
    assert a.shape == b.shape == (pieces.lengths.numel(),)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        a.sum() / packed.tokens, b.sum() / padded.tokens, rtol=1e-6, atol=1e-6
    )


def test_no_token_attends_across_documents() -> None:
    torch.manual_seed(0)
    model = DecoderLM(50, dim=32, heads=4, layers=2, max_len=24).eval()
    rows = pack_rows(pieces_of(_random_docs(12, 50, 2, max_len=10), 24), 24)
    assert int((rows.doc_ids.max(1).values >= 2).sum()) >= 2  # rows with three documents or more
    attn = model.blocks[0].attn
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        attn.q_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("q", o)),
        attn.k_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("k", o)),
    ]
    spec = lm_spec("pack", rows.doc_ids)
    with torch.no_grad():
        logits = model(rows.inputs, spec, rows.positions)
    for h in hooks:
        h.remove()
    B, L, H = rows.inputs.shape[0], rows.inputs.shape[1], attn.num_heads
    q, k = (seen[n].view(B, L, H, -1).transpose(1, 2) for n in "qk")
    eye = torch.eye(L).expand(B, H, L, L)
    weights = attend(
        q, k, eye, spec
    )  # (B, H, Q, K): the attention probabilities, through the real kernel
    d = rows.doc_ids
    same_doc = (d[:, :, None] == d[:, None, :]) & (d[:, :, None] >= 0)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    allowed = (same_doc & causal)[:, None]
    assert (weights[~allowed.expand_as(weights)] == 0).all()
    real = (d >= 0)[:, None, :].expand(B, H, L)
    torch.testing.assert_close(weights.sum(-1)[real], torch.ones(int(real.sum())))
    # End to end through every layer: changing one document leaves the others' outputs alone.
    changed = rows.inputs.clone()
    first = (d == 0) & (rows.inputs != BOS)
    changed[first] = 5 + (changed[first] - 4) % 45
    with torch.no_grad():
        logits2 = model(changed, spec, rows.positions)
    others = d > 0
    torch.testing.assert_close(logits2[others], logits[others], rtol=0, atol=1e-5)
    assert not torch.allclose(logits2[first], logits[first])


# ----------------------------------------------------------------------------------------------
# Language modelling end to end
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["stream", "pack"])
def test_language_modeling_on_a_slice_of_tinyshakespeare(tmp_path: Path, layout: str) -> None:
    text = _shared("lm", "tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20_000]
    path = tmp_path / "slice.txt"
    path.write_text(text, encoding="utf-8")
    task = LanguageModeling(path, layout=layout, **TINY_LM)
    assert (
        task.metric == "perplexity" and not task.higher_is_better and task.num_keys() == task.vocab
    )
    for variant in (Variant("none"), Variant("static", 0.2), Variant("dynamic")):
        r = train_run(task, variant, 0, config=FEW)
        assert r.steps == 3 and r.items_per_s > 0
        assert _finite(r.test) and set(r.test) == {"loss", "perplexity", "accuracy"}
        assert r.test["perplexity"] == pytest.approx(math.exp(r.test["loss"]))
    assert r.monitor is not None and r.monitor.series("rate")[1] and r.monitor.series("accuracy")[1]
    assert isinstance(task.generate(task.build_model(), "ROMEO:", max_new=8), str)
    d = task.describe()
    assert d["layout"] == layout and d["target_tokens"]["train"] > 0


def test_language_modeling_on_a_folder_with_bpe_and_key_dropping(tmp_path: Path) -> None:
    for i, s in enumerate(_sentences(12, 0)):
        (tmp_path / f"doc{i:02d}.txt").write_text((s + ". ") * 8)
    task = LanguageModeling(
        tmp_path, layout="pad", tokens="bpe", vocab_size=300, key_drop=True, **TINY_LM
    )
    assert task.describe()["documents"] == {"train": 10, "dev": 1, "test": 1}
    r = train_run(task, Variant("static", 0.3), 0, config=FEW)
    assert r.steps == 3 and _finite(r.test)
    with pytest.raises(ValueError, match="layout must be"):
        LanguageModeling(tmp_path, layout="ragged")


# ----------------------------------------------------------------------------------------------
# Translation
# ----------------------------------------------------------------------------------------------


def _slice_gz(src: Path, dst: Path, n: int) -> None:
    with gzip.open(src, "rt", encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(n)]
    _write_lines(dst, lines)


def test_translation_on_a_slice_of_multi30k(tmp_path: Path) -> None:
    root = _shared("mt", "multi30k")
    for split, n in (("train", 120), ("val", 16), ("test_2016_flickr", 16)):
        for lang in ("de", "en"):
            _slice_gz(root / f"{split}.{lang}.gz", tmp_path / f"{split}.{lang}.gz", n)
    task = Translation(tmp_path, **TINY_S2S, max_src=24, max_tgt=24)
    assert task.describe()["sizes"] == {"train": 120, "dev": 16, "test": 16}
    for variant in (Variant("none"), Variant("dynamic")):
        r = train_run(task, variant, 0, config=FEW)
        assert r.steps == 3 and _finite(r.test) and set(r.test) == {"loss", "bleu"}
        assert 0.0 <= r.test["bleu"] <= 100.0
    hyps = task.decode(task.build_model(), "test", torch.device("cpu"), limit=4)
    assert len(hyps) == 4 and all(isinstance(h, str) for h in hyps)


def test_translation_accepts_folders_gzip_and_a_file_pair(tmp_path: Path) -> None:
    src, tgt = _sentences(60, 1), [s.upper() for s in _sentences(60, 1)]
    folder = tmp_path / "folder"
    folder.mkdir()
    for split, sl in (("train", slice(0, 40)), ("dev", slice(40, 50)), ("test", slice(50, 60))):
        _write_lines(folder / f"{split}.xx", src[sl])
        _write_lines(folder / f"{split}.yy.gz", tgt[sl])
    raw = load_translation(folder, "xx", "yy")
    assert {k: len(v) for k, v in raw.items()} == {"train": 40, "dev": 10, "test": 10}
    assert raw["dev"][0] == (src[40], [tgt[40]])
    # One aligned pair of files: dev and test carved (5 % each); the target named by swapping the suffix.
    _write_lines(tmp_path / "corpus.xx", src)
    _write_lines(tmp_path / "corpus.yy", tgt)
    raw = load_translation(tmp_path / "corpus.xx", "xx", "yy")
    assert {k: len(v) for k, v in raw.items()} == {"train": 54, "dev": 3, "test": 3}
    _write_lines(tmp_path / "other.txt", tgt)
    assert (
        len(
            load_translation(
                tmp_path / "corpus.xx", "xx", "yy", target_file=tmp_path / "other.txt"
            )["train"]
        )
        == 54
    )
    task = Translation(tmp_path / "corpus.xx", src_lang="xx", tgt_lang="yy", **TINY_S2S)
    assert train_run(task, Variant("static", 0.2), 0, config=FEW).steps == 3
    _write_lines(tmp_path / "short.yy", tgt[:5])
    _write_lines(tmp_path / "short.xx", src)
    with pytest.raises(ValueError, match="aligned"):
        load_translation(tmp_path / "short.xx", "xx", "yy")


def test_decoding_produces_text(tmp_path: Path) -> None:
    """A tiny model trained briefly on a copy task (words -> upper case) decodes to words."""
    src = _sentences(400, 2)
    for split, sl in (
        ("train", slice(0, 360)),
        ("val", slice(360, 380)),
        ("test", slice(380, 400)),
    ):
        _write_lines(tmp_path / f"{split}.xx", src[sl])
        _write_lines(tmp_path / f"{split}.yy", [s.upper() for s in src[sl]])
    task = Translation(
        tmp_path,
        src_lang="xx",
        tgt_lang="yy",
        dim=32,
        heads=2,
        layers=1,
        batch_size=16,
        vocab_size=200,
        max_src=12,
        max_tgt=12,
        select_size=20,
        train_eval_size=20,
    )
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(6):
        model.train()
        for batch in task.train_batches(epoch, torch.Generator().manual_seed(epoch)):
            loss = task.train_step(model, None, batch, torch.device("cpu")).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    hyps = task.decode(model, "test", torch.device("cpu"))
    assert len(hyps) == 20 and all(h.strip() for h in hyps)
    vocab = {w.upper() for w in WORDS}
    assert sum(w in vocab for h in hyps for w in h.split()) >= len(hyps)  # real words, detokenised
    assert task.final_metrics(model, "test", torch.device("cpu"))["bleu"] > 0


def test_greedy_decoding_with_a_cache_equals_decoding_the_whole_prefix() -> None:
    from maskwise.attention import causal, cross, padding

    torch.manual_seed(0)
    model = Seq2Seq(60, dim=32, heads=4, max_len=32).eval()
    src = torch.randint(5, 60, (6, 9))
    src_len = torch.tensor([9, 3, 5, 1, 9, 7])
    fast = greedy_decode(model, src, src_len, 20)
    with torch.no_grad():  # naive reference: re-decode the whole prefix at every step
        memory = model.encode(src, padding(src_len))
        out, done = torch.full((6, 1), BOS), torch.zeros(6, dtype=torch.bool)
        for t in range(1, 21):
            step = model.decode(out, memory, causal(), cross(torch.full((6,), t), src_len))[
                :, -1
            ].argmax(-1)
            step = torch.where(done, PAD, step)
            out, done = torch.cat([out, step[:, None]], 1), done | (step == EOS)
            if done.all():
                break
    assert torch.equal(fast, out[:, 1:])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_repeated_ngram_ban_matches_a_naive_loop(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    out = torch.randint(0, 4, (16, 9), generator=g)
    ban = repeated_ngram_ban(out, n, 6)
    for b, row in enumerate(out.tolist()):  # naive reference
        want = {tuple(row[j : j + n]) for j in range(len(row) - n + 1)}
        tail = tuple(row[len(row) - n + 1 :]) if n > 1 else ()
        banned = {g_[-1] for g_ in want if g_[:-1] == tail}
        assert set(ban[b].nonzero().flatten().tolist()) == banned


def test_greedy_decoding_never_repeats_a_blocked_ngram() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(
        12, dim=16, heads=2, max_len=40
    ).eval()  # a tiny vocabulary: untrained output loops
    src, src_len = torch.randint(5, 12, (8, 6)), torch.full((8,), 6)
    loops = greedy_decode(model, src, src_len, 30)
    blocked = greedy_decode(model, src, src_len, 30, no_repeat_ngram=3)

    def ngrams(row: list[int]) -> list[tuple[int, ...]]:
        row = row[: row.index(EOS)] if EOS in row else [t for t in row if t != PAD]
        return [tuple(row[j : j + 3]) for j in range(len(row) - 2)]

    assert any(len(set(ngrams(r))) < len(ngrams(r)) for r in loops.tolist())
    assert all(len(set(ngrams(r))) == len(ngrams(r)) for r in blocked.tolist())


# ----------------------------------------------------------------------------------------------
# Summarization
# ----------------------------------------------------------------------------------------------


def _slice_jsonl(src: Path, dst: Path, n: int) -> Path:
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    return dst


@pytest.mark.parametrize(
    ("name", "files", "fields"),
    [
        ("scitldr", ("train.jsonl", "dev.jsonl", "test.jsonl"), ("source", "target")),
        (
            "dialogsum",
            ("dialogsum.train.jsonl", "dialogsum.dev.jsonl", "dialogsum.test.jsonl"),
            ("dialogue", "summary"),
        ),
    ],
)
def test_summarization_on_slices_of_scitldr_and_dialogsum(
    tmp_path: Path, name: str, files: tuple[str, ...], fields: tuple[str, str]
) -> None:
    root = _shared("summarization", name)
    for f, n in zip(files, (60, 10, 10)):
        _slice_jsonl(root / f, tmp_path / f, n)
    task = Summarization(tmp_path, **TINY_S2S, max_src=64, max_tgt=24)
    assert task.fields == fields and task.describe()["sizes"] == {
        "train": 60,
        "dev": 10,
        "test": 10,
    }
    assert (
        max(len(r) for r in task.splits["test"].references) > 1
    )  # several references at test time
    r = train_run(task, Variant("dynamic"), 0, config=FEW)
    assert r.steps == 3 and _finite(r.test)
    assert set(r.test) == {
        "loss",
        "rouge1",
        "rouge2",
        "rougeL",
        "rouge1_max",
        "rouge2_max",
        "rougeL_max",
    }
    assert r.test["rougeL_max"] >= r.test["rougeL"] - 1e-9


def test_summarization_jsonl_fields_flags_and_single_file(tmp_path: Path) -> None:
    rows = [{"doc": s, "tldr": [s.split()[0]], "other": 1} for s in _sentences(40, 3)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="--source-field"):
        detect_fields(path)
    assert detect_fields(path, "doc", "tldr") == ("doc", "tldr")
    task = Summarization(path, source_field="doc", target_field="tldr", **TINY_S2S)
    assert task.describe()["sizes"] == {"train": 36, "dev": 2, "test": 2}
    assert train_run(task, Variant("none"), 0, config=FEW).steps == 3
    numbered = tmp_path / "test.jsonl"
    numbered.write_text(
        json.dumps({"dialogue": "a b", "summary1": "x", "summary2": "y", "summary10": "z"}) + "\n"
    )
    assert load_jsonl_references(numbered, "dialogue", "summary") == [("a b", ["x", "y", "z"])]
    assert detect_fields(numbered) == ("dialogue", "summary")
    with pytest.raises(ValueError, match="no field 'tldr'"):
        load_jsonl_references(numbered, "dialogue", "tldr")


# ----------------------------------------------------------------------------------------------
# Metrics on known pairs
# ----------------------------------------------------------------------------------------------


def test_bleu_on_known_pairs() -> None:
    import sacrebleu

    assert bleu(["the cat sat on the mat ."], [["the cat sat on the mat ."]]) == pytest.approx(
        100.0
    )
    hyps = ["the cat sat on a mat", "a dog runs in the park"]
    refs = [["the cat sat on the mat"], ["the dog runs in a park"]]
    want = sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs]]).score
    assert bleu(hyps, refs) == pytest.approx(want) and 0 < want < 100
    # brevity-penalised unigram-to-4-gram precision by hand: 4/6, 2/5, 1/4, 0/3 -> smoothed by sacrebleu
    assert bleu(["the cat"], [["the cat sat on the mat"]]) < 10


def test_rouge_on_known_pairs() -> None:
    r = rouge(["the cat"], [["the cat sat"]])
    assert r["rouge1"] == pytest.approx(80.0)  # P 2/2, R 2/3
    assert r["rouge2"] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)  # P 1/1, R 1/2
    assert r["rougeL"] == pytest.approx(80.0)
    assert rouge(["cats sitting"], [["cat sits"]])["rouge1"] == pytest.approx(
        100.0
    )  # Porter stemming
    assert rouge(["the cat"], [["a dog", "the cat"]])["rouge1"] == pytest.approx(
        100.0
    )  # best reference


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


def test_cli_runs_the_sequence_tasks(tmp_path: Path) -> None:
    lm = tmp_path / "lm.txt"
    lm.write_text("\n\n".join(f"SPEAKER {i}:\n" + s for i, s in enumerate(_sentences(30, 4))))
    mt = tmp_path / "mt"
    mt.mkdir()
    for split, n, seed in (("train", 40, 5), ("val", 6, 6), ("test", 6, 7)):
        _write_lines(mt / f"{split}.fr", _sentences(n, seed))
        _write_lines(mt / f"{split}.it", [s.upper() for s in _sentences(n, seed)])
    summ = tmp_path / "summ.jsonl"
    summ.write_text(
        "".join(json.dumps({"text": s * 3, "summary": s}) + "\n" for s in _sentences(40, 8))
    )
    cases = [
        ("language-modeling", ["--data", str(lm), "--pack", "--key-drop"]),
        (
            "translation",
            ["--data", str(mt), "--src-lang", "fr", "--tgt-lang", "it", "--train-size", "30"],
        ),
        ("summarization", ["--data", str(summ)]),
    ]
    for task, extra in cases:
        out = tmp_path / task
        assert (
            main(
                [
                    "run",
                    task,
                    *extra,
                    "--fast",
                    "--quiet",
                    "--masking",
                    "none,dynamic",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        r = json.loads((out / "results.json").read_text())
        assert r["task"] == task and {run["variant"] for run in r["runs"]} == {"none", "dynamic"}
        assert all(0 < run["steps"] <= 6 for run in r["runs"])  # --fast: at most 6 steps
    r = json.loads((tmp_path / "translation" / "results.json").read_text())
    assert r["settings"]["data"]["sizes"]["train"] == 30
    r = json.loads((tmp_path / "language-modeling" / "results.json").read_text())
    assert (
        r["settings"]["data"]["layout"] == "pack"
        and "key dropping" in r["settings"]["data"]["masking"]
    )
