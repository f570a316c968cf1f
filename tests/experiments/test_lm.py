"""The language-modelling task: end to end for a few steps on a slice of tiny-shakespeare and on
a folder of documents; packed rows (maskwise.packing) give the model's loss of padded rows and no
token attends across documents (on a tiny model's attention weights); generation with the key /
value cache gives what re-running the whole context gives, and what a trained model predicts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from maskwise.attention import attend
from maskwise.experiments.engine import TrainConfig, Variant, train_run
from maskwise.experiments.models import DecoderLM
from maskwise.experiments.tasks.lm import LanguageModeling, lm_spec
from maskwise.experiments.tokenizers import BOS, EOS, IGNORE
from maskwise.nn import SpecAttention
from maskwise.packing import PackedRows, pack_rows, pad_rows, pieces_of
from tests.experiments.synth import sentences, shared

FEW = TrainConfig(epochs=1, max_steps=3)
TINY_LM = {"dim": 32, "heads": 2, "layers": 1, "seq_len": 32, "batch_size": 4}


def _finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


def _random_docs(n: int, vocab: int, seed: int, max_len: int = 40) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, max_len, (n,), generator=g).tolist()
    return [
        torch.cat(
            [torch.tensor([BOS]), torch.randint(5, vocab, (m,), generator=g), torch.tensor([EOS])]
        )
        for m in lengths
    ]


def _sentences_file(tmp_path: Path) -> Path:
    """60 short sentences, one document each (blank lines between)."""
    path = tmp_path / "text.txt"
    path.write_text("\n\n".join(s.capitalize() + "." for s in sentences(60, 1)))
    return path


# ----------------------------------------------------------------------------------------------
# Packing: same loss as padding; no attention across documents
# ----------------------------------------------------------------------------------------------


def _doc_losses(model: torch.nn.Module, rows: PackedRows, layout: str) -> torch.Tensor:
    """Summed loss of every (row, document), sorted."""
    logits = model(rows.inputs, lm_spec(layout, rows.doc_ids), rows.positions)
    loss = F.cross_entropy(
        logits.flatten(0, 1), rows.targets.flatten(), ignore_index=IGNORE, reduction="none"
    )
    L = rows.inputs.shape[1]
    key = (torch.arange(len(rows)).unsqueeze(1) * L + rows.doc_ids.clamp_min(0)).flatten()
    sums = torch.zeros(len(rows) * L, dtype=torch.float64).scatter_add_(0, key, loss.double())
    real = (rows.targets.flatten() != IGNORE).float()
    counts = torch.zeros(len(rows) * L).scatter_add_(0, key, real)
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
    weights = attend(q, k, eye, spec)  # (B, H, Q, K): the attention probabilities, real kernel
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
# End to end
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["stream", "pack"])
def test_language_modeling_on_a_slice_of_tinyshakespeare(tmp_path: Path, layout: str) -> None:
    text = shared("lm", "tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:20_000]
    path = tmp_path / "slice.txt"
    path.write_text(text, encoding="utf-8")
    task = LanguageModeling(path, layout=layout, **TINY_LM)
    assert task.metric == "perplexity" and not task.higher_is_better
    assert task.num_keys() == task.vocab
    for variant in (Variant("none"), Variant("static", 0.2), Variant("dynamic")):
        r = train_run(task, variant, 0, config=FEW)
        assert r.steps == 3 and r.items_per_s > 0
        assert _finite(r.test) and set(r.test) == {"loss", "perplexity", "accuracy"}
        assert r.test["perplexity"] == pytest.approx(math.exp(r.test["loss"]))
    assert r.monitor is not None and r.monitor.series("rate")[1] and r.monitor.series("accuracy")[1]
    d = task.describe()
    assert d["layout"] == layout and d["target_tokens"]["train"] > 0


def test_language_modeling_on_a_folder_with_bpe_and_key_dropping(tmp_path: Path) -> None:
    for i, s in enumerate(sentences(12, 0)):
        (tmp_path / f"doc{i:02d}.txt").write_text((s + ". ") * 8)
    task = LanguageModeling(
        tmp_path, layout="pad", tokens="bpe", vocab_size=300, key_drop=True, **TINY_LM
    )
    assert task.describe()["documents"] == {"train": 10, "dev": 1, "test": 1}
    r = train_run(task, Variant("static", 0.3), 0, config=FEW)
    assert r.steps == 3 and _finite(r.test)
    with pytest.raises(ValueError, match="layout must be"):
        LanguageModeling(tmp_path, layout="ragged")


def test_unigram_noising_draws_replacements_from_the_training_tokens(tmp_path: Path) -> None:
    path = _sentences_file(tmp_path)
    task = LanguageModeling(path, noise="unigram", **TINY_LM)
    weights = task.masking.unigram
    assert weights is not None and weights.shape == (task.vocab,)
    train = task.rows["train"].targets
    assert weights.sum() == (train != IGNORE).sum()  # one count per training target
    assert "unigram" in task.describe()["masking"]
    from maskwise.experiments.report import setting_of

    assert setting_of(task) == task.describe()["setting"]  # the report tells the runs apart
    assert setting_of(task).startswith("decoder d=32 x1, char (vocab ")
    assert setting_of(task).endswith("k train chars, unigram noising")
    masker = task.make_masker(1.0, seed=0).train()
    ids = task.rows["train"].inputs[:8]
    noised, mask = masker(ids)
    replaced = noised[mask]
    assert replaced.numel() > 0 and (weights[replaced] > 0).all()  # only seen training tokens
    assert torch.equal(noised[~mask], ids[~mask])
    r = train_run(task, Variant("static", 0.2), 0, config=FEW)
    assert r.steps == 3 and _finite(r.test)
    with pytest.raises(ValueError, match="noise must be one of"):
        LanguageModeling(path, noise="kneser-ney")


def test_key_dropping_alone_leaves_the_inputs_and_drops_keys(tmp_path: Path) -> None:
    from maskwise.nn import DynamicMask

    path = _sentences_file(tmp_path)
    with pytest.raises(ValueError, match="without key_drop"):
        LanguageModeling(path, noise="none")
    task = LanguageModeling(path, noise="none", key_drop=True, **TINY_LM)
    assert "DropKey" in task.describe()["masking"]
    seen = []

    def capture(model, ids, doc_ids, positions, extra=None):  # type: ignore[no-untyped-def]
        seen.append((ids, extra))
        return type(task).forward(task, model, ids, doc_ids, positions, extra)

    task.forward = capture  # type: ignore[method-assign]
    batch = next(iter(task.train_batches(0, torch.Generator().manual_seed(0))))
    masker = DynamicMask(task.make_masker(0.3, seed=0), 0.3).train()
    model = task.build_model()
    for step in range(2):
        task.train_step(model, masker, batch, torch.device("cpu"))
        ids, extra = seen[-1]
        assert torch.equal(ids, batch[0])  # inputs untouched
        assert extra is not None and extra.step == step and int(masker.step) == step + 1
    r = train_run(task, Variant("static", 0.2), 0, config=FEW)
    assert r.steps == 3 and _finite(r.test)


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def _generate_without_cache(task: LanguageModeling, model: DecoderLM, prompt: str, n: int) -> str:
    """The reference: the whole context (its last seq_len tokens) through the model every step."""
    ids = task.tokenizer.encode(prompt)
    if task.layout != "stream":
        ids = torch.cat([torch.tensor([BOS]), ids])
    x = ids.unsqueeze(0)
    with torch.no_grad():
        for _ in range(n):
            ctx = x[:, -task.seq_len :]
            pos = torch.arange(ctx.shape[1]).unsqueeze(0)
            nxt = task.forward(model, ctx, torch.zeros_like(ctx), pos)[:, -1].argmax(-1, True)
            if task.layout != "stream" and int(nxt) == EOS:
                break
            x = torch.cat([x, nxt], 1)
    return task.tokenizer.decode(x[0, len(ids) :].tolist())


@pytest.mark.parametrize("layout", ["stream", "pack"])
def test_generate_with_the_cache_equals_rerunning_the_context(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "text.txt"
    path.write_text("\n\n".join(s.capitalize() + "." for s in sentences(40, 5)))
    task = LanguageModeling(path, layout=layout, **{**TINY_LM, "seq_len": 16})
    torch.manual_seed(0)
    model = task.build_model()
    with torch.no_grad():  # larger weights: sharper, tie-free logits
        for p in model.parameters():
            p.mul_(8.0)
    model.eval()
    for prompt in ("The red", "A", "The red cat runs under the blue dog"):  # the last: > seq_len
        got = task.generate(model, prompt, max_new=24)
        assert got == _generate_without_cache(task, model, prompt, 24)
    attns = [m for m in model.modules() if isinstance(m, SpecAttention)]
    assert attns and all(m.cache is None for m in attns)  # removed after generating


def test_generate_continues_a_learned_text(tmp_path: Path) -> None:
    """A tiny model trained on one repeated sentence continues it."""
    line = "the quick brown fox jumps over the lazy dog. "
    path = tmp_path / "text.txt"
    path.write_text("\n\n".join(line * 3 for _ in range(30)))
    task = LanguageModeling(path, **{**TINY_LM, "batch_size": 8, "dropout": 0.0})
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    device = torch.device("cpu")
    for epoch in range(8):
        model.train()
        for batch in task.train_batches(epoch, torch.Generator().manual_seed(epoch)):
            loss = task.train_step(model, None, batch, device).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert task.generate(model, "the quick brown", max_new=29) == " fox jumps over the lazy dog."
    # the report's samples: fixed test prompts, continued as the test text continues (up to
    # a document break, which a 32-token context cannot place in 3 repeats of 45 characters)
    samples = task.samples(model, device)
    assert len(samples) == 3
    for s in samples:
        assert len(s["input"]) == 80 and not s["input"].startswith("\n")
        assert len(s["output"]) == 80 >= len(s["reference"])  # the text may end first
        line = s["reference"].split("\n")[0]
        assert s["output"].startswith(line) and len(line) >= 20
