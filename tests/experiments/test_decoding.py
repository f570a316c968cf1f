"""maskwise.experiments.decoding: greedy decoding with the attention modules' key/value caches
gives exactly the tokens of re-running the whole prefix; no-repeat-n-gram blocking against a
naive loop; the caches are removed afterwards."""

from __future__ import annotations

import pytest
import torch

from maskwise.attention import causal, cross, padding
from maskwise.experiments.decoding import greedy_decode, greedy_generate, repeated_ngram_ban
from maskwise.experiments.models import DecoderLM, Seq2Seq
from maskwise.experiments.tokenizers import BOS, EOS, PAD
from maskwise.nn import SpecAttention


def _no_caches(model: torch.nn.Module) -> bool:
    return all(m.cache is None for m in model.modules() if isinstance(m, SpecAttention))


def _sharpen(model: torch.nn.Module, factor: float = 8.0) -> torch.nn.Module:
    """Larger weights: logits far apart, so argmax ties (float noise) cannot flip a token."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model.eval()


def _random_seq2seq() -> tuple[Seq2Seq, torch.Tensor, torch.Tensor]:
    """An untrained encoder-decoder (vocabulary 60) and 6 sources of lengths 1-9."""
    torch.manual_seed(0)
    model = Seq2Seq(60, dim=32, heads=4, max_len=32).eval()
    return model, torch.randint(5, 60, (6, 9)), torch.tensor([9, 3, 5, 1, 9, 7])


def test_greedy_decoding_with_a_cache_equals_decoding_the_whole_prefix() -> None:
    model, src, src_len = _random_seq2seq()
    fast = greedy_decode(model, src, src_len, 20)
    assert _no_caches(model)
    with torch.no_grad():  # naive reference: re-decode the whole prefix at every step
        memory = model.encode(src, padding(src_len))
        out, done = torch.full((6, 1), BOS), torch.zeros(6, dtype=torch.bool)
        for t in range(1, 21):
            cross_mask = cross(torch.full((6,), t), src_len)
            step = model.decode(out, memory, causal(), cross_mask)[:, -1].argmax(-1)
            step = torch.where(done, PAD, step)
            out, done = torch.cat([out, step[:, None]], 1), done | (step == EOS)
            if done.all():
                break
    assert torch.equal(fast, out[:, 1:])


@pytest.mark.parametrize(("prompt_len", "max_new"), [(1, 12), (5, 20), (12, 6)])
def test_greedy_generation_with_a_cache_equals_rerunning_the_window(
    prompt_len: int, max_new: int
) -> None:
    torch.manual_seed(prompt_len)
    max_len = 10
    model = _sharpen(DecoderLM(40, dim=32, heads=4, layers=2, max_len=max_len))
    prompt = torch.randint(5, 40, (3, prompt_len))
    fast = greedy_generate(model, prompt, max_new, max_len=max_len)
    assert fast.shape == (3, max_new) and _no_caches(model)
    x = prompt
    with torch.no_grad():  # reference: the last max_len tokens, positions 0.., every step
        for _ in range(max_new):
            ctx = x[:, -max_len:]
            logits = model(ctx, causal(), torch.arange(ctx.shape[1]))
            x = torch.cat([x, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(fast, x[:, prompt_len:])


def test_greedy_generation_stops_each_row_at_eos() -> None:
    torch.manual_seed(0)
    model = _sharpen(DecoderLM(8, dim=16, heads=2, layers=1, max_len=16))
    prompt = torch.randint(0, 8, (16, 2))
    free = greedy_generate(model, prompt, 10, max_len=16)
    ended = greedy_generate(model, prompt, 10, max_len=16, eos_id=EOS)
    for row_free, row in zip(free.tolist(), ended.tolist()):
        n = row_free.index(EOS) + 1 if EOS in row_free else len(row_free)
        assert row[:n] == row_free[:n] and all(t == PAD for t in row[n:])
    assert ended.shape[1] <= 10


@pytest.mark.parametrize("n", [1, 2, 3])
def test_repeated_ngram_ban_matches_a_naive_loop(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    out = torch.randint(0, 4, (16, 9), generator=g)
    ban = repeated_ngram_ban(out, n, 6)
    for b, row in enumerate(out.tolist()):  # naive reference
        seen = {tuple(row[j : j + n]) for j in range(len(row) - n + 1)}
        tail = tuple(row[len(row) - n + 1 :]) if n > 1 else ()
        banned = {g_[-1] for g_ in seen if g_[:-1] == tail}
        assert set(ban[b].nonzero().flatten().tolist()) == banned


def test_greedy_decoding_never_repeats_a_blocked_ngram() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(12, dim=16, heads=2, max_len=40).eval()  # a tiny vocabulary: output loops
    src, src_len = torch.randint(5, 12, (8, 6)), torch.full((8,), 6)
    loops = greedy_decode(model, src, src_len, 30)
    blocked = greedy_decode(model, src, src_len, 30, no_repeat_ngram=3)

    def ngrams(row: list[int]) -> list[tuple[int, ...]]:
        row = row[: row.index(EOS)] if EOS in row else [t for t in row if t != PAD]
        return [tuple(row[j : j + 3]) for j in range(len(row) - 2)]

    assert any(len(set(ngrams(r))) < len(ngrams(r)) for r in loops.tolist())
    assert all(len(set(ngrams(r))) == len(ngrams(r)) for r in blocked.tolist())


# ----------------------------------------------------------------------------------------------
# Beam search
# ----------------------------------------------------------------------------------------------


def _exhaustive_best(
    model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: int, lp: float
) -> list[list[int]]:
    """The reference: every hypothesis (ending in [EOS] before max_len, or any max_len tokens
    without one) scored by teacher forcing, without caches; the best by score / len ** lp."""
    import itertools

    V = model.bias.shape[0]
    best = []
    with torch.no_grad():
        memory = model.encode(src, padding(src_len))
        for b in range(src.shape[0]):
            cands = []
            for n in range(1, max_len + 1):
                for body in itertools.product(range(V), repeat=n - 1):
                    if EOS in body:
                        continue
                    cands.append(list(body) + [EOS])
                    if n == max_len:
                        cands += [list(body) + [v] for v in range(V) if v != EOS]
            scored = []
            for y in cands:
                tgt_in = torch.tensor([[BOS] + y[:-1]])
                logits = model.decode(
                    tgt_in,
                    memory[b : b + 1],
                    causal(),
                    cross(torch.tensor([len(y)]), src_len[b : b + 1]),
                )
                logp = torch.log_softmax(logits[0].float(), -1)
                score = float(logp[torch.arange(len(y)), torch.tensor(y)].sum())
                scored.append((score / len(y) ** lp, y))
            best.append(max(scored)[1])
    return best


@pytest.mark.parametrize("lp", [0.0, 1.0])
def test_a_wide_beam_finds_the_exhaustive_best(lp: float) -> None:
    """With as many beams as hypotheses of length max_len - 1, beam search is exact."""
    from maskwise.experiments.decoding import beam_decode

    torch.manual_seed(3)
    V, L = 7, 3
    model = _sharpen(Seq2Seq(V, dim=16, heads=2, max_len=8), 3.0)
    src = torch.randint(0, V, (3, 4))
    src_len = torch.tensor([4, 2, 3])
    out = beam_decode(model, src, src_len, L, beam=V ** (L - 1), length_penalty=lp)
    assert _no_caches(model)
    rows = [r[: r.index(EOS) + 1] if EOS in r else r for r in out.tolist()]
    assert rows == _exhaustive_best(model, src, src_len, L, lp)
    assert all(set(r[len(k) :]) <= {PAD} for r, k in zip(out.tolist(), rows))


class _TwoStep(torch.nn.Module):
    """A stub encoder-decoder: after [BOS], P(a) = 0.6, P([EOS]) = 0.4; after a, P([EOS]) =
    0.55 and the other 0.45 spread over the remaining ids."""

    A, V = 6, 8

    def encode(self, src: torch.Tensor, mask: object) -> torch.Tensor:
        return torch.zeros(src.shape[0], src.shape[1], 4)

    def decode(self, tok, memory, mask, cross_mask, positions):  # type: ignore[no-untyped-def]
        first = tok[:, -1] == BOS
        p = torch.full((tok.shape[0], self.V), 0.45 / (self.V - 1))
        p[:, EOS] = 0.55
        p[first] = torch.full((self.V,), 1e-6)
        p[first, self.A], p[first, EOS] = 0.6, 0.4
        return p.log().unsqueeze(1)

    def setup_caches(self, *args: object, **kwargs: object) -> None: ...

    def remove_caches(self) -> None: ...

    def reorder_caches(self, index: torch.Tensor) -> None: ...


def test_one_beam_keeps_a_better_finished_hypothesis_than_greedy() -> None:
    """Greedy takes a (0.6) then [EOS] (0.55): probability 0.33; one beam keeps "[EOS]" (0.4),
    ranked second at the first step, and returns it: its score is at least greedy's."""
    from maskwise.experiments.decoding import beam_decode

    src, src_len = torch.zeros(1, 3, dtype=torch.long), torch.tensor([3])
    stub = _TwoStep()
    assert greedy_decode(stub, src, src_len, 5).tolist() == [[_TwoStep.A, EOS]]  # type: ignore[arg-type]
    one = beam_decode(stub, src, src_len, 5, beam=1, length_penalty=0.0)  # type: ignore[arg-type]
    assert one.tolist() == [[EOS]]


