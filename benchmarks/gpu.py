"""The GPU run in one step: every GPU case of the benchmarks and the CUDA tests; one JSON and one
Markdown table.

Run from the repository root on a machine with a CUDA GPU (under 8 minutes: the attention
section starts no new case after ``--budget-min`` minutes, 5 by default, and the CUDA tests,
run last, get what is left of ``--total-min``, 7.5 by default, at least 90 s)::

    python benchmarks/gpu.py --out gpu-results

It also runs anywhere with tiny shapes (the test suite does this on CPU, so the script is known to
run where no GPU is lent)::

    python benchmarks/gpu.py --device cpu --smoke --out /tmp/gpu-smoke

Sections (``--sections masks,blockmask,attention,tests``, in that order):

1. **masks**: every masker of ``maskwise.functional`` on the device at the CPU benchmarks' shapes
   (64 x 512 tokens, 256 images of 224 x 224 / 14 x 14 patches, 64 x 80 x 1000 spectrograms):
   median time, and whether one call runs with no host sync
   (``torch.cuda.set_sync_debug_mode("error")`` around it; "n/a" off CUDA).
2. **blockmask**: ``spec.block_mask(L, device=...)`` for ``causal()``, ``documents`` (8 per row)
   and ``sliding_window(256)`` at L = 4096, 16384 and 32768: median time and the same sync check.
3. **attention**: forward + backward in bf16, 16384 tokens per batch, H = 16, D = 128, L = 4096
   and 16384, for causal, causal & documents, sliding window and causal & padding: ``attend``
   against FlashAttention ``is_causal``, compiled FlexAttention, ``varlen_attn`` and dense SDPA
   (``benchmarks/attention.py`` part 3, imported from there). Target: ``attend`` within 5 % of
   the fastest exact contender per mask kind. Cases are run L by L, so every mask kind gets
   its L = 4096 row before any L = 16384 one; cases not started in time are marked skipped.
4. **tests**: ``pytest -m gpu tests`` in a subprocess (the CUDA tests), its summary line and
   failures.

Writes ``gpu.json`` and ``gpu.md`` to ``--out``. Times are medians (CUDA events on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import attention as attn_bench  # noqa: E402  (part 3 and the inputs: one copy of that code)
from _harness import machine  # noqa: E402

import maskwise as mw  # noqa: E402
import maskwise.functional as MF  # noqa: E402
from maskwise.attention import causal, documents, sliding_window  # noqa: E402

SECTIONS = ("masks", "blockmask", "attention", "tests")


# ----------------------------------------------------------------------------------------------
# Timing and the sync check
# ----------------------------------------------------------------------------------------------
def _timer(dev: torch.device) -> Callable[[Callable[[], object]], float]:
    if dev.type == "cuda":
        return attn_bench._cuda_ms
    return attn_bench._time_ms


def median_ms(fn: Callable[[], object], dev: torch.device, repeats: int) -> float:
    timer = _timer(dev)
    fn()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return statistics.median(timer(fn) for _ in range(repeats))


def no_host_sync(fn: Callable[[], object], dev: torch.device) -> str:
    """ "yes" if one call of ``fn`` makes no host sync (CUDA sync debug mode "error"), "NO: ..."
    if it does, "n/a" off CUDA."""
    if dev.type != "cuda":
        return "n/a"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return "yes"
    except RuntimeError as e:
        return "NO: " + attn_bench._short_error(e)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()


def _case(name: str, fn: Callable[[], object], dev: torch.device, repeats: int) -> dict[str, Any]:
    try:
        sync = no_host_sync(fn, dev)
        ms = median_ms(fn, dev, repeats)
        print(f"  {name}: {attn_bench.fmt_ms(ms)} ms, no host sync: {sync}", flush=True)
        return {"case": name, "ms": ms, "no_host_sync": sync}
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"  {name}: FAILED {attn_bench._short_error(e)}", flush=True)
        return {"case": name, "error": attn_bench._short_error(e)}


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------
def masker_cases(dev: torch.device, smoke: bool) -> dict[str, Callable[[], object]]:
    """Every masker at the CPU benchmarks' shapes (``smoke``: tiny ones), inputs made here."""
    B, L = (4, 32) if smoke else (64, 512)
    imgs, side, grid = (4, 32, 4) if smoke else (256, 224, 14)
    sb, freq, frames = (4, 80, 100) if smoke else (64, 80, 1000)
    g = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(5, 30000, (B, L), device=dev, generator=g)
    ids[:, 0] = 1  # a special token
    valid = torch.ones(B, L, dtype=torch.bool, device=dev)
    words = (torch.arange(L, device=dev) // 3).expand(B, L).contiguous()
    masked = MF.mask_tokens(ids, 0.15, special_ids=(1,), generator=g)
    spans = MF.mask_spans(valid, 0.15, generator=g)
    images = torch.rand(imgs, 3, side, side, device=dev, generator=g)
    spec = torch.rand(sb, freq, frames, device=dev, generator=g)
    lengths = torch.full((sb,), frames, device=dev)
    feats = torch.rand(sb, frames, freq, device=dev, generator=g)
    tokens = torch.rand(imgs, grid * grid + 1, 64 if smoke else 768, device=dev, generator=g)
    sentinels = list(range(32000, 32000 + L))
    return {
        "mask_tokens (exact=False)": lambda: MF.mask_tokens(
            ids, 0.15, special_ids=(1,), generator=g
        ),
        "mask_tokens (exact=True)": lambda: MF.mask_tokens(
            ids, 0.15, special_ids=(1,), exact=True, generator=g
        ),
        "corrupt (80/10/10)": lambda: MF.corrupt(
            ids, masked, mask_id=103, vocab_size=30000, generator=g
        ),
        "mask_words": lambda: MF.mask_words(words, 0.15, generator=g),
        "mask_spans (geometric, mean 3)": lambda: MF.mask_spans(valid, 0.15, generator=g),
        "t5_corrupt": lambda: MF.t5_corrupt(ids, spans, sentinel_ids=sentinels, eos_id=1, pad_id=0),
        "mask_patches (0.75)": lambda: MF.mask_patches(
            imgs, grid * grid, 0.75, device=dev, generator=g
        ),
        "mask_blocks (BEiT)": lambda: MF.mask_blocks(
            imgs, grid, max(1, (grid * grid * 75) // 196), min_block=4, device=dev, generator=g
        ),
        "mask_coarse": lambda: MF.mask_coarse(imgs, grid, 0.75, device=dev, generator=g),
        "erase (p=0.5)": lambda: MF.erase(images, p=0.5, generator=g),
        "spec_augment (LD)": lambda: MF.spec_augment(spec, policy="LD", generator=g),
        "mask_time_spans (wav2vec2)": lambda: MF.mask_time_spans(
            lengths, frames, 0.65, span=10, generator=g
        ),
        "mask_features": lambda: MF.mask_features(feats, 0.1, generator=g),
        "drop_tokens (0.5)": lambda: MF.drop_tokens(tokens, 0.5, num_prefix_tokens=1, generator=g),
    }


def run_masks(dev: torch.device, smoke: bool, repeats: int) -> list[dict[str, Any]]:
    print("## masks", flush=True)
    try:
        cases = masker_cases(dev, smoke)
    except Exception as e:  # noqa: BLE001 - the inputs themselves failed
        return [{"case": "inputs", "error": attn_bench._short_error(e)}]
    return [_case(name, fn, dev, repeats) for name, fn in cases.items()]


def run_blockmask(dev: torch.device, lengths: list[int], repeats: int) -> list[dict[str, Any]]:
    print("## blockmask", flush=True)
    out = []
    for L in lengths:
        specs = {
            "causal": causal(),
            f"documents ({attn_bench.N_DOCS})": documents(attn_bench.doc_ids(1, L, L).to(dev)),
            f"sliding_window({attn_bench.WINDOW})": sliding_window(attn_bench.WINDOW),
        }
        for name, spec in specs.items():
            out.append(
                _case(
                    f"{name}, L={L}",
                    lambda spec=spec, L=L: spec.block_mask(L, device=dev),
                    dev,
                    repeats,
                )
            )
    return out


def run_tests(timeout_s: float) -> dict[str, Any]:
    print("## tests: pytest -m gpu tests", flush=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd[1:]), "summary": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.strip()]
    summary = lines[-1] if lines else res.stderr.strip()[-300:]
    print(f"  {summary}", flush=True)
    return {
        "command": "python " + " ".join(cmd[1:]),
        "returncode": res.returncode,
        "summary": summary,
        "seconds": round(time.perf_counter() - t0, 1),
        "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:50],
    }


def run_attention(args: argparse.Namespace, dev: torch.device, deadline: float) -> list[Any]:
    print("## attention (forward + backward)", flush=True)
    shape = (128, 2, 16) if args.smoke else attn_bench.GPU_SHAPE
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return attn_bench.gpu_attention(
        args.attn_lengths,
        args.repeats_attn,
        args.budget,
        dev,
        shape=shape,
        dtype=dtype,
        flex=not args.no_flex,
        deadline=deadline,
        collect=not args.smoke,
    )


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"# GPU run ({meta['device_name']})",
        "",
        f"torch {meta['torch']}, maskwise {meta['maskwise']}, commit {meta['commit']}; "
        f"{meta['machine']}; {meta['seconds']:.0f} s in all. Command: `{meta['command']}`.",
        "",
    ]
    fmt = attn_bench.fmt_ms
    if "masks" in report:
        lines += ["## Mask generation", ""]
        rows = [
            (r["case"], fmt(r.get("ms")), r.get("no_host_sync", "n/a"), r.get("error", ""))
            for r in report["masks"]
        ]
        lines += _md_table(("masker", "ms (median)", "no host sync", "error"), rows)
    if "blockmask" in report:
        lines += ["## BlockMask build", ""]
        rows = [
            (r["case"], fmt(r.get("ms")), r.get("no_host_sync", "n/a"), r.get("error", ""))
            for r in report["blockmask"]
        ]
        lines += _md_table(("spec", "ms (median)", "no host sync", "error"), rows)
    if "attention" in report:
        lines += ["## Attention forward + backward", ""]
        rows: list[tuple[str, ...]] = []
        for res in report["attention"]:
            if "skipped" in res:
                rows.append((res["case"], "skipped", res["skipped"], "", "", ""))
            else:
                rows += attn_bench.gpu_rows(res)
        lines += _md_table(attn_bench.GPU_HEADER, rows)
        lines += [attn_bench.GPU_NOTE, ""]
    if "tests" in report:
        t = report["tests"]
        lines += ["## CUDA tests", "", f"`{t.get('command')}`: {t.get('summary')}", ""]
        lines += [f"- {f}" for f in t.get("failures", [])] + ([""] if t.get("failures") else [])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-results", help="folder for gpu.json and gpu.md")
    parser.add_argument(
        "--device", default=None, help="default: cuda if available, else cpu (then tiny shapes)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, few repeats")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=20, help="masks and blockmask: timed runs")
    parser.add_argument("--repeats-attn", type=int, default=10, help="attention: timed runs")
    parser.add_argument("--budget", type=float, default=2.0, help="attention: s per contender")
    parser.add_argument(
        "--budget-min", type=float, default=5.0, help="attention: no new case after this"
    )
    parser.add_argument(
        "--total-min", type=float, default=7.5, help="the tests get what is left of this"
    )
    parser.add_argument("--block-lengths", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--attn-lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--no-flex", action="store_true", help="attention: skip compiled flex")
    parser.add_argument("--tests-timeout", type=float, default=None, help="default: the rest")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import torch._dynamo

    # Every (mask_mod, length) is a new compile of the same flex function: keep them compiled
    # (past the default limit of 8, dynamo would fall back to eager FlexAttention).
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 1024
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type != "cuda" and not args.smoke:
        print("no CUDA device: running the tiny --smoke shapes on", dev)
        args.smoke = True
    if args.smoke:
        args.repeats, args.repeats_attn, args.budget = min(args.repeats, 3), 2, 0.5
        args.block_lengths, args.attn_lengths = [256], [64]
        args.no_flex = args.no_flex or dev.type != "cuda"  # a CPU compile takes ~10 s
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "?"
    report: dict[str, Any] = {
        "meta": {
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
            "torch": torch.__version__,
            "maskwise": mw.__version__,
            "commit": commit or "?",
            "machine": machine(),
            "smoke": args.smoke,
            "command": "python benchmarks/gpu.py " + " ".join(argv or sys.argv[1:]),
        }
    }
    deadline = t_start + 60 * args.budget_min
    for section in SECTIONS:
        if section not in sections:
            continue
        if section == "masks":
            report["masks"] = run_masks(dev, args.smoke, args.repeats)
        elif section == "blockmask":
            report["blockmask"] = run_blockmask(dev, args.block_lengths, args.repeats)
        elif section == "tests":
            left = t_start + 60 * args.total_min - time.perf_counter()
            report["tests"] = run_tests(args.tests_timeout or max(90.0, left))
        else:
            report["attention"] = run_attention(args, dev, deadline)
    report["meta"]["seconds"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu.md").write_text(markdown(report))
    print(f"wrote {out / 'gpu.json'} and {out / 'gpu.md'} ({report['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")
    sys.exit(main())
