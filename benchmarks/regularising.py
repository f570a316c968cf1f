"""Regularising masks: what token dropping saves and what a consistency step costs.

Run from the repository root::

    python benchmarks/regularising.py   # default: --steps 50 --warmup 3 (about 2 minutes)

Everything runs in one process on one CPU thread (``torch.set_num_threads(1)``). Inputs are
random tensors made here with fixed seeds (the cost of a step does not depend on the data);
nothing is read from or written to the repository. Every variant has its own model and AdamW,
initialised alike; the variants of a part are timed step by step in interleaved rounds (one
step of each variant per round, the order rotated every round, all fed the same batch), after
``--warmup`` untimed rounds, and the MEDIAN step time is reported, with two ratios to the
baseline: of the medians, and paired (the median over rounds of the per-round ratio, which
cancels slow drift of a shared machine). The timed step is the whole training step: masking,
forward, loss, backward and ``AdamW.step``.

Part 1, token dropping on a ViT training step. A ViT-Tiny-width encoder: 64x64 RGB images, patch
8 (a Conv2d patch embedding, 64 patches), a CLS token, learned position embeddings, 4 pre-LN
``torch.nn.TransformerEncoderLayer`` (d 192, 3 heads, MLP 768, GELU, dropout 0), a final
LayerNorm and a linear head on the CLS token (100 classes); batch 16 (a step of ~0.2 s on
one thread; batch 64 takes ~0.7 s, with the same ratios in a short run). Variants: ``full`` (all 65
tokens); ``TokenDrop(rate, num_prefix_tokens=1)`` applied after the patch and position
embeddings (CLS kept, 1 + 48 or 1 + 32 tokens go through the encoder); ``PatchMask(rate,
num_prefix_tokens=1)`` on the same embedded tokens (the patches zero-filled, all 65 tokens go
through: the cost of a full step).

Part 2, the consistency step against a plain masked step on a text classifier: token
embeddings 5000x128 + learned positions, 2 pre-LN ``torch.nn.TransformerEncoderLayer`` (d 128,
4 heads, FFN 256, GELU, dropout 0), mean pooling, LayerNorm, a linear head to 2 classes; batch
32 x 128 tokens (Zipf-distributed ids, no padding). ``TokenMask(0.15, mask_id=4)``. Variants:

* (a) masked: one forward on the masked view, loss ``CE(masked)``;
* (b) consistency, two forwards: clean forward + masked forward, loss ``CE(clean) +
  consistency_loss(masked, clean, kind="kl")`` (the clean logits are the detached target);
* (c) the same loss with both views in one forward: ``two_views(tm, ids, mode="clean")``,
  ``model(torch.cat([clean.x, masked.x]))`` split in halves;
* (d) R-Drop / Cutoff style, for reference: ``two_views(tm, ids, mode="masked")`` (two
  independently masked views) in one forward, loss ``(CE(a) + CE(b)) / 2 +
  consistency_loss(a, b, kind="sym_kl")``.

Memory (both parts): the bytes a step saves for backward, counted with
``torch.autograd.graph.saved_tensors_hooks`` in one extra untimed step per variant: every tensor
packed for backward, counted once per distinct storage (``untyped_storage().nbytes()``; views
of one storage and tensors saved by several ops are not double counted), parameters excluded.
That is the activation memory autograd holds at the end of the forward, the step's peak on top
of the weights and optimizer state.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import maskwise as mw
from maskwise.functional import consistency_loss
from maskwise.nn import PatchMask, TokenDrop, TokenMask, two_views

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import fmt_ms, machine  # noqa: E402

# Part 1: ViT (ViT-Tiny width)
IMG, PATCH, CLASSES, VIT_BATCH = 64, 8, 100, 16
VIT_D, VIT_HEADS, VIT_MLP, VIT_LAYERS = 192, 3, 768, 4
# Part 2: text classifier
VOCAB, SEQ, TXT_D, TXT_HEADS, TXT_FFN, TXT_LAYERS, TXT_BATCH = 5000, 128, 128, 4, 256, 2, 32
MASK_ID, SPECIAL_IDS, TXT_RATE = 4, list(range(5)), 0.15


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def encoder_layer(d: int, heads: int, ffn: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        d, heads, ffn, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


class ViT(nn.Module):
    """Patch embedding + CLS + positions, then ``regulariser`` (or nothing), then the encoder."""

    def __init__(self, regulariser: nn.Module | None = None) -> None:
        super().__init__()
        n = (IMG // PATCH) ** 2
        self.patch = nn.Conv2d(3, VIT_D, PATCH, PATCH)
        self.cls = nn.Parameter(torch.zeros(1, 1, VIT_D))
        self.pos = nn.Parameter(torch.randn(1, 1 + n, VIT_D) * 0.02)
        self.regulariser = regulariser
        self.blocks = nn.ModuleList(
            encoder_layer(VIT_D, VIT_HEADS, VIT_MLP) for _ in range(VIT_LAYERS)
        )
        self.ln = nn.LayerNorm(VIT_D)
        self.head = nn.Linear(VIT_D, CLASSES)
        self.tokens = 0  # tokens per row through the encoder at the last forward

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        if isinstance(self.regulariser, PatchMask):
            x, _ = self.regulariser(x)
        elif self.regulariser is not None:
            x = self.regulariser(x)
        self.tokens = x.shape[1]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x[:, 0]))


class TextClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, TXT_D)
        self.pos = nn.Parameter(torch.randn(SEQ, TXT_D) * 0.02)
        self.blocks = nn.ModuleList(
            encoder_layer(TXT_D, TXT_HEADS, TXT_FFN) for _ in range(TXT_LAYERS)
        )
        self.ln = nn.LayerNorm(TXT_D)
        self.head = nn.Linear(TXT_D, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x.mean(1)))


# ----------------------------------------------------------------------------------------------
# Variants and timing
# ----------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    model: nn.Module
    loss_fn: LossFn
    opt: torch.optim.Optimizer = field(init=False)
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    saved_bytes: int = 0

    def __post_init__(self) -> None:
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        loss = self.loss_fn(self.model, x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        dt = (time.perf_counter() - t0) * 1e3
        self.losses.append(float(loss.detach()))
        return dt


@contextmanager
def count_saved(params: list[nn.Parameter], into: dict[int, int]):
    """Record every tensor saved for backward: ``into[storage pointer] = storage bytes``."""
    skip = {p.untyped_storage().data_ptr() for p in params}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            into[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def saved_activation_bytes(v: Variant, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes saved for backward by one training step (distinct storages, no parameters)."""
    seen: dict[int, int] = {}
    params = list(v.model.parameters())
    with count_saved(params, seen):
        loss = v.loss_fn(v.model, x, y)
    total = sum(seen.values())
    v.opt.zero_grad(set_to_none=True)
    loss.backward()
    v.opt.step()
    return total


