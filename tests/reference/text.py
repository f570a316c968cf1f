"""Naive per-row, per-position references for the vectorized text maskers.

Each reference reproduces the vectorized function's random draws by calling
``maskwise.random.uniform`` in the same order with a generator seeded the same way, then decides
everything with plain Python loops. Equality with the vectorized code on random inputs checks
the vectorization, not the randomness.
"""

from __future__ import annotations

import math

import torch

from maskwise.random import uniform


def sample_mask(valid, rate, *, exact=False, weights=None, generator=None):
    B, N = valid.shape
    rates = [float(rate)] * B if not isinstance(rate, torch.Tensor) else [float(r) for r in rate]
    u = uniform((B, N), generator=generator)
    out = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        pos = [j for j in range(N) if valid[b, j]]
        if not exact:
            if weights is None:
                p = {j: rates[b] for j in pos}
            else:
                total = sum(float(weights[b, j]) for j in pos)
                p = {
                    j: min(1.0, rates[b] * len(pos) * float(weights[b, j]) / total)
                    if total > 0
                    else 0.0
                    for j in pos
                }
            for j in pos:
                out[b, j] = bool(u[b, j] < torch.tensor(p[j], dtype=torch.float32))
        else:
            k = round(rates[b] * len(pos))
            if weights is None:
                keyed = [(float(u[b, j]), j) for j in pos]
            else:
                keyed = [
                    (math.log(float(u[b, j])) / float(weights[b, j]), j)
                    for j in pos
                    if float(weights[b, j]) > 0
                ]
            for _, j in sorted(keyed, reverse=True)[:k]:
                out[b, j] = True
    return out


def words(row):
    """Word runs of a row of word ids: list of lists of positions."""
    runs, prev = [], -1
    for j, w in enumerate(row):
        w = int(w)
        if w >= 0 and w == prev:
            runs[-1].append(j)
        elif w >= 0:
            runs.append([j])
        prev = w
    return runs


def mask_words(word_ids, rate, *, generator=None):
    """Bernoulli whole-word masking (the non-exact, unweighted path)."""
    B, L = word_ids.shape
    u = uniform((B, L + 1), generator=generator)  # slot w + 1 decides word w
    out = torch.zeros(B, L, dtype=torch.bool)
    for b in range(B):
        for w, positions in enumerate(words(word_ids[b].tolist())):
            if u[b, w + 1] < rate:
                for j in positions:
                    out[b, j] = True
    return out


def word_ids_from_offsets(offsets):
    B, L, _ = offsets.shape
    out = torch.full((B, L), -1, dtype=torch.long)
    for b in range(B):
        w, prev_end, prev_tok = -1, None, False
        for j in range(L):
            s, e = int(offsets[b, j, 0]), int(offsets[b, j, 1])
            if e > s:
                if not prev_tok or s != prev_end:
                    w += 1
                out[b, j] = w
                prev_tok = True
            else:
                prev_tok = False
            prev_end = e
    return out


def corrupt(
    input_ids, masked, *, mask_id, vocab_size, replace_prob, random_prob, special_ids, generator
):
    """80/10/10 position by position, as corrupt draws on the CPU from a torch.Generator: one
    uniform per masked position (row-major), then one id per position that gets a random id."""
    B, L = input_ids.shape
    allowed = [i for i in range(vocab_size) if i not in set(special_ids) | {mask_id}]
    out = input_ids.clone()
    labels = torch.full((B, L), -100, dtype=torch.long)
    at = [(b, j) for b in range(B) for j in range(L) if masked[b, j]]
    u = uniform((len(at),), generator=generator)
    random_at = []
    for (b, j), x in zip(at, u.tolist()):
        labels[b, j] = input_ids[b, j]
        if x < replace_prob:
            out[b, j] = mask_id
        elif x < replace_prob + random_prob:
            random_at.append((b, j))
    if random_prob > 0:
        r = torch.randint(len(allowed), (len(random_at),), generator=generator)
        for (b, j), i in zip(random_at, r.tolist()):
            out[b, j] = allowed[i]
    return out, labels


def lm_labels(input_ids, attention_mask=None, prompt_lengths=None):
    B, L = input_ids.shape
    out = input_ids.clone().long()
    for b in range(B):
        seen = 0
        for j in range(L):
            real = attention_mask is None or bool(attention_mask[b, j])
            if not real:
                out[b, j] = -100
                continue
            if prompt_lengths is not None and seen < int(prompt_lengths[b]):
                out[b, j] = -100
            seen += 1
    return out


def t5_corrupt(input_ids, masked, *, sentinel_ids, eos_id, pad_id, attention_mask=None):
    B, L = input_ids.shape
    ins, tgts = [], []
    for b in range(B):
        real = [
            (
                bool(attention_mask[b, j])
                if attention_mask is not None
                else int(input_ids[b, j]) != pad_id
            )
            for j in range(L)
        ]
        toks = [(int(input_ids[b, j]), bool(masked[b, j])) for j in range(L) if real[j]]
        x, y, k, prev = [], [], 0, False
        for t, m in toks:
            if m:
                if not prev:
                    x.append(sentinel_ids[k])
                    y.append(sentinel_ids[k])
                    k += 1
                y.append(t)
            else:
                x.append(t)
            prev = m
        if not toks or toks[-1][0] != eos_id or toks[-1][1]:
            x.append(eos_id)
        y.append(eos_id)
        ins.append(x)
        tgts.append(y)
    wi, wt = max(map(len, ins)), max(map(len, tgts))
    X = torch.full((B, wi), pad_id, dtype=torch.long)
    Y = torch.full((B, wt), pad_id, dtype=torch.long)
    for b in range(B):
        X[b, : len(ins[b])] = torch.tensor(ins[b])
        Y[b, : len(tgts[b])] = torch.tensor(tgts[b])
    return X, Y


def t5_counts(n, rate, mean_length):
    """T5's arithmetic as maskwise applies it: (noise tokens, noise spans) for ``n`` valid
    tokens.
    """
    n_noise = round(rate * n)
    if n_noise == 0:
        return 0, 0
    spans = max(1, round(n_noise / mean_length))
    spans = min(spans, n_noise)
    return n_noise, min(spans, n - n_noise + 1)  # spans need unmasked tokens between them


def runs(row):
    """Maximal runs of True in a bool sequence: list of (start, end_exclusive)."""
    out, start = [], None
    for j, v in enumerate(list(row) + [False]):
        if v and start is None:
            start = j
        elif not v and start is not None:
            out.append((start, j))
            start = None
    return out