def _score(
    model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, out: torch.Tensor
) -> list[float]:
    """Each row's summed log-probability (up to and with its [EOS]), by teacher forcing."""
    scores = []
    with torch.no_grad():
        memory = model.encode(src, padding(src_len))
        for b, row in enumerate(out.tolist()):
            y = row[: row.index(EOS) + 1] if EOS in row else row
            cm = cross(torch.tensor([len(y)]), src_len[b : b + 1])
            logits = model.decode(torch.tensor([[BOS] + y[:-1]]), memory[b : b + 1], causal(), cm)
            logp = torch.log_softmax(logits[0].float(), -1)
            scores.append(float(logp[torch.arange(len(y)), torch.tensor(y)].sum()))
    return scores


def test_one_beam_scores_at_least_greedy_and_beams_are_batch_independent() -> None:
    from maskwise.experiments.decoding import beam_decode

    model, src, src_len = _random_seq2seq()
    greedy = greedy_decode(model, src, src_len, 20)
    one = beam_decode(model, src, src_len, 20, beam=1, length_penalty=0.0)
    for g, o in zip(_score(model, src, src_len, greedy), _score(model, src, src_len, one)):
        assert o >= g - 1e-4
    together = beam_decode(model, src, src_len, 12, beam=4)
    for b in (0, 3):  # a source decodes the same alone as among others
        alone = beam_decode(model, src[b : b + 1], src_len[b : b + 1], 12, beam=4)
        row = together[b, : alone.shape[1]]
        assert torch.equal(row, alone[0]) and (together[b, alone.shape[1] :] == PAD).all()
    with pytest.raises(ValueError, match="beam must be >= 1"):
        beam_decode(model, src, src_len, 5, beam=0)


