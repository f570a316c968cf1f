"""Dynamic masking overhead: a masked-LM training step, static and dynamic mask side by side.

Run from the repository root::

    python benchmarks/dynamic.py       # default: --steps 200 --warmup 20 --threads default,1

The model is a small pre-LN transformer encoder: token + learned position embeddings, 2 layers
of ``maskwise.nn.MultiheadAttention`` (d_model 128, 4 heads; rows are full, so no attention mask
and ``attend`` picks plain SDPA) and a GELU FFN of width 256, a final LayerNorm and an MLM head
tied to the embedding (vocab 5000, plus a bias), trained with AdamW on batches of 32 x 128
tokens. The data are real when ``--data`` holds SST-2 (a WordPiece tokenizer, vocab 5000, is
trained here on the training sentences; ``[CLS] ... [SEP]`` sentences are packed into rows, so
special tokens sit inside rows) and a Zipf-distributed synthetic stream otherwise. Objective: the
input tokens are masked by ``maskwise.nn.TokenMask`` (every chosen token becomes ``[MASK]``,
special tokens never masked) and the loss is the cross-entropy on masked positions.

Variants, each its own model, optimizer and masker, all initialised alike and fed the same
batch in each round:

* ``static``: ``TokenMask(0.15, ...)``.
* ``dynamic``: ``DynamicMask(TokenMask(...), ReliabilityController(0.15, signal="accuracy",
  min_rate=0.15, max_rate=0.15), tracker=DifficultyTracker(vocab), monitor=MaskMonitor())``,
  and after the optimizer step ``dm.observe(logits, labels, keys=input_ids)`` with the step's
  own logits. The controller runs its full update, but its bounds pin the rate at 0.15, so both
  variants mask the same share of tokens and the model does the same work (an untrained model's
  accuracy would otherwise drive the rate to a bound within a few steps).
* knobs, each a ``dynamic`` variant with one change (``--variants`` names in brackets):
  ``MaskMonitor(every=10)`` [mon10]; ``observe`` only every 10th step, the monitor still
  recording the forward every step [obs10]; both [obs10mon10, not run by default]; and
  ``observe`` on the masked positions only, ``dm.observe(logits[mask], input_ids[mask],
  keys=input_ids[mask])`` [masked]: the reliability is then computed on ~15 % of the rows, with
  the same result for the controller, tracker and monitor, as the other rows carry no label;
  and that every 10th step only [masked10].
* ``losses``: ``dynamic`` with the objective computed as per-position cross-entropies (then
  averaged) and ``dm.observe(logits, labels, losses=..., keys=input_ids)``: the reliability
  reuses them, one ``max`` over the logits instead of a ``log_softmax``.
* ``gap``: ``DynamicMask(TokenMask(...), ReliabilityController(0.15, signal="heldout_gap",
  ...))`` (bounds pinned as above, a held-out reference set once), no tracker or monitor, and
  ``dm.observe(loss=loss.detach())`` every step: the held-out gap controller reads only the
  loss the step has already computed.
* ``default``: ``gap`` with the library's default controller, ``ReliabilityController.default()``
  (bounds pinned as above), started (a held-out loss above the lowest one given first), so every
  step runs its full update, the running training-loss sum included.

The timed step is everything a training step does: masking (plus the tracker's weights and the
monitor's forward record for ``dynamic``), forward, loss, backward, ``AdamW.step`` and, for the
dynamic variants, ``observe`` (reliability, controller, tracker, monitor). All variants run in
one process, interleaved step by step (one step of each variant per round, the order rotated
every round), after ``--warmup`` untimed rounds. A variant that observes or records only one
step in 10 costs more on those steps, so the reported step time is the mean over the 10 step
phases (global step mod 10) of the MEDIAN step time in that phase: for an every-step variant it
is a median, for the others a median-based amortised cost. The overhead is reported twice: from
those step times (B / A - 1), and paired (per round B_i / A_i, median per phase, mean over
phases), which cancels slow drift of the shared machine. This is repeated for each thread count
of ``--threads`` (``default`` = torch's own, the number of cores).

The breakdown then times the dynamic variant's extra pieces separately at the real shapes (the
logits of one step of the model), interleaved, median of ``--repeats`` calls each; a profile of
one ``observe`` call lists the ops that dominate, and one profiled training step of each kind
counts host reads (``aten::_local_scalar_dense``, i.e. ``float()``/``int()``/``bool()`` of a
tensor, and boolean indexing via ``aten::nonzero``), each a device sync on a GPU.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import maskwise as mw
from maskwise.dynamic import DifficultyTracker, ReliabilityController, reliability
from maskwise.monitor import MaskMonitor
from maskwise.nn import DynamicMask, SpecAttention, TokenMask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
SPECIAL_IDS = list(range(len(SPECIALS)))
MASK_ID = 4
VOCAB = 5000
D_MODEL, HEADS, FFN, LAYERS = 128, 4, 256, 2
BATCH, SEQ = 32, 128
RATE = 0.15
PHASES = 10  # the knobs act every 10 steps; step times are medians per phase (step mod 10)
TARGET = 0.02


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def sst2_stream(data: Path) -> np.ndarray | None:
    """SST-2 training sentences as one id stream, ``[CLS] ... [SEP]`` each (None without data)."""
    path = data / "text" / "sst2" / "stsa.binary.train"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    sentences = []
    for line in path.read_text(encoding="utf-8").splitlines():
        label, _, text = line.strip().partition(" ")
        if label in ("0", "1") and text:
            sentences.append(text)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    assert [tok.token_to_id(s) for s in SPECIALS] == SPECIAL_IDS
    assert tok.get_vocab_size() <= VOCAB
    ids: list[int] = []
    for enc in tok.encode_batch(sentences, add_special_tokens=False):
        ids.append(2)
        ids.extend(enc.ids)
        ids.append(3)
    return np.asarray(ids, dtype=np.int64)


def synthetic_stream(n: int) -> np.ndarray:
    """Zipf-distributed ids over the non-special vocabulary, with [CLS]/[SEP] every ~25 tokens."""
    rng = np.random.default_rng(0)
    ranks = np.arange(1, VOCAB - len(SPECIALS) + 1)
    p = 1.0 / ranks
    ids = rng.choice(ranks + len(SPECIALS) - 1, size=n, p=p / p.sum())
    ids[rng.random(n) < 0.04] = 3
    return ids.astype(np.int64)


def make_batches(data: Path, n_max: int) -> tuple[list[torch.Tensor], str]:
    stream = sst2_stream(data)
    source = "SST-2 train, WordPiece vocab 5000"
    if stream is None:
        stream = synthetic_stream(n_max * BATCH * SEQ)
        source = f"synthetic Zipf stream (no SST-2 under {data})"
    n = min(n_max, stream.size // (BATCH * SEQ))
    flat = torch.from_numpy(stream[: n * BATCH * SEQ].copy())
    return list(flat.view(n, BATCH, SEQ)), f"{source}, {stream.size} tokens -> {n} distinct batches"


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.attn = SpecAttention(D_MODEL, HEADS)
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.ffn = nn.Sequential(nn.Linear(D_MODEL, FFN), nn.GELU(), nn.Linear(FFN, D_MODEL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # full rows: no mask, attend() uses plain SDPA
        return x + self.ffn(self.ln2(x))


class MaskedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D_MODEL)
        self.pos = nn.Parameter(torch.randn(SEQ, D_MODEL) * 0.02)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln = nn.LayerNorm(D_MODEL)
        self.bias = nn.Parameter(torch.zeros(VOCAB))
        nn.init.normal_(self.tok.weight, std=0.02)  # BERT's init; the head is tied to it

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return F.linear(
            self.ln(x), self.tok.weight, self.bias
        )  # (B, L, V), head tied to the embedding


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------


@dataclass
class Config:
    name: str
    dynamic: bool = True
    monitor_every: int = 1
    observe_every: int = 1
    masked_only: bool = False
    signal: str = "accuracy"
    tracked: bool = True  # a DifficultyTracker keyed by token id and a MaskMonitor
    losses: bool = False  # observe(..., losses=) with the step's per-position cross-entropy
    default: bool = False  # ReliabilityController.default() instead of the constructor


CONFIGS = {
    "static": Config("static: TokenMask(0.15)", dynamic=False),
    "dynamic": Config("dynamic: DynamicMask + observe every step"),
    "mon10": Config("dynamic, MaskMonitor(every=10)", monitor_every=10),
    "obs10": Config("dynamic, observe every 10 steps", observe_every=10),
    "obs10mon10": Config(
        "dynamic, observe every 10 steps + MaskMonitor(every=10)",
        observe_every=10,
        monitor_every=10,
    ),
    "masked": Config("dynamic, observe(logits[mask], ...) every step", masked_only=True),
    "masked10": Config(
        "dynamic, observe(logits[mask], ...) every 10 steps", masked_only=True, observe_every=10
    ),
    "losses": Config("dynamic, observe(logits, labels, losses=...) every step", losses=True),
    "gap": Config(
        "dynamic gap: heldout_gap controller, observe(loss=loss) every step",
        signal="heldout_gap",
        tracked=False,
    ),
    "default": Config(
        "dynamic default: ReliabilityController.default(), observe(loss=loss) every step",
        signal="heldout_gap",
        tracked=False,
        default=True,
    ),
}


def make_masker(cfg: Config) -> TokenMask | DynamicMask:
    tm = TokenMask(RATE, mask_id=MASK_ID, special_ids=SPECIAL_IDS, seed=0)
    if not cfg.dynamic:
        return tm
    if cfg.default:
        controller = ReliabilityController.default(rate=RATE, min_rate=RATE, max_rate=RATE)
        controller.set_reference(8.4)  # then a higher held-out loss: started
    else:
        controller = ReliabilityController(RATE, signal=cfg.signal, min_rate=RATE, max_rate=RATE)
    if cfg.signal == "heldout_gap":
        controller.set_reference(8.5)  # a held-out loss (ln 5000): the update runs in full
    if not cfg.tracked:
        return DynamicMask(tm, controller)
    return DynamicMask(
        tm,
        controller,
        tracker=DifficultyTracker(VOCAB),
        monitor=MaskMonitor(every=cfg.monitor_every),
    )


@dataclass
class Variant:
    cfg: Config
    model: MaskedLM
    opt: torch.optim.Optimizer
    masker: TokenMask | DynamicMask
    step_no: int = 0
    times: list[float] = field(default_factory=list)
    masked: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def step(self, ids: torch.Tensor, record: bool) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        x, mask = self.masker(ids)
        labels = ids.masked_fill(~mask, -100)
        logits = self.model(x)
        if cfg.losses:  # the objective from per-position losses, which observe reuses
            per_position = F.cross_entropy(
                logits.view(-1, VOCAB), labels.view(-1), reduction="none"
            )
            loss = per_position.sum() / (labels != -100).sum().clamp_min(1)
        else:
            loss = F.cross_entropy(logits.view(-1, VOCAB), labels.view(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if cfg.dynamic and self.step_no % cfg.observe_every == 0:
            dm = self.masker
            assert isinstance(dm, DynamicMask)
            if cfg.signal == "heldout_gap":
                dm.observe(loss=loss.detach())  # the step's own loss: no pass over the logits
            elif cfg.losses:
                dm.observe(logits, labels, losses=per_position.view(labels.shape), keys=ids)
            elif cfg.masked_only:
                dm.observe(logits[mask], ids[mask], keys=ids[mask])
            else:
                dm.observe(logits, labels, keys=ids)
        dt = (time.perf_counter() - t0) * 1e3
        self.step_no += 1
        if record:  # outside the timed region
            self.times.append(dt)
            self.masked.append(float(mask.sum()) / float((ids > MASK_ID).sum()))
            self.losses.append(float(loss.detach()))


def build(cfg: Config) -> Variant:
    torch.manual_seed(0)  # every variant starts from the same weights
    model = MaskedLM().train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    return Variant(cfg, model, opt, make_masker(cfg).train())


def phase_median(values: list[float], start: int) -> float:
    """Mean over the step phases (global step mod PHASES) of the median in each phase."""
    by_phase: dict[int, list[float]] = {}
    for j, v in enumerate(values):
        by_phase.setdefault((start + j) % PHASES, []).append(v)
    return statistics.fmean(statistics.median(vs) for vs in by_phase.values())


# ----------------------------------------------------------------------------------------------
# Breakdown of the dynamic variant's extra work
# ----------------------------------------------------------------------------------------------


def time_round_robin(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3
) -> dict[str, float]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    t: dict[str, list[float]] = {k: [] for k in fns}
    gc.collect()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            t[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in t.items()}


def breakdown(batches: list[torch.Tensor], repeats: int) -> tuple[dict[str, float], list[str]]:
    """Median ms of each extra piece of the dynamic step, at the real shapes."""
    torch.manual_seed(0)
    model = MaskedLM().train()
    dm = make_masker(CONFIGS["dynamic"])
    assert isinstance(dm, DynamicMask)
    tm, controller, tracker = dm.masker, dm.controller, dm.tracker
    mon = MaskMonitor()
    # Prime the tracker (weights of seen keys) and get one step's logits.
    with torch.no_grad():
        for ids in batches[:4]:
            x, mask = dm(ids)
            labels = ids.masked_fill(~mask, -100)
            logits = model(x)
            dm.observe(logits, labels, keys=ids)
    ids = batches[4 % len(batches)]
    rel = reliability(logits, labels)
    w = tracker.weights(ids)
    nan = float("nan")

    def upd_controller() -> None:
        controller.update(torch.where(rel.valid, rel.correct.float(), nan))  # as observe() does

    def observe_masked() -> None:
        dm.observe(logits[mask], ids[mask], keys=ids[mask])

    fns: dict[str, Callable[[], object]] = {
        "observe(): reliability(logits, labels) [log_softmax + max over (B, L, V)]": lambda: (
            reliability(logits, labels)
        ),
        "observe(): controller.update": upd_controller,
        "observe(): tracker.update": lambda: tracker.update(ids, rel.loss, valid=rel.valid),
        "observe(): monitor.record(reliability=...)": lambda: mon.record(
            0, rate=RATE, reliability=rel
        ),
        "observe() total, (B, L, V) logits": lambda: dm.observe(logits, labels, keys=ids),
        "observe() total, logits[mask] (gather included)": observe_masked,
        "forward: tracker.weights(ids)": lambda: tracker.weights(ids),
        "forward: TokenMask(ids) (static, for reference)": lambda: tm(ids),
        "forward: TokenMask(ids, weights=w)": lambda: tm(ids, weights=w),
        "forward: monitor.record(mask=...)": lambda: mon.record(0, rate=RATE, mask=mask),
        "forward: DynamicMask(ids) total": lambda: dm(ids),
    }
    with torch.no_grad():
        res = time_round_robin(fns, repeats)

    # Profile of one observe() call (top ops by self CPU time), then host reads per training step.
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        dm.observe(logits, labels, keys=ids)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            dm.observe(logits, labels, keys=ids)
    ka = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ka)
    lines = [
        f"observe() profile, (B, L, V) logits, top ops by self CPU time "
        f"(total {total / 1e3:.1f} ms): "
        + ", ".join(f"{e.key} {e.self_cpu_time_total / 1e3:.2f} ms ({e.count}x)" for e in ka[:5])
    ]
    counts = []
    for key in ("static", "dynamic"):
        v = build(CONFIGS[key])
        v.step(ids, record=False)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            v.step(ids, record=False)
        ev = {e.key: e.count for e in prof.key_averages()}
        counts.append(
            f"{key} {ev.get('aten::_local_scalar_dense', 0)} scalar reads + "
            f"{ev.get('aten::nonzero', 0)} nonzero"
        )
    lines.append("host reads per training step (each a device sync on a GPU): " + "; ".join(counts))
    return res, lines


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=200, help="timed steps per variant (default 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="untimed steps per variant first (default 20)"
    )
    parser.add_argument(
        "--repeats", type=int, default=50, help="timed calls per breakdown item (default 50)"
    )
    parser.add_argument(
        "--threads",
        default="default,1",
        help="comma-separated torch thread counts; 'default' = torch's own (default: default,1)",
    )
    parser.add_argument(
        "--variants",
        default="dynamic,losses,gap,mon10,obs10,masked,masked10",
        help=f"comma-separated, from {', '.join(CONFIGS)} (static is always run; "
        "default: dynamic,losses,gap,mon10,obs10,masked,masked10)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / ".." / "shared" / "data",
        help="data root holding text/sst2 (default: ../shared/data from the repo root); "
        "synthetic tokens without it",
    )
    parser.add_argument(
        "--no-breakdown", action="store_true", help="skip the breakdown and profile"
    )
    args = parser.parse_args(argv)
    if args.steps < PHASES or args.warmup < 0 or args.repeats < 1:
        parser.error(f"--steps must be >= {PHASES}, --warmup >= 0, --repeats >= 1")
    keys = ["static"] + [k for k in args.variants.split(",") if k and k != "static"]
    if unknown := [k for k in keys if k not in CONFIGS]:
        parser.error(f"unknown variants {unknown}")
    default_threads = torch.get_num_threads()
    try:
        threads = [
            default_threads if t.strip() == "default" else int(t) for t in args.threads.split(",")
        ]
    except ValueError:
        parser.error("--threads takes 'default' or integers")

    t_start = time.perf_counter()
    batches, source = make_batches(args.data.resolve(), 64)
    print(
        f"torch {torch.__version__}, maskwise {mw.__version__}, numpy {np.__version__}; "
        f"torch default threads {default_threads}"
    )
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"data: {source}")
    print(
        f"model: {LAYERS}-layer pre-LN encoder, d_model {D_MODEL}, {HEADS} heads, FFN {FFN}, "
        f"vocab {VOCAB} (tied MLM head), batch {BATCH}x{SEQ}, AdamW; TokenMask rate {RATE}, "
        f"all masked tokens -> [MASK]"
    )
    print(
        f"{args.steps} timed steps per variant after {args.warmup} warm-up steps, "
        f"interleaved step by step; "
        f"step time = mean over {PHASES} step phases of the median step time"
    )
    print()

    rows: list[tuple[str, ...]] = []
    breakdowns: list[tuple[int, dict[str, float], list[str], float]] = []
    notes: list[str] = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        variants = [build(CONFIGS[k]) for k in keys]
        n = len(variants)
        t_loop = time.perf_counter()
        for i in range(args.warmup + args.steps):
            if i % 20 == 0:
                print(
                    f"[{n_threads} thread(s): round {i}/{args.warmup + args.steps}, "
                    f"{time.perf_counter() - t_loop:.0f} s]",
                    file=sys.stderr,
                    flush=True,
                )
            ids = batches[i % len(batches)]
            record = i >= args.warmup
            if i == args.warmup:
                gc.collect()
            for v in variants[i % n :] + variants[: i % n]:  # rotate the order every round
                v.step(ids, record)
        base = variants[0]
        a = phase_median(base.times, args.warmup)
        for v in variants:
            t = phase_median(v.times, args.warmup)
            med = statistics.median(v.times)
            if v is base:
                rows.append(
                    (str(n_threads), v.cfg.name, f"{med:.1f}", f"{t:.1f}", "(baseline)", "", "")
                )
                continue
            paired = phase_median([b / x for b, x in zip(v.times, base.times)], args.warmup) - 1
            over = t / a - 1
            met = "met" if over <= TARGET and paired <= TARGET else "MISSED"
            rows.append(
                (
                    str(n_threads),
                    v.cfg.name,
                    f"{med:.1f}",
                    f"{t:.1f}",
                    pct(over),
                    pct(paired),
                    f"<= 2 %: {met}",
                )
            )
        for v in variants:
            assert all(math.isfinite(x) for x in v.losses), v.cfg.name
        notes.append(
            f"{n_threads} thread(s): masked share of maskable tokens "
            + ", ".join(f"{k} {statistics.fmean(v.masked):.3f}" for k, v in zip(keys, variants))
            + f"; MLM loss over the timed steps {base.losses[0]:.2f} -> "
            + f"{base.losses[-1]:.2f} (static)"
            + f"; load average {os.getloadavg()[0]:.2f}"
        )
        del variants
        gc.collect()
        if not args.no_breakdown:
            res, lines = breakdown(batches, args.repeats)
            breakdowns.append((n_threads, res, lines, a))

    header = (
        "threads",
        "variant",
        "median step (ms)",
        "step (ms)",
        "overhead (B/A - 1)",
        "paired overhead",
        "target",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---:", "---", "---:", "---:", "---:", "---:", "---"]) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    for line in notes:
        print(line)
    for n_threads, res, lines, a in breakdowns:
        print()
        print(
            f"Breakdown of the dynamic variant's extra work, {n_threads} thread(s), "
            f"measured separately "
            f"(median of {args.repeats} interleaved calls; % of the static step, {a:.1f} ms):"
        )
        print()
        print("| piece | ms | % of static step |")
        print("|---|---:|---:|")
        for k, ms in res.items():
            print(f"| {k} | {ms:.3f} | {ms / a * 100:.2f} % |")
        extra = (
            res["forward: DynamicMask(ids) total"]
            - res["forward: TokenMask(ids) (static, for reference)"]
        )
        print(
            f"| forward: DynamicMask(ids) - TokenMask(ids) | {extra:.3f} | "
            f"{extra / a * 100:.2f} % |"
        )
        print()
        for label, obs in (
            ("(B, L, V) logits", res["observe() total, (B, L, V) logits"]),
            ("logits[mask]", res["observe() total, logits[mask] (gather included)"]),
        ):
            per_k = {k: (obs / k + extra) / a for k in (1, 5, 10, 20, 50)}
            room = TARGET * a - extra
            k_min = math.ceil(obs / room) if room > 0 else None
            print(
                f"predicted overhead, observe on {label} every k steps = "
                f"(observe / k + forward extra) / static: "
                + ", ".join(f"k={k} {v * 100:.2f} %" for k, v in per_k.items())
                + (f"; <= 2 % from k = {k_min}" if k_min else "; > 2 % for every k")
            )
        for line in lines:
            print(line)
    print()
    print(
        f"total time {time.perf_counter() - t_start:.0f} s; "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