def run_interleaved(
    variants: list[Variant],
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    warmup: int,
    label: str,
) -> None:
    n = len(variants)
    t_loop = time.perf_counter()
    for i in range(warmup + steps):
        if i % 10 == 0:
            print(
                f"[{label}: round {i}/{warmup + steps}, {time.perf_counter() - t_loop:.0f} s]",
                file=sys.stderr,
                flush=True,
            )
        x, y = batch(i)
        if i == warmup:
            gc.collect()
        for v in variants[i % n :] + variants[: i % n]:  # rotate the order every round
            dt = v.step(x, y)
            if i >= warmup:
                v.times.append(dt)
    for v in variants:
        v.saved_bytes = saved_activation_bytes(v, *batch(0))


def ratios(v: Variant, base: Variant) -> tuple[str, str]:
    med = statistics.median(v.times) / statistics.median(base.times)
    paired = statistics.median(a / b for a, b in zip(v.times, base.times))
    return f"{med:.2f}x", f"{paired:.2f}x"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def print_table(header: tuple[str, ...], align: list[str], rows: list[tuple[str, ...]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(align) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


# ----------------------------------------------------------------------------------------------
# Part 1: token dropping on a ViT step
# ----------------------------------------------------------------------------------------------


def vit_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def part_vit(steps: int, warmup: int, rates: list[float]) -> None:
    def build(name: str, reg: nn.Module | None) -> Variant:
        torch.manual_seed(0)  # every variant starts from the same weights
        model = ViT(reg).train()
        return Variant(name, model, vit_ce)

    variants = [build("full (all tokens)", None)]
    for r in rates:
        variants.append(build(f"`TokenDrop({r})`", TokenDrop(r, num_prefix_tokens=1, seed=0)))
    for r in rates:
        variants.append(
            build(f"`PatchMask({r})` (zero-fill)", PatchMask(r, num_prefix_tokens=1, seed=0))
        )
    g = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(VIT_BATCH, 3, IMG, IMG, generator=g), torch.randint(0, CLASSES, (VIT_BATCH,)))
        for _ in range(4)
    ]
    run_interleaved(variants, lambda i: data[i % len(data)], steps, warmup, "ViT")
    base = variants[0]
    rows = []
    for v in variants:
        r_med, r_paired = ratios(v, base)
        tokens = v.model.tokens  # type: ignore[attr-defined]
        rows.append(
            (
                v.name,
                str(tokens),
                fmt_ms(statistics.median(v.times)),
                r_med,
                r_paired,
                mib(v.saved_bytes),
            )
        )
    print(
        f"Part 1: ViT training step, {VIT_LAYERS} x nn.TransformerEncoderLayer (d {VIT_D}, "
        f"{VIT_HEADS} heads, MLP {VIT_MLP}), batch {VIT_BATCH} of {IMG}x{IMG}, patch {PATCH} "
        f"({(IMG // PATCH) ** 2} patches + CLS), AdamW; median of {steps} interleaved steps"
    )
    print()
    print_table(
        (
            "variant",
            "tokens / row",
            "ms / step",
            "ratio to full",
            "paired ratio",
            "saved for backward (MiB)",
        ),
        ["---", "---:", "---:", "---:", "---:", "---:"],
        rows,
    )
    for v in variants:
        assert all(np.isfinite(v.losses)), v.name


