"""Greedy decoding with key/value caches: the models' own ``forward`` / ``decode``, one token at
a time, the keys and values of earlier tokens cached by their
:class:`~maskwise.nn.SpecAttention` modules (``setup_cache``).

* :func:`greedy_decode`: encoder-decoder (:class:`~maskwise.experiments.models.Seq2Seq`), with
  optional no-repeat-n-gram blocking (:func:`repeated_ngram_ban`);
* :func:`beam_decode`: the same models, beam search with a length penalty (the caches'
  rows reordered to follow the beams);
* :func:`greedy_generate`: decoder-only (:class:`~maskwise.experiments.models.DecoderLM`), a
  continuation of a prompt within the model's context window.

Both give the tokens that re-running the model on the whole prefix at every step gives (tested),
at O(1) decoder work per step instead of O(t).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from maskwise.attention import causal, cross, padding
from maskwise.experiments.models import DecoderLM, Seq2Seq
from maskwise.experiments.tokenizers import BOS, EOS, PAD

__all__ = ["beam_decode", "caches", "greedy_decode", "greedy_generate", "repeated_ngram_ban"]


@contextmanager
def caches(
    model: DecoderLM | Seq2Seq, batch_size: int, max_len: int, **kwargs: Any
) -> Iterator[None]:
    """``model.setup_caches(batch_size, max_len, **kwargs)`` for the ``with`` block; the caches
    are removed at its end (also on error), so the model is back to full-sequence attention."""
    model.setup_caches(batch_size, max_len, **kwargs)
    try:
        yield
    finally:
        model.remove_caches()


def repeated_ngram_ban(out: torch.Tensor, n: int, vocab: int) -> torch.Tensor:
    """(B, V) bool: the tokens that would complete an ``n``-gram already in each row of ``out``
    (B, t) (no-repeat-n-gram blocking, as fairseq's and Hugging Face's ``no_repeat_ngram_size``).

    Vectorised over rows and positions: the row's windows of ``n`` tokens whose first ``n - 1``
    equal its last ``n - 1`` tokens name the banned ``n``-th tokens.

    >>> out = torch.tensor([[5, 6, 7, 5, 6]])    # 5 6 -> 7 again would repeat "5 6 7"
    >>> repeated_ngram_ban(out, 3, 9).nonzero().tolist()
    [[0, 7]]
    """
    B, t = out.shape
    hits = torch.zeros(B, vocab, dtype=torch.long, device=out.device)
    if n < 1 or t < n:
        return hits.bool()
    windows = out.unfold(1, n, 1)  # (B, t - n + 1, n)
    match = (windows[:, :, : n - 1] == out[:, t - n + 1 :].unsqueeze(1)).all(-1)  # (B, W)
    return hits.scatter_add_(1, windows[:, :, n - 1], match.long()) > 0


@torch.no_grad()
def greedy_decode(
    model: Seq2Seq,
    src: torch.Tensor,
    src_len: torch.Tensor,
    max_len: int,
    no_repeat_ngram: int = 0,
) -> torch.Tensor:
    """Greedy (argmax) decoding of an encoder-decoder.

    Step ``t`` runs ``model.decode`` on the newest token only, at position ``t``: its
    self-attention appends the token's keys and values to the cache and reads those of steps
    ``0 .. t`` (all earlier: no mask), its cross-attention the memory's keys and values,
    projected once, under ``cross(1, src_len)``.

    Args:
        model: the encoder-decoder (put in eval mode).
        src: (B, S) source ids, ``src_len`` (B,) their lengths.
        max_len: the most tokens decoded per row.
        no_repeat_ngram: ``n > 0``: a token that would repeat an ``n``-gram of the row's output
            is never chosen (:func:`repeated_ngram_ban`).

    Returns:
        (B, <= max_len) ids after ``[BOS]``, ``PAD`` after a row's ``[EOS]``; decoding stops
        once every row has ended.
    """
    model.eval()
    memory = model.encode(src, padding(src_len))  # (B, S, E)
    B, S = memory.shape[:2]
    dev = src.device
    cross_mask = cross(torch.ones(B, dtype=torch.long, device=dev), src_len)  # 1 query x S keys
    tok = torch.full((B,), BOS, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    out: list[torch.Tensor] = []
    with caches(model, B, max_len, memory_len=S):
        for t in range(max_len):
            pos = torch.full((1,), t, dtype=torch.long, device=dev)
            logits = model.decode(tok[:, None], memory, None, cross_mask, pos)[:, -1]  # (B, V)
            if no_repeat_ngram and len(out) >= no_repeat_ngram:
                ban = repeated_ngram_ban(torch.stack(out, 1), no_repeat_ngram, logits.shape[-1])
                logits = logits.masked_fill(ban, float("-inf"))
            tok = torch.where(done, PAD, logits.argmax(-1))
            out.append(tok)
            done |= tok == EOS
            if bool(done.all()):
                break
    return torch.stack(out, 1)


@torch.no_grad()
def beam_decode(
    model: Seq2Seq,
    src: torch.Tensor,
    src_len: torch.Tensor,
    max_len: int,
    *,
    beam: int = 4,
    length_penalty: float = 1.0,
    no_repeat_ngram: int = 0,
) -> torch.Tensor:
    """Beam search of an encoder-decoder, batched over sources and beams.

    A hypothesis scores its summed log-probability divided by ``length ** length_penalty``
    (``length`` counts its ``[EOS]``; fairseq's ``lenpen``). Every step, each of a source's
    ``beam`` live hypotheses proposes every next token; of the best ``2 * beam`` candidates,
    those ending in ``[EOS]`` are finished hypotheses (the source keeps its best one) and the
    best ``beam`` others live on. The decoder's key/value caches follow the beams
    (:meth:`~maskwise.experiments.models.Seq2Seq.reorder_caches`). A source is done once no live
    hypothesis can beat its best finished one (log-probabilities only fall, so a live score
    ``s`` ends at most at ``s / max_len ** length_penalty``); hypotheses still live at
    ``max_len`` compete unfinished. With ``beam=1`` the live hypothesis follows greedy
    decoding's path until greedy would end, so the result scores at least as well as greedy's
    (it may be a different, better-scoring hypothesis: an ``[EOS]`` ranked second is kept as a
    finished candidate).

    Args:
        model: the encoder-decoder (put in eval mode).
        src: (B, S) source ids, ``src_len`` (B,) their lengths.
        max_len: the most tokens decoded per hypothesis.
        beam: live hypotheses per source.
        length_penalty: >= 0; 0 ranks by the summed log-probability (favours short outputs).
        no_repeat_ngram: ``n > 0``: no hypothesis repeats an ``n``-gram of its own tokens.

    Returns:
        (B, <= max_len) the best hypothesis of each source after ``[BOS]``, as
        :func:`greedy_decode` returns: ``[EOS]`` included, ``PAD`` after it.
    """
    if beam < 1 or length_penalty < 0:
        raise ValueError(
            f"beam must be >= 1, length_penalty >= 0 ({beam}, {length_penalty} given)."
        )
    model.eval()
    memory = model.encode(src, padding(src_len))  # (B, S, E)
    B, S = memory.shape[:2]
    K, N, dev = beam, memory.shape[0] * beam, src.device
    memory = memory.repeat_interleave(K, 0)  # (N, S, E): beam k of source b is row b * K + k
    cross_mask = cross(torch.ones(N, dtype=torch.long, device=dev), src_len.repeat_interleave(K))
    tok = torch.full((N,), BOS, dtype=torch.long, device=dev)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # the first step expands one hypothesis per source
    hist = torch.empty(N, 0, dtype=torch.long, device=dev)
    best = torch.full((B,), float("-inf"), device=dev)
    best_tokens = torch.full((B, max_len), PAD, dtype=torch.long, device=dev)
    best_len = torch.zeros(B, dtype=torch.long, device=dev)
    base = torch.arange(B, device=dev).unsqueeze(1) * K  # (B, 1)
    with caches(model, N, max_len, memory_len=S):
        for t in range(max_len):
            pos = torch.full((1,), t, dtype=torch.long, device=dev)
            logits = model.decode(tok[:, None], memory, None, cross_mask, pos)[:, -1]  # (N, V)
            logp = torch.log_softmax(logits.float(), -1)
            V = logp.shape[-1]
            if no_repeat_ngram and t >= no_repeat_ngram:
                logp = logp.masked_fill(repeated_ngram_ban(hist, no_repeat_ngram, V), float("-inf"))
            cand = (scores.reshape(N, 1) + logp).reshape(B, K * V)
            top, idx = cand.topk(min(2 * K, K * V), dim=1)  # (B, 2K), best first
            from_beam, token = idx // V, idx % V
            # candidates ending in [EOS]: finished hypotheses of length t + 1
            ended = (token == EOS) & torch.isfinite(top)
            normed = torch.where(ended, top / (t + 1) ** length_penalty, float("-inf"))
            value, at = normed.max(1)
            better = value > best
            if bool(better.any()):
                rows = (base.squeeze(1) + from_beam.gather(1, at[:, None]).squeeze(1))[better]
                best_tokens[better] = PAD
                best_tokens[better, :t] = hist[rows]
                best_tokens[better, t] = EOS
                best_len[better], best[better] = t + 1, value[better]
            # the best K candidates not ending in [EOS] live on (at most K of 2K end)
            order = torch.argsort(ended.to(torch.int8), dim=1, stable=True)[:, :K]
            scores = top.gather(1, order)
            rows = (base + from_beam.gather(1, order)).reshape(N)
            tok = token.gather(1, order).reshape(N)
            hist = torch.cat([hist.index_select(0, rows), tok[:, None]], 1)
            model.reorder_caches(rows)
            bound = scores.max(1).values / max_len**length_penalty
            if bool((best >= bound).all()):
                break
        else:  # max_len reached: live hypotheses compete unfinished
            value, at = (scores / max_len**length_penalty).max(1)
            better = value > best
            if bool(better.any()):
                best_tokens[better] = hist[(base.squeeze(1) + at)[better]]
                best_len[better] = max_len
    return best_tokens[:, : max(1, int(best_len.max()))]


@torch.no_grad()
def greedy_generate(
    model: DecoderLM,
    prompt: torch.Tensor,
    max_new: int,
    *,
    max_len: int,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Greedy continuation of ``prompt`` (B, P) by a decoder-only LM with a context of
    ``max_len`` positions.

    The prompt is run once under ``causal()`` (positions ``0 .. P-1``, or its last ``max_len``
    tokens), then one token per step at the next position. Once the context would pass
    ``max_len``, it slides: the caches are reset and the last ``max_len`` tokens are run again
    at positions ``0 .. max_len-1`` (as a model that always sees its last ``max_len`` tokens).

    Args:
        model: the LM (put in eval mode).
        prompt: (B, P) ids, P >= 1.
        max_new: the most tokens generated.
        max_len: the context window (the model's number of positions).
        eos_id: stop a row at this token (``PAD`` after it); decoding stops once every row has
            ended. None: always ``max_new`` tokens.

    Returns:
        (B, <= max_new) the generated ids.
    """
    model.eval()
    B, dev = prompt.shape[0], prompt.device
    tokens = prompt
    new, start = prompt[:, -max_len:], 0  # the tokens to run next, and the position of the first
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    out: list[torch.Tensor] = []
    with caches(model, B, max_len):
        for _ in range(max_new):
            if start + new.shape[1] > max_len:  # the window slides: run its last max_len tokens
                model.reset_caches()
                new, start = tokens[:, -max_len:], 0
            pos = torch.arange(start, start + new.shape[1], device=dev)
            mask = causal() if new.shape[1] > 1 else None
            nxt = model(new, mask, pos)[:, -1].argmax(-1)  # (B,)
            if eos_id is not None:
                nxt = torch.where(done, PAD, nxt)
                done |= nxt == eos_id
            out.append(nxt)
            if bool(done.all()):
                break
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            start, new = start + new.shape[1], nxt[:, None]
    return torch.stack(out, 1) if out else prompt.new_zeros(B, 0)