def _naive_beam(
    model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: int, k: int, lp: float
) -> list[list[int]]:
    """The reference: the same search one source at a time over Python lists, the whole prefix
    re-decoded for every hypothesis at every step (no caches)."""
    out = []
    with torch.no_grad():
        memory = model.encode(src, padding(src_len))
        for b in range(src.shape[0]):
            live: list[tuple[float, list[int]]] = [(0.0, [])]
            best: tuple[float, list[int]] = (float("-inf"), [])
            for t in range(max_len):
                cands = []
                for score, y in live:
                    tgt = torch.tensor([[BOS] + y])
                    cm = cross(torch.tensor([t + 1]), src_len[b : b + 1])
                    logits = model.decode(tgt, memory[b : b + 1], causal(), cm)[0, -1]
                    logp = torch.log_softmax(logits.float(), -1).tolist()
                    cands += [(score + lv, y + [v]) for v, lv in enumerate(logp)]
                top = sorted(cands, key=lambda c: -c[0])[: 2 * k]
                for score, y in top:
                    if y[-1] == EOS and score / (t + 1) ** lp > best[0]:
                        best = (score / (t + 1) ** lp, y)
                live = [c for c in top if c[1][-1] != EOS][:k]
                if best[0] >= max(s for s, _ in live) / max_len**lp:
                    break
            else:
                for score, y in live:
                    if score / max_len**lp > best[0]:
                        best = (score / max_len**lp, y)
            out.append(best[1])
    return out


def test_beam_search_with_caches_equals_a_naive_search_without() -> None:
    from maskwise.experiments.decoding import beam_decode

    model, src, src_len = _random_seq2seq()
    model = _sharpen(model, 3.0)
    out = beam_decode(model, src, src_len, 12, beam=4, length_penalty=1.0)
    rows = [r[: r.index(EOS) + 1] if EOS in r else r for r in out.tolist()]
    assert rows == _naive_beam(model, src, src_len, 12, 4, 1.0)
    assert _no_caches(model)