# ----------------------------------------------------------------------------------------------
# Part 2: the consistency step on a text classifier
# ----------------------------------------------------------------------------------------------


def text_variants() -> list[tuple[str, LossFn]]:
    tm = TokenMask(TXT_RATE, mask_id=MASK_ID, special_ids=SPECIAL_IDS, seed=0).train()

    def masked(model: nn.Module, ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, _ = tm(ids)
        return F.cross_entropy(model(x), y)

    def consistency_two(model: nn.Module, ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, _ = tm(ids)
        clean = model(ids)
        masked_logits = model(x)
        return F.cross_entropy(clean, y) + consistency_loss(masked_logits, clean, kind="kl")

    def consistency_one(model: nn.Module, ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a, b = two_views(tm, ids, mode="clean")
        clean, masked_logits = model(torch.cat([a.x, b.x])).chunk(2)
        return F.cross_entropy(clean, y) + consistency_loss(masked_logits, clean, kind="kl")

    def rdrop_one(model: nn.Module, ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a, b = two_views(tm, ids, mode="masked")
        la, lb = model(torch.cat([a.x, b.x])).chunk(2)
        ce = (F.cross_entropy(la, y) + F.cross_entropy(lb, y)) / 2
        return ce + consistency_loss(la, lb, kind="sym_kl")

    return [
        ("(a) masked: `CE(model(masked))`", masked),
        (
            '(b) consistency, 2 forwards: `CE(clean) + consistency_loss(masked, clean, kind="kl")`',
            consistency_two,
        ),
        (
            "(c) the same loss, 1 forward on `torch.cat([clean, masked])` "
            '(`two_views(..., mode="clean")`)',
            consistency_one,
        ),
        (
            "(d) R-Drop style: 1 forward on 2 masked views "
            '(`two_views(..., mode="masked")`), `CE` of both + `kind="sym_kl"`',
            rdrop_one,
        ),
    ]


def zipf_ids(n: int, g: np.random.Generator) -> torch.Tensor:
    ranks = np.arange(1, VOCAB - len(SPECIAL_IDS) + 1)
    p = 1.0 / ranks
    ids = g.choice(ranks + len(SPECIAL_IDS) - 1, size=n, p=p / p.sum())
    return torch.from_numpy(ids.astype(np.int64))


def part_text(steps: int, warmup: int) -> None:
    variants = []
    for name, fn in text_variants():
        torch.manual_seed(0)
        variants.append(Variant(name, TextClassifier().train(), fn))
    g = np.random.default_rng(0)
    data = [
        (zipf_ids(TXT_BATCH * SEQ, g).view(TXT_BATCH, SEQ), torch.randint(0, 2, (TXT_BATCH,)))
        for _ in range(4)
    ]
    run_interleaved(variants, lambda i: data[i % len(data)], steps, warmup, "text")
    base = variants[0]
    rows = []
    for v in variants:
        r_med, r_paired = ratios(v, base)
        rows.append(
            (
                v.name,
                fmt_ms(statistics.median(v.times)),
                r_med,
                r_paired,
                mib(v.saved_bytes),
                f"{v.saved_bytes / base.saved_bytes:.2f}x",
            )
        )
    print(
        f"Part 2: text classifier step, embedding {VOCAB}x{TXT_D}, {TXT_LAYERS} x "
        f"nn.TransformerEncoderLayer (d {TXT_D}, {TXT_HEADS} heads, FFN {TXT_FFN}), mean pooling, "
        f"2 classes, batch {TXT_BATCH}x{SEQ}, AdamW, TokenMask({TXT_RATE}); median of {steps} "
        f"interleaved steps"
    )
    print()
    print_table(
        (
            "variant",
            "ms / step",
            "ratio to (a)",
            "paired ratio",
            "saved for backward (MiB)",
            "memory ratio to (a)",
        ),
        ["---", "---:", "---:", "---:", "---:", "---:"],
        rows,
    )
    for v in variants:
        assert all(np.isfinite(v.losses)), v.name


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=50, help="timed steps per variant (default 50)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --steps 5 --warmup 1")
    parser.add_argument(
        "--part",
        choices=("all", "vit", "text"),
        default="all",
        help="which part to run (default all)",
    )
    parser.add_argument(
        "--rates",
        default="0.25,0.5",
        help="comma-separated drop / mask rates for part 1 (default 0.25,0.5)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 5, 1
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    try:
        rates = [float(r) for r in args.rates.split(",") if r]
    except ValueError:
        parser.error("--rates takes comma-separated numbers")
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, maskwise {mw.__version__}, 1 thread")
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    print()
    if args.part in ("all", "vit"):
        part_vit(args.steps, args.warmup, rates)
        print()
    if args.part in ("all", "text"):
        part_text(args.steps, args.warmup)
        print()
    print(
        f"total time {time.perf_counter() - t_start:.0f} s; "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
