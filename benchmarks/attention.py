"""Attention-mask benchmark: maskwise's analytic BlockMask and ``attend`` against PyTorch's paths.

Run from the repository root::

    python benchmarks/attention.py  # default: --repeats 30 --attn-repeats 7 --budget 3, all parts

Inputs are random tensors and document lengths made here with fixed seeds. Nothing is written
but Inductor's compile cache, which goes to a fresh temporary directory (removed at the end) so
that every compile is cold and its time reproducible (``--warm-cache`` uses the default cache).
Each case is warmed up, then its contenders are timed in interleaved rounds and the MEDIAN wall
time is reported. Part 1 (sub-ms to seconds per call) uses three rounds, in each of which every
contender runs its share back to back after one more untimed call (unless a call takes over
0.5 s); part 2 (10-700 ms per call) runs one call of each contender per round. A contender
whose calls take long stops once its timed calls add up to ``--budget`` seconds (at least 3).

1. BlockMask construction, one CPU thread (``torch.set_num_threads(1)``), B = 1, one head,
   block size 128, L = 4096, 16384 and 32768 (the eager peer only up to 16384: at 32768 one
   call needs ~10 GiB; target there: maskwise <= 1 ms), for ``documents`` (8 documents of
   random lengths summing to L, given as per-token ids), ``sliding_window(256)`` and ``causal()``:
   ``spec.block_mask(L)`` against ``create_block_mask(spec.mask_mod, 1, None, L, L,
   device="cpu")`` eager and compiled. "Compiled" is ``torch.compile(create_block_mask,
   dynamic=False)``, which is what ``_compile=True`` runs (it now warns that the flag is
   deprecated in favour of exactly that) with automatic dynamic shapes off, so every (mask, L)
   gets its own static kernel, as in a run with one sequence length. The first compiled call of
   each case (trace + Inductor compile + run) is timed on its own and excluded from the median.
   Every case asserts that both peers give the same blocks as maskwise: ``to_dense()`` equal, and
   the partial and the full block sets equal one by one. For documents, one more row (§) gives
   the compiled peer the idiomatic mask_mod ``ids[b, q] == ids[b, kv]`` instead of maskwise's
   ``spec.mask_mod`` (which also guards positions outside the ids), the strongest peer.
   Memory: the peak of live CPU tensor bytes during one call, from the PyTorch profiler
   (``profile_memory=True``): every allocation and free that goes through PyTorch's CPU
   allocator (eager ops and the buffers of Inductor-generated code alike) is an event with a
   byte count and a time stamp; the running sum over the call's events, in time order, peaks at
   the call's peak extra memory (the result included). Python objects, the compile caches and
   allocator slack are not counted. As a cross-check at the OS level (skip with ``--no-rss``),
   maskwise and eager ``create_block_mask`` each run once more for the documents mask at the
   largest L in a fresh subprocess, warmed up at L = 1024 first, reporting
   the peak resident set size during the call (VmHWM, reset through ``/proc/self/clear_refs``
   just before it) minus the resident set size before it.
2. Attention forward on CPU with every torch thread (B = 2, H = 8, D = 64, float32, L = 1024 and
   2048, ``torch.no_grad()``) for ``causal()``, ``causal() & documents(...)`` (8 documents per
   row) and ``sliding_window(256)``: ``attend(q, k, v, spec)`` (its ``choose_backend`` pick
   shown) against SDPA with the dense bool mask (``spec.dense(L)`` built once outside the
   timed call, and built inside it), SDPA ``is_causal=True`` (the exact peer for causal; for the
   other masks only a speed reference for the same kernel family, marked ‡), and
   ``attend(..., backend="flex")`` (compiled FlexAttention; its first call, the compile, timed
   on its own and excluded; each timed call includes maskwise's BlockMask construction, as
   ``attend`` does it, cached for a static spec). Every output is checked against SDPA with
   the dense mask. Target: ``attend`` >= 0.95x the best of its own backends for the mask (dense
   with the mask prebuilt, which is what attend's cache gives a static spec; flex with its
   compile spread over 1000 calls of the shape; ``sdpa_causal`` where exact).
3. GPU forward + backward (only where ``torch.cuda.is_available()``; skipped otherwise), bf16,
   B x L = 16384 tokens, H = 16, D = 128, L = 4096 and 16384, the same three mask kinds:
   ``attend`` against FlashAttention ``is_causal=True``, compiled FlexAttention with a BlockMask
   from ``create_block_mask`` (the peer's own idiomatic mask_mod, built once, outside the timed
   call), ``varlen_attn`` on pre-packed
   (tokens, H, D) tensors with precomputed offsets (window ``(255, 0)`` for the window mask)
   and SDPA with the prebuilt dense bool mask. CUDA events time each call; peak extra GPU memory
   from ``torch.cuda.max_memory_allocated``. Target: attend within 5 % of the fastest exact
   contender for each mask kind.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import maskwise as mw
from maskwise.attention import attend, causal, choose_backend, documents, sliding_window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine  # noqa: E402

HERE = Path(__file__).resolve()
BLOCK = 128
N_DOCS = 8
WINDOW = 256
SLOW_CALL_S = 0.5  # no extra untimed call per round for contenders slower than this
EAGER_MAX_L = 16384  # eager create_block_mask above this needs > 2.5 GiB per call: not run
METADATA_L, METADATA_MS = 32768, 1.0  # part 1 target: maskwise's BlockMask at 32768 in <= 1 ms
AMORTISE_CALLS = 1000  # part 2: FlexAttention's compile counted spread over this many calls
GPU = "cuda"  # part 3's device
GPU_SHAPE = (16384, 16, 128)  # part 3: tokens per batch, heads, head dim

# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def doc_ids(batch: int, L: int, seed: int) -> torch.Tensor:
    """(batch, L) int64 document ids: per row, N_DOCS documents of random lengths summing to L."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        cuts = torch.randperm(L - 1, generator=g)[: N_DOCS - 1].add(1).sort().values
        bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([L])])
        rows.append(torch.repeat_interleave(torch.arange(N_DOCS), bounds.diff()))
    return torch.stack(rows)


