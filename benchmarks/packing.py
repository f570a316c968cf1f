"""Packing with document masks vs padding each document to the row length: LM training throughput.

Run from the repository root::

    python benchmarks/packing.py        # default: --steps 30 --warmup 3 --row-len 256 --batch 16

Data: the first training documents of tiny-shakespeare (``--data``; speeches separated by blank
lines), characters, each document ``[BOS] text [EOS]`` cut into pieces of at most ``--row-len``
next-token predictions (:func:`maskwise.packing.pieces_of`). The two layouts hold
exactly the same pieces:

* ``packed``: pieces packed into rows of ``--row-len`` by best-fit decreasing, attention mask
  ``causal() & documents(doc_ids)``, positions restarting at every document; a batch is
  ``--batch`` packed rows.
* ``padded``: the same pieces as the packed batch, one per row, padded on the right to
  ``--row-len``, attention mask ``causal()`` (exact here: padding only follows the real tokens),
  so it runs SDPA's causal kernel, the fastest there is, while computing on padding.

Step ``i`` of both layouts trains on the same documents, so with the same initial weights, no
dropout and the loss averaged over the same target tokens, the two loss curves are the same up to
float rounding (printed side by side). The model is ``DecoderLM`` (d 128, 4 layers, 4 heads).
Each layer has its own model and AdamW; the timed step is forward, loss, backward and the
optimizer step; the layouts alternate within every round (order swapped each round), after
``--warmup`` untimed rounds. Throughput is real (non-padding) target tokens per second, from the
median step time; the ratio packed / padded is printed last.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import fmt_ms, machine  # noqa: E402

from maskwise.experiments.data import read_documents, split_documents  # noqa: E402
from maskwise.experiments.models import DecoderLM  # noqa: E402
from maskwise.experiments.tasks.lm import lm_spec  # noqa: E402
from maskwise.experiments.tokenizers import BOS, EOS, IGNORE, CharTokenizer  # noqa: E402
from maskwise.packing import PackedRows, pack_plan, pad_rows, pieces_of, place_pieces  # noqa: E402

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "lm" / "tinyshakespeare" / "input.txt"
)


def batches(args: argparse.Namespace) -> tuple[list[tuple[PackedRows, PackedRows]], int]:
    """``steps + warmup`` pairs (packed batch, padded batch of the same pieces); vocab size."""
    docs = split_documents(read_documents(args.data))["train"]
    tok = CharTokenizer("\n\n".join(docs))
    need = (args.steps + args.warmup) * args.batch * args.row_len  # target tokens, about
    seqs, total = [], 0
    for d in docs:
        seqs.append(torch.cat([torch.tensor([BOS]), tok.encode(d), torch.tensor([EOS])]))
        total += seqs[-1].numel()
        if total > 1.1 * need:
            break
    pieces = pieces_of(seqs, args.row_len)
    row_of, offset_of, doc_of, rows = pack_plan(pieces.lengths.tolist(), args.row_len)
    # Rows in a seeded random order, as training draws them (best-fit decreasing creates rows
    # longest piece first).
    perm = torch.randperm(rows, generator=torch.Generator().manual_seed(0))
    row_of_t = perm.argsort()[torch.tensor(row_of)]
    offset_t, doc_t = torch.tensor(offset_of), torch.tensor(doc_of)
    out = []
    for b in range(min(rows // args.batch, args.steps + args.warmup)):
        in_batch = (
            ((row_of_t >= b * args.batch) & (row_of_t < (b + 1) * args.batch)).nonzero().squeeze(1)
        )
        sub = pieces.select(in_batch)
        packed = place_pieces(
            sub,
            row_of_t[in_batch] - b * args.batch,
            offset_t[in_batch],
            doc_t[in_batch],
            args.batch,
            args.row_len,
        )
        out.append((packed, pad_rows(sub, args.row_len)))
    if len(out) < args.steps + args.warmup:
        raise SystemExit(
            f"{args.data}: not enough documents for {args.steps + args.warmup} batches."
        )
    return out, tok.get_vocab_size()


def step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, rows: PackedRows, layout: str
) -> float:
    logits = model(rows.inputs, lm_spec(layout, rows.doc_ids), rows.positions)
    loss = F.cross_entropy(logits.flatten(0, 1), rows.targets.flatten(), ignore_index=IGNORE)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="a text file or a folder of documents"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--row-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="packed rows per batch")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data, vocab = batches(args)

    torch.manual_seed(0)
    base = DecoderLM(
        vocab, dim=args.dim, heads=4, layers=args.layers, max_len=args.row_len, dropout=0.0
    )
    models = {"packed": base, "padded": copy.deepcopy(base)}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    times: dict[str, list[float]] = {"packed": [], "padded": []}
    losses: dict[str, list[float]] = {"packed": [], "padded": []}
    for i, (packed, padded) in enumerate(data):
        order = [("packed", packed, "pack"), ("padded", padded, "pad")]
        for name, rows, layout in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            loss = step(models[name], opts[name], rows, layout)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times[name].append(dt)
                losses[name].append(loss)

    real = [p.tokens for p, _ in data[args.warmup :]]
    tokens = statistics.fmean(real)
    print(
        "# Packing vs padding each document to the row length "
        f"({machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s))"
    )
    print(
        f"DecoderLM d {args.dim} x {args.layers}, rows of {args.row_len}, "
        f"{args.batch} packed rows per batch; {args.steps} timed steps after {args.warmup} "
        "warm-up steps; same documents per step.\n"
    )
    print("| step | loss packed | loss padded | abs diff |")
    print("|---|---|---|---|")
    for i, (a, b) in enumerate(zip(losses["packed"], losses["padded"])):
        if i < 5 or i % 5 == 4 or i == len(losses["packed"]) - 1:
            print(f"| {i + args.warmup + 1} | {a:.5f} | {b:.5f} | {abs(a - b):.1e} |")
    diff = max(abs(a - b) for a, b in zip(losses["packed"], losses["padded"]))
    print(f"\nlargest loss difference over the run: {diff:.2e}\n")
    print(
        "| layout | rows per batch | real tokens / row positions | median step (ms) "
        "| real tokens / s |"
    )
    print("|---|---|---|---|---|")
    tps = {}
    for name, idx in (("packed", 0), ("padded", 1)):
        rows = statistics.fmean(len(pair[idx]) for pair in data[args.warmup :])
        fill = tokens / (rows * args.row_len)
        ms = 1e3 * statistics.median(times[name])
        tps[name] = tokens / (ms / 1e3)
        print(f"| {name} | {rows:.1f} | {fill:.2f} | {fmt_ms(ms)} | {tps[name]:,.0f} |")
    print(f"\npacked / padded throughput: {tps['packed'] / tps['padded']:.2f}x")


if __name__ == "__main__":
    main()