def doc_mask_mod(
    ids: torch.Tensor,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The idiomatic FlexAttention document mask_mod over per-token ids (no padding)."""

    def same_document(
        b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return ids[b, q_idx] == ids[b, kv_idx]

    return same_document


def doc_lengths(ids: torch.Tensor) -> list[list[int]]:
    return [torch.bincount(r).tolist() for r in ids]


# ----------------------------------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------------------------------


def _time_ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def bench(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    budget_s: float,
    rounds: int = 3,
    warmup: int = 1,
    timer: Callable[[Callable[[], object]], float] = _time_ms,
    sync: Callable[[], None] = lambda: None,
    est: dict[str, float] | None = None,
    rewarm: bool = True,
    collect: bool = True,
    samples: dict[str, list[float]] | None = None,
) -> dict[str, tuple[float, int]]:
    """{name: (median ms, timed runs)} over ``repeats`` calls each, in interleaved rounds.

    Each contender gets ``warmup`` untimed calls, then ``rounds`` rounds; in a round each runs its
    share back to back, after one more untimed call if its calls take under ``SLOW_CALL_S``. A
    contender stops once its timed calls add up to ``budget_s`` (at least 3 runs). ``est``: ms
    per call already known (from an untimed call made before), for contenders without warm-up.
    """
    est = dict(est or {})
    for name, fn in fns.items():
        for _ in range(warmup):
            est[name] = timer(fn)
    times: dict[str, list[float]] = {n: [] for n in fns}
    rounds = max(1, min(rounds, repeats))
    for i in range(rounds):
        share = repeats // rounds + (1 if i < repeats % rounds else 0)
        for name, fn in fns.items():
            t = times[name]
            if len(t) >= 3 and sum(t) >= budget_s * 1e3:
                continue
            if collect:  # (0.5 s each with a large heap: skipped for smoke runs)
                gc.collect()
            if rewarm and est.get(name, 0.0) < SLOW_CALL_S * 1e3:
                fn()
                sync()
            for _ in range(share):
                if len(t) >= 3 and sum(t) >= budget_s * 1e3:
                    break
                t.append(timer(fn))
    if samples is not None:  # every timed call, for callers that report more than the median
        samples.update(times)
    return {n: (statistics.median(t), len(t)) for n, t in times.items()}


def peak_cpu_bytes(fn: Callable[[], object]) -> tuple[int, object, float]:
    """(peak live CPU tensor bytes, result, ms) of one call of ``fn``, its result included.

    The profiler with ``profile_memory=True`` records one event per allocation (+bytes) and per
    free (-bytes) through PyTorch's CPU allocator; their running sum in time order is the
    memory the call holds at each moment, and its maximum the call's peak extra memory. The
    time is the profiled call's (inflated by the profiler; used only as an estimate).
    """
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        t0 = time.perf_counter()
        out = fn()
        ms = (time.perf_counter() - t0) * 1e3
    events = sorted(
        (
            (e.start_ns(), e.nbytes())
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
        ),
        key=lambda x: x[0],
    )
    run = peak = 0
    for _, nbytes in events:
        run += nbytes
        peak = max(peak, run)
    return peak, out, ms


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    raise KeyError(key)


def rss_child(method: str, L: int) -> None:
    """Subprocess entry (``--_rss-child``): peak extra RSS of one construction, printed in KiB.

    Linux only: writing 5 to ``/proc/self/clear_refs`` resets the peak-RSS mark (VmHWM) to the
    current RSS, so VmHWM after the call minus VmRSS before it is the call's peak extra RSS.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    torch.set_num_threads(1)

    def run(n: int) -> object:
        spec = documents(doc_ids(1, n, seed=n))
        if method == "maskwise":
            return spec.block_mask(n)
        return create_block_mask(spec.mask_mod, 1, None, n, n, device="cpu")

    run(1024)  # load code pages and warm up, with a small footprint
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kib("VmRSS")
    out = run(L)
    peak = _proc_status_kib("VmHWM")
    del out
    print(max(0, peak - before))


def rss_extra_kib(method: str, L: int) -> int | None:
    try:
        res = subprocess.run(
            [sys.executable, str(HERE), "--_rss-child", method, str(L)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        return int(res.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.1f} MiB"


def ratio(peer: float | None, ours: float | None) -> str:
    return f"{peer / ours:.1f}x" if (peer and ours) else "n/a"


def table(header: tuple[str, ...], align: list[str], rows: list[tuple[str, ...]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(align) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


def _short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:120]}"


# ----------------------------------------------------------------------------------------------
# Part 1: BlockMask construction
# ----------------------------------------------------------------------------------------------


def _block_sets(num: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, H, nQ, nK) bool: the blocks listed by (num_blocks, indices)."""
    nk = idx.shape[-1]
    listed = (torch.arange(nk) < num[..., None].long()).int()
    return torch.zeros(idx.shape, dtype=torch.int32).scatter_add_(-1, idx.long(), listed) > 0


def assert_same_blocks(ours, peer, what: str) -> None:
    assert tuple(ours.seq_lengths) == tuple(peer.seq_lengths), what
    assert torch.equal(ours.to_dense(), peer.to_dense()), f"{what}: to_dense() differs"
    assert torch.equal(
        _block_sets(ours.kv_num_blocks, ours.kv_indices),
        _block_sets(peer.kv_num_blocks, peer.kv_indices),
    ), f"{what}: partial blocks differ"
    assert torch.equal(
        _block_sets(ours.full_kv_num_blocks, ours.full_kv_indices),
        _block_sets(peer.full_kv_num_blocks, peer.full_kv_indices),
    ), f"{what}: full blocks differ"


def part1(args: argparse.Namespace) -> list[str]:
    from torch.nn.attention.flex_attention import create_block_mask

    torch.set_num_threads(1)
    compiled_cbm = torch.compile(create_block_mask, dynamic=False)
    print(
        f"## Part 1: BlockMask construction (CPU, torch threads {torch.get_num_threads()}, B=1, "
        f"block {BLOCK}; median of {args.repeats} runs, slow contenders limited to "
        f"~{args.budget:g} s of timed calls)"
    )
    print()
    time_rows: list[tuple[str, ...]] = []
    mem_rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    ratios_c: list[float] = []
    meta_ms: list[float] = []
    mem_ok_all = True
    compiled_failed: str | None = None
    first_compile = True
    for L in args.lengths:
        ids = doc_ids(1, L, seed=L)
        docs = documents(ids)
        # (name, spec, the peers' mask_mod (None: spec.mask_mod), run the eager peer?)
        cases = [
            (f"documents ({N_DOCS} docs)", docs, None, True),
            (
                f"documents ({N_DOCS} docs), peer mask_mod hand-written §",
                docs,
                doc_mask_mod(ids),
                False,
            ),
            (f"sliding_window({WINDOW})", sliding_window(WINDOW), None, True),
            ("causal", causal(), None, True),
        ]
        if L > EAGER_MAX_L:  # the eager peer would need L^2 * 10 bytes per call
            cases = [(n, sp, mm, False) for n, sp, mm, _ in cases]
        for name, spec, peer_mm, with_eager in cases:
            label = f"{name}, L={L}"
            mm = spec.mask_mod if peer_mm is None else peer_mm  # one closure per case

            def ours(spec=spec, L=L):
                return spec.block_mask(L)

            def eager(mm=mm, L=L):
                return create_block_mask(mm, 1, None, L, L, device="cpu")

            def comp(mm=mm, L=L):
                return compiled_cbm(mm, 1, None, L, L, device="cpu")

            fns: dict[str, Callable[[], object]] = {"maskwise": ours}
            if with_eager:
                fns["eager"] = eager
            compile_s = None
            if not args.skip_compiled and compiled_failed is None:
                try:
                    t0 = time.perf_counter()
                    comp()
                    compile_s = time.perf_counter() - t0
                    fns["compiled"] = comp
                    if first_compile:
                        notes.append(
                            f"the first compile ({label}) includes Inductor's one-time start-up"
                        )
                        first_compile = False
                except Exception as e:  # noqa: BLE001 - report and fall back to the eager peer
                    compiled_failed = f"{label}: {_short_error(e)}"
                    print(
                        f"compiled create_block_mask FAILED on CPU ({compiled_failed}); "
                        "comparing with the eager peer only"
                    )
            # One profiled call each (memory; also the warm-up), checked, then the timed rounds.
            mem: dict[str, int] = {}
            est: dict[str, float] = {}
            ref = None
            for n, f in fns.items():
                mem[n], out, est[n] = peak_cpu_bytes(f)
                if ref is None:
                    ref = out
                else:
                    assert_same_blocks(ref, out, f"{label}, {n} create_block_mask")
                del out
            del ref
            runs: dict[str, list[float]] = {}
            res = bench(fns, args.repeats, args.budget, warmup=0, est=est, samples=runs)
            m = res["maskwise"][0]
            m_min = min(runs["maskwise"])  # the least disturbed call on a shared machine
            e, n_e = res["eager"] if "eager" in res else (None, args.repeats)
            c, n_c = res["compiled"] if "compiled" in res else (None, 0)
            if c is not None:
                ratios_c.append(c / m)
            tgt = (
                f"n/a (compiled {'skipped' if args.skip_compiled else 'failed'})"
                if c is None
                else f">= 20x vs compiled: {'met' if c / m >= 20 else 'MISSED'}"
            )
            if L >= METADATA_L:
                meta_ms.append(m)
                tgt += f"; <= {METADATA_MS:g} ms: {'met' if m <= METADATA_MS else 'MISSED'}"
            eager_runs = (
                f" [{n_e} runs]"
                if with_eager and n_e < args.repeats
                else ""
                if with_eager
                else " (not run)"
            )
            c_txt = (
                "n/a" if c is None else fmt_ms(c) + (f" [{n_c} runs]" if n_c < args.repeats else "")
            )
            time_rows.append(
                (
                    label,
                    fmt_ms(m),
                    fmt_ms(m_min),
                    fmt_ms(e) + eager_runs,
                    c_txt,
                    "n/a" if compile_s is None else f"{compile_s:.1f}",
                    ratio(e, m),
                    ratio(c, m),
                    tgt,
                )
            )
            nblocks = math.ceil(L / BLOCK) ** 2
            dense = L * L  # one dense L x L bool mask
            ok = mem["maskwise"] < dense / 100
            mem_ok_all &= ok
            mem_rows.append(
                (
                    label,
                    fmt_bytes(mem["maskwise"]),
                    f"{mem['maskwise'] / nblocks:.1f}",
                    fmt_bytes(mem.get("eager")),
                    fmt_bytes(mem.get("compiled")),
                    fmt_bytes(dense),
                    f"{100 * mem['maskwise'] / dense:.3f} %",
                    f"no dense alloc. (< 1 % of L² B): {'met' if ok else 'MISSED'}",
                )
            )
            print(
                f"  {label}: maskwise {fmt_ms(m)} ms, eager {fmt_ms(e)} ms, compiled {c_txt} ms",
                flush=True,
            )
            del fns
            gc.collect()
    print()
    print(
        "Time (ms per call, median; 'maskwise (min)': its fastest call, the least disturbed "
        "by other jobs on a shared machine):"
    )
    print()
    table(
        (
            "case",
            "maskwise",
            "maskwise (min)",
            "create_block_mask",
            "create_block_mask compiled",
            "compile (s)",
            "speed-up vs eager",
            "speed-up vs compiled",
            "target",
        ),
        ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---"],
        time_rows,
    )
    print("Peak extra CPU memory per call (live tensor bytes, PyTorch profiler):")
    print()
    table(
        (
            "case",
            "maskwise",
            "maskwise B/block",
            "create_block_mask",
            "compiled",
            "dense L×L bool",
            "maskwise / L² B",
            "target",
        ),
        ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---"],
        mem_rows,
    )
    if args.rss and any(n <= EAGER_MAX_L for n in args.lengths):
        L = max(n for n in args.lengths if n <= EAGER_MAX_L)
        mw_kib, eager_kib = rss_extra_kib("maskwise", L), rss_extra_kib("eager", L)
        print(
            f"RSS cross-check (fresh subprocess, documents, L={L}, peak RSS during the call "
            f"minus RSS before it): maskwise "
            f"{fmt_bytes(None if mw_kib is None else mw_kib * 1024)}, "
            f"eager create_block_mask {fmt_bytes(None if eager_kib is None else eager_kib * 1024)}"
        )
        print()
    print(
        "§ same maskwise BlockMask; the peers get the idiomatic FlexAttention document mask "
        "(ids[b, q] == ids[b, kv], as attention-gym's document masks) instead of maskwise's "
        "spec.mask_mod, which also guards positions outside the ids (Q > KV, lengths shorter "
        "than KV); the eager peer is not rerun for it."
    )
    if notes:
        print("Notes: " + "; ".join(notes) + ".")
    summary = []
    if ratios_c:
        summary.append(
            f"part 1 speed: maskwise {min(ratios_c):.1f}x..{max(ratios_c):.1f}x faster than "
            f"compiled create_block_mask (target >= 20x: "
            f"{'met' if min(ratios_c) >= 20 else 'MISSED'}; met in "
            f"{sum(r >= 20 for r in ratios_c)} of {len(ratios_c)} cases)"
        )
    elif compiled_failed:
        summary.append(f"part 1 speed: compiled create_block_mask failed ({compiled_failed})")
    if meta_ms:
        summary.append(
            f"part 1 metadata at L>={METADATA_L}: maskwise {min(meta_ms):.3f}..{max(meta_ms):.3f} "
            f"ms (target <= {METADATA_MS:g} ms: "
            f"{'met' if max(meta_ms) <= METADATA_MS else 'MISSED'})"
        )
    summary.append(f"part 1 memory: no dense allocation {'met' if mem_ok_all else 'MISSED'}")
    print()
    return summary


# ----------------------------------------------------------------------------------------------
# Part 2: attention forward on CPU
# ----------------------------------------------------------------------------------------------


def _attn_case(
    args: argparse.Namespace,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    label: str,
    spec: mw.attention.AttentionSpec,
    exact_causal: bool,
    flex_notes: list[str],
    verdicts: list[tuple[str, float]],
) -> tuple[str, ...]:
    """One row of part 2: every contender checked against SDPA with the dense mask, then timed."""
    L = q.shape[-2]
    chosen = choose_backend(spec, q, k, v)
    mask = spec.dense(L)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    fns: dict[str, Callable[[], object]] = {
        "attend": lambda: attend(q, k, v, spec),
        "dense": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "dense+build": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=spec.dense(L)),
        "is_causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    }
    compile_s = None
    flex_err = None
    if not args.skip_flex:
        try:
            t0 = time.perf_counter()
            out = attend(q, k, v, spec, backend="flex")  # the compile
            compile_s = time.perf_counter() - t0
            fns["flex"] = lambda: attend(q, k, v, spec, backend="flex")
        except Exception as e:  # noqa: BLE001 - report and go on without flex
            flex_err = _short_error(e)
            flex_notes.append(f"{label}: flex failed ({flex_err})")
        else:
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fns["attend"](), ref, atol=1e-4, rtol=1e-4)
    if exact_causal:
        torch.testing.assert_close(fns["is_causal"](), ref, atol=1e-4, rtol=1e-4)
    # Calls of 10-700 ms under a noisy load: one call of each contender per round (no re-warm).
    res = bench(
        fns, args.attn_repeats, args.budget, warmup=1, rounds=args.attn_repeats, rewarm=False
    )
    a, d, db, ic = (res[n][0] for n in ("attend", "dense", "dense+build", "is_causal"))
    fx = res["flex"][0] if "flex" in res else None
    # attend's own backends for this mask, FlexAttention's compile spread over AMORTISE_CALLS
    # calls of the shape (attend's flex path reuses the kernel that call compiled).
    per_call = 0.0 if compile_s is None else compile_s * 1e3 / AMORTISE_CALLS
    own = {"dense": d}
    if fx is not None:
        own["flex"] = fx + per_call
    if exact_causal:
        own["sdpa_causal"] = ic
    a_amortised = a + (per_call if chosen == "flex" else 0.0)
    best = min(own, key=lambda n: own[n])
    r = own[best] / a_amortised
    verdicts.append((label, r))
    print(
        f"  {label}: attend[{chosen}] {fmt_ms(a)} ms, dense {fmt_ms(d)} ms, "
        f"dense+build {fmt_ms(db)} ms, is_causal {fmt_ms(ic)} ms, flex {fmt_ms(fx)} ms",
        flush=True,
    )
    return (
        label,
        chosen,
        fmt_ms(a_amortised),
        fmt_ms(d),
        fmt_ms(db),
        fmt_ms(ic) + ("" if exact_causal else " ‡"),
        ("failed" if flex_err else "skipped" if fx is None else fmt_ms(fx)),
        "n/a" if compile_s is None else f"{compile_s:.1f}",
        "n/a" if fx is None else fmt_ms(fx + per_call),
        f"{best} {fmt_ms(own[best])}",
        f"{r:.2f}",
        f"attend >= 0.95x best: {'met' if r >= 0.95 else 'MISSED'}",
    )


def part2(args: argparse.Namespace, threads: int) -> list[str]:
    torch.set_num_threads(threads)
    B, H, D = 2, 8, 64
    print(
        f"## Part 2: attention forward on CPU (torch threads {torch.get_num_threads()}, "
        f"B={B}, H={H}, D={D}, float32, no_grad; median of {args.attn_repeats} runs)"
    )
    print()
    rows: list[tuple[str, ...]] = []
    flex_notes: list[str] = []
    verdicts: list[tuple[str, float]] = []
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for L in args.attn_lengths:
            q, k, v = (torch.randn(B, H, L, D, generator=g) for _ in range(3))
            ids = doc_ids(B, L, seed=100 + L)
            cases = [
                ("causal", causal(), True),
                (f"causal & documents ({N_DOCS}/row)", causal() & documents(ids), False),
                (f"sliding_window({WINDOW})", sliding_window(WINDOW), False),
            ]
            for name, spec, exact_causal in cases:
                rows.append(
                    _attn_case(
                        args, q, k, v, f"{name}, L={L}", spec, exact_causal, flex_notes, verdicts
                    )
                )
                gc.collect()
    print()
    table(
        (
            "case",
            "attend backend",
            "attend",
            "SDPA dense mask (prebuilt)",
            "SDPA dense mask (built in call)",
            "SDPA is_causal",
            "flex (compiled)",
            "flex compile (s)",
            f"flex + compile / {AMORTISE_CALLS}",
            "best own backend",
            "best / attend",
            "target",
        ),
        [
            "---",
            "---",
            "---:",
            "---:",
            "---:",
            "---:",
            "---:",
            "---:",
            "---:",
            "---",
            "---:",
            "---",
        ],
        rows,
    )
    print(
        "Times in ms per call (median). attend: its time per call, plus the flex compile / "
        f"{AMORTISE_CALLS} when it picks flex. ‡ is_causal computes plain causal attention, not "
        'this mask: a speed reference only. flex = attend(..., backend="flex"): compiled '
        "FlexAttention with maskwise's BlockMask (cached on the spec, as attend does for a "
        "static spec); its first call (the compile) is excluded from 'flex' and shown as "
        f"'flex compile'. Own backends: dense (prebuilt: attend caches the mask of a static "
        "spec), flex with its compile spread over "
        f"{AMORTISE_CALLS} calls, and sdpa_causal where exact."
    )
    if flex_notes:
        print("Flex failures: " + "; ".join(flex_notes))
    print()
    if not verdicts:
        return []
    worst = min(r for _, r in verdicts)
    return [
        f"part 2: attend / best own backend {worst:.2f}..{max(r for _, r in verdicts):.2f} "
        f"(target >= 0.95: {'met' if worst >= 0.95 else 'MISSED'}; met in "
        f"{sum(r >= 0.95 for _, r in verdicts)} of {len(verdicts)} cases)"
    ]


# ----------------------------------------------------------------------------------------------
# Part 3: GPU forward + backward (also what benchmarks/gpu.py runs)
# ----------------------------------------------------------------------------------------------


class _GpuBatch:
    """Part 3 inputs for one L: (B, H, L, D) leaves, their packed copies for varlen (every token;
    and the real tokens of the padded batch), offsets."""

    def __init__(
        self,
        L: int,
        tokens: int,
        H: int,
        D: int,
        dtype: torch.dtype,
        g: torch.Generator,
        dev: torch.device,
    ) -> None:
        self.B, self.L, self.H, self.D = max(1, tokens // L), L, H, D
        B = self.B
        q0, k0, v0, do0 = (
            torch.randn(B, H, L, D, generator=g, device=dev, dtype=dtype) for _ in range(4)
        )
        self.q0, self.k0, self.v0, self.do = q0, k0, v0, do0
        self.q, self.k, self.v = (x.clone().requires_grad_() for x in (q0, k0, v0))
        # varlen_attn's natural input: already packed (tokens, H, D) leaves, offsets precomputed.
        self.qp, self.kp, self.vp = (self.pack(x).requires_grad_() for x in (q0, k0, v0))
        self.dop = self.pack(do0)
        ids = doc_ids(B, L, seed=200 + L)
        lens = [n for row in doc_lengths(ids) for n in row]
        self.ids = ids.to(dev)
        self.cu_rows = torch.arange(0, B * L + 1, L, device=dev, dtype=torch.int32)
        self.cu_docs = torch.tensor([0] + lens, device=dev).cumsum(0).to(torch.int32)
        self.max_doc = max(lens)
        # Padding: row b keeps its first lengths[b] tokens (at least L / 2), right padded.
        gl = torch.Generator().manual_seed(300 + L)
        self.lengths = torch.randint(L // 2, L + 1, (B,), generator=gl).to(dev)
        real = (torch.arange(L, device=dev) < self.lengths[:, None]).flatten()
        self.real_idx = real.nonzero().squeeze(1)  # flat indices of the real tokens
        self.qr, self.kr, self.vr = (
            self.pack(x)[self.real_idx].requires_grad_() for x in (q0, k0, v0)
        )
        self.dor = self.pack(do0)[self.real_idx]
        self.cu_pad = torch.cat([self.lengths.new_zeros(1), self.lengths.cumsum(0)]).to(torch.int32)
        self.max_pad = int(self.lengths.max())

    def pack(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, L, D) -> (B * L, H, D)
        return x.transpose(1, 2).reshape(self.B * self.L, self.H, self.D).contiguous()

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(self.B, self.L, self.H, self.D).transpose(1, 2)

    def unpack_real(self, x: torch.Tensor) -> torch.Tensor:  # (real, H, D) -> (B, H, L, D)
        full = x.new_zeros(self.B * self.L, self.H, self.D).index_copy(0, self.real_idx, x)
        return self.unpack(full)

    def zero_grads(self) -> None:
        for x in (self.q, self.k, self.v, self.qp, self.kp, self.vp, self.qr, self.kr, self.vr):
            x.grad = None

    def step(self, fwd: Callable[[], torch.Tensor], upstream: torch.Tensor) -> Callable[[], None]:
        """Forward + backward of ``fwd`` (fresh gradients each call)."""

        def run() -> None:
            self.zero_grads()
            fwd().backward(upstream)

        return run


def _cuda_ms(fn: Callable[[], object]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


#: part 3's contenders, in table order
GPU_CONTENDERS = ("attend", "flash is_causal", "flex", "varlen", "dense SDPA")


def _gpu_case(
    x: _GpuBatch,
    label: str,
    spec: mw.attention.AttentionSpec,
    peer_mask_mod: Callable[..., torch.Tensor],
    varlen_args: tuple[torch.Tensor, int, tuple[int, int], str],
    exact_causal: bool,
    flex_c: Callable[..., torch.Tensor] | None,
    repeats: int,
    budget_s: float,
    collect: bool = True,
) -> dict[str, object]:
    """Part 3 for one mask kind: every contender checked, timed (fwd + bwd) and measured."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.9
        varlen_attn = None

    dev = x.q.device
    cuda = dev.type == "cuda"
    B, L = x.B, x.L
    q, k, v = x.q, x.k, x.v
    chosen = choose_backend(spec, q, k, v)
    notes: dict[str, str] = {}
    errors: dict[str, str] = {}
    # name -> (forward, its output as (B, H, L, D), its upstream gradient, exact for this mask?)
    same = (lambda o: o), x.do
    contenders: dict[str, tuple[Callable[[], torch.Tensor], Callable, torch.Tensor, bool]] = {
        "attend": (lambda: attend(q, k, v, spec), *same, True),
    }

    def flash() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    contenders["flash is_causal"] = (flash, *same, exact_causal)
    if flex_c is None:
        errors["flex"] = "skipped"
    else:
        try:
            t0 = time.perf_counter()
            bm = create_block_mask(peer_mask_mod, B if spec.batch else None, None, L, L, device=dev)
            if cuda:
                torch.cuda.synchronize()
            notes["flex"] = (
                f"create_block_mask (eager, first call): {1e3 * (time.perf_counter() - t0):.1f} ms"
            )
            contenders["flex"] = (lambda: flex_c(q, k, v, block_mask=bm), *same, True)
        except Exception as e:  # noqa: BLE001 - report the failure, keep going
            errors["flex"] = _short_error(e)
    if varlen_attn is not None:
        cu, mx, win, which = varlen_args
        qv, kv_, vv = (x.qr, x.kr, x.vr) if which == "real" else (x.qp, x.kp, x.vp)
        contenders["varlen"] = (
            lambda: varlen_attn(qv, kv_, vv, cu, cu, mx, mx, window_size=win),
            x.unpack_real if which == "real" else x.unpack,
            x.dor if which == "real" else x.dop,
            True,
        )
    else:
        errors["varlen"] = "torch.nn.attention.varlen is missing"
    dense_mask = spec.dense(L, device=dev)
    live = dense_mask.any(-1, keepdim=True)  # (B or 1, 1, L, 1): query rows with a key
    # Rows with no key (padding) attend everything instead of giving NaN: the usual dense
    # workaround; what those rows hold is not compared (they are ignored downstream).
    finite_mask = dense_mask | ~live
    contenders["dense SDPA"] = (
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=finite_mask),
        *same,
        True,
    )

    # Check every exact contender's forward against a float32 dense reference on the rows
    # with a key, and run one forward + backward (this compiles where needed); what fails is
    # reported, not timed.
    with torch.no_grad():
        ref = F.scaled_dot_product_attention(
            x.q0.float(), x.k0.float(), x.v0.float(), attn_mask=finite_mask
        ).masked_fill(~live, 0.0)
    fns: dict[str, Callable[[], None]] = {}
    exact: dict[str, bool] = {}
    for key, (fwd, to_full, upstream, is_exact) in contenders.items():
        try:
            if is_exact:
                with torch.no_grad():
                    o = to_full(fwd()).float().masked_fill(~live, 0.0)
                torch.testing.assert_close(o, ref, atol=3e-2, rtol=3e-2)
                del o
            run = x.step(fwd, upstream)
            run()
            if cuda:
                torch.cuda.synchronize()
            fns[key], exact[key] = run, is_exact
        except Exception as e:  # noqa: BLE001
            errors[key] = _short_error(e)
    del ref

    timer, sync = (_cuda_ms, torch.cuda.synchronize) if cuda else (_time_ms, lambda: None)
    res = bench(fns, repeats, budget_s, warmup=2, timer=timer, sync=sync, collect=collect)
    peaks: dict[str, int] = {}
    for key, f in fns.items() if cuda else ():
        x.zero_grads()
        gc.collect()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        f()
        torch.cuda.synchronize()
        peaks[key] = torch.cuda.max_memory_allocated() - base
    x.zero_grads()

    a = res["attend"][0] if "attend" in res else None
    best_key = min(
        (n for n in res if exact[n] and n != "attend"), key=lambda n: res[n][0], default=None
    )
    met: bool | None = None
    if a is None:
        verdict = f"attend FAILED ({errors.get('attend')})"
    elif best_key is None:
        verdict = "no exact peer ran"
    else:
        best = res[best_key][0]
        met = a <= 1.05 * best
        verdict = (
            f"within 5 % of best ({best_key}): attend/best = {a / best:.3f}, "
            f"{'met' if met else 'MISSED'}"
        )
    print(
        f"  {label}: " + ", ".join(f"{n} {fmt_ms(t)} ms" for n, (t, _) in res.items()), flush=True
    )
    return {
        "case": label,
        "chosen": chosen,
        "ms": {n: t for n, (t, _) in res.items()},
        "exact": exact,
        "peak_bytes": peaks,
        "errors": errors,
        "notes": notes,
        "best": best_key,
        "met": met,
        "verdict": verdict,
    }


def gpu_rows(result: dict[str, object]) -> list[tuple[str, ...]]:
    """Part 3's table rows for one case (see ``_gpu_case``)."""
    ms, exact, peaks = result["ms"], result["exact"], result["peak_bytes"]
    errors, notes = result["errors"], result["notes"]
    assert isinstance(ms, dict) and isinstance(exact, dict) and isinstance(peaks, dict)
    assert isinstance(errors, dict) and isinstance(notes, dict)
    a = ms.get("attend")
    rows: list[tuple[str, ...]] = []
    for key in GPU_CONTENDERS:
        if key in ms:
            t = ms[key]
            cell = fmt_ms(t) + ("" if exact[key] else " ‡")
            rel = f"{t / a:.2f}" if a else "n/a"
            mem_txt = fmt_bytes(peaks.get(key))
        else:
            err = errors.get(key, "?")
            cell = "skipped" if err == "skipped" else f"failed: {err}"
            rel, mem_txt = "n/a", "n/a"
        rows.append(
            (
                str(result["case"]) if key == "attend" else "",
                key + (f" [{result['chosen']}]" if key == "attend" else ""),
                cell,
                rel,
                mem_txt,
                str(result["verdict"]) if key == "attend" else notes.get(key, ""),
            )
        )
    return rows


GPU_HEADER = ("case", "contender", "fwd+bwd (ms)", "time / attend", "peak extra memory", "note")
GPU_NOTE = (
    "‡ plain causal attention, not this mask: a speed reference only. flex: compiled "
    "FlexAttention, BlockMask from create_block_mask with the peer's own idiomatic "
    "mask_mod (q >= kv, & ids[b, q] == ids[b, kv], & q - kv < 256, & q, kv < length[b]), "
    "built once outside the timed call. varlen: varlen_attn on pre-packed (tokens, H, D) leaves "
    "with precomputed offsets (for padding: the real tokens only). attend: (B, H, L, D) in and "
    "out, its mask lowering (cached for these static specs) and its packing inside the timed "
    "call. Peak extra memory: torch.cuda.max_memory_allocated during one call minus the memory "
    "allocated before it (the new q/k/v gradients included)."
)


def gpu_attention(
    lengths: list[int],
    repeats: int,
    budget_s: float,
    dev: torch.device,
    shape: tuple[int, int, int] = GPU_SHAPE,
    dtype: torch.dtype = torch.bfloat16,
    flex: bool = True,
    deadline: float | None = None,
    collect: bool = True,
) -> list[dict[str, object]]:
    """Part 3's cases (forward + backward; causal, causal & documents, sliding window, causal &
    padding) for each L, one result dict per case (see ``_gpu_case``). Cases not started by
    ``deadline`` (a ``time.perf_counter()`` value) are returned as skipped."""
    from torch.nn.attention.flex_attention import flex_attention

    TOKENS, H, D = shape
    flex_c = torch.compile(flex_attention, dynamic=False) if flex else None
    results: list[dict[str, object]] = []
    g = torch.Generator(device=dev).manual_seed(0)
    for L in lengths:
        x = _GpuBatch(L, TOKENS, H, D, dtype, g, dev)
        ids, lens = x.ids, x.lengths
        # The flex peer's own, idiomatic mask_mods (attention-gym style), not maskwise's.
        doc_mm = doc_mask_mod(ids)

        def causal_mm(b, h, q, kv):
            return q >= kv

        def docs_mm(b, h, q, kv, doc_mm=doc_mm):
            return (q >= kv) & doc_mm(b, h, q, kv)

        def window_mm(b, h, q, kv):
            return (q >= kv) & (q - kv < WINDOW)

        def pad_mm(b, h, q, kv, lens=lens):
            return (q >= kv) & (q < lens[b]) & (kv < lens[b])

        kinds = [
            ("causal", causal(), causal_mm, (x.cu_rows, L, (-1, 0), "all"), True),
            (
                f"causal & documents ({N_DOCS}/row)",
                causal() & documents(ids),
                docs_mm,
                (x.cu_docs, x.max_doc, (-1, 0), "all"),
                False,
            ),
            # varlen's window (w, 0) admits w + 1 keys; sliding_window(W) admits W.
            (
                f"sliding_window({WINDOW})",
                sliding_window(WINDOW),
                window_mm,
                (x.cu_rows, L, (WINDOW - 1, 0), "all"),
                False,
            ),
            (
                "causal & padding",
                causal() & mw.attention.padding(lens),
                pad_mm,
                (x.cu_pad, x.max_pad, (-1, 0), "real"),
                False,
            ),
        ]
        for name, spec, peer_mm, varlen_args, exact_causal in kinds:
            label = f"{name}, B={x.B}, L={L}"
            if deadline is not None and time.perf_counter() > deadline:
                results.append({"case": label, "skipped": "time budget spent"})
                continue
            results.append(
                _gpu_case(
                    x,
                    label,
                    spec,
                    peer_mm,
                    varlen_args,
                    exact_causal,
                    flex_c,
                    repeats,
                    budget_s,
                    collect,
                )
            )
            if dev.type == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
        del x
    return results


def part3(args: argparse.Namespace) -> list[str]:
    if not torch.cuda.is_available():
        print(
            "## Part 3: GPU forward + backward -- SKIPPED: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}); nothing measured (benchmarks/gpu.py runs it too)."
        )
        print()
        return ["part 3 (GPU, attend within 5 % of the best): not measured (no GPU)"]
    dev = torch.device(GPU)
    TOKENS, H, D = GPU_SHAPE
    print(
        f"## Part 3: GPU forward + backward ({torch.cuda.get_device_name(dev)}, bf16, "
        f"{TOKENS} tokens per batch, H={H}, D={D}; median of {args.gpu_repeats} runs, CUDA events)"
    )
    print()
    results = gpu_attention(args.gpu_lengths, args.gpu_repeats, args.budget, dev)
    print()
    rows = [r for res in results for r in gpu_rows(res)]
    table(GPU_HEADER, ["---", "---", "---:", "---:", "---:", "---"], rows)
    print(GPU_NOTE)
    print()
    return [f"part 3: {res['case']}: {res['verdict']}" for res in results]


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--_rss-child":
        warnings.simplefilter("ignore")
        rss_child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="part 1: timed runs per contender")
    parser.add_argument(
        "--attn-repeats", type=int, default=7, help="part 2: timed runs per contender"
    )
    parser.add_argument(
        "--gpu-repeats", type=int, default=20, help="part 3: timed runs per contender"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=3.0,
        help="seconds of timed calls after which a slow contender stops (min 3 runs)",
    )
    parser.add_argument("--parts", default="123", help="which parts to run (default 123)")
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[4096, 16384, 32768], help="part 1 lengths"
    )
    parser.add_argument(
        "--attn-lengths", type=int, nargs="+", default=[1024, 2048], help="part 2 lengths"
    )
    parser.add_argument(
        "--gpu-lengths", type=int, nargs="+", default=[4096, 16384], help="part 3 lengths"
    )
    parser.add_argument(
        "--skip-compiled",
        action="store_true",
        help="part 1: skip the compiled create_block_mask (saves ~10 s of compile per case)",
    )
    parser.add_argument(
        "--skip-flex",
        action="store_true",
        help="part 2: skip compiled FlexAttention (saves ~6-16 s of compile per case)",
    )
    parser.add_argument(
        "--no-rss",
        dest="rss",
        action="store_false",
        help="part 1: skip the subprocess RSS cross-check",
    )
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="use Inductor's default on-disk cache (compile times then depend on "
        "earlier runs) instead of a fresh temporary one",
    )
    args = parser.parse_args(argv)
    if min(args.repeats, args.attn_repeats, args.gpu_repeats) < 1:
        parser.error("repeats must be >= 1")

    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # the profiler's start/stop chatter on stderr
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TF32.*")
    import torch._dynamo

    # Every (mask, length) is a new compile of the same function; keep them all compiled.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 1024

    if args.warm_cache:
        _run(args)
        return
    with tempfile.TemporaryDirectory(prefix="maskwise_inductor_") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read at each compile: cold compiles
        _run(args)


def _run(args: argparse.Namespace) -> None:
    threads = torch.get_num_threads()
    t_start = time.perf_counter()
    print(
        f"torch {torch.__version__}, maskwise {mw.__version__}, torch threads available {threads}, "
        f"CUDA available {torch.cuda.is_available()}"
    )
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    print()
    inductor_cache = (
        "default (warm: compile times depend on earlier runs)"
        if args.warm_cache
        else "fresh temporary directory (cold compiles)"
    )
    print(f"Inductor cache: {inductor_cache}")
    print()
    summary: list[str] = []
    took: list[str] = []
    for part, fn in (
        ("1", lambda: part1(args)),
        ("2", lambda: part2(args, threads)),
        ("3", lambda: part3(args)),
    ):
        if part in args.parts:
            t0 = time.perf_counter()
            summary += fn()
            took.append(f"part {part} {time.perf_counter() - t0:.0f} s")
    print("Summary: " + "; ".join(summary) + ".")
    print(
        f"total time {time.perf_counter() - t_start:.0f} s ({', '.join(took)}); "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
