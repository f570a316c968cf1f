"""Timing helpers shared by the benchmark scripts (not part of the package).

``compare`` times maskwise and its peer side by side in one process: both warmed up, then timed
in interleaved rounds (each side's calls back to back after one untimed call, so neither times
the other's cache footprint, while slow drift of the machine hits both alike); medians.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

__all__ = ["compare", "fmt_ms", "machine", "time_ms"]


def time_ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def compare(
    mw_fn: Callable[[], object],
    peer_fn: Callable[[], object] | None,
    repeats: int,
    warmup: int = 3,
    peer_budget_s: float | None = None,
    rounds: int = 3,
) -> tuple[float, float | None, int]:
    """Median ms of ``mw_fn`` and ``peer_fn`` over ``repeats`` timed calls each.

    Both are warmed up (``warmup`` calls each), then timed in ``rounds`` rounds; in a round each
    library runs its share of the calls back to back after one more untimed call, so neither
    times the other's cache footprint, while slow drift of the machine hits both alike. With
    ``peer_budget_s`` (for slow peers) the peer gets no extra untimed calls and stops once its
    runs add up to that many seconds (at least 3 runs). Returns (mw_ms, peer_ms, peer_runs).
    """
    for _ in range(warmup):
        mw_fn()
        if peer_fn is not None:
            peer_fn()
    mw_t: list[float] = []
    peer_t: list[float] = []
    rounds = max(1, min(rounds, repeats))
    for i in range(rounds):
        share = repeats // rounds + (1 if i < repeats % rounds else 0)
        gc.collect()
        mw_fn()
        mw_t.extend(time_ms(mw_fn) for _ in range(share))
        if peer_fn is None:
            continue
        if peer_budget_s is None:
            peer_fn()  # untimed: re-warm after maskwise's calls
        for _ in range(share):
            if (
                peer_budget_s is not None
                and len(peer_t) >= 3
                and sum(peer_t) >= peer_budget_s * 1e3
            ):
                break
            peer_t.append(time_ms(peer_fn))
    return (statistics.median(mw_t), statistics.median(peer_t) if peer_t else None, len(peer_t))


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def machine() -> str:
    """One line: CPU model (lscpu, else platform.processor()), CPU count, hypervisor, OS."""
    info: dict[str, str] = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    name = info.get("Model name") or platform.processor() or platform.machine()
    if "CPU family" in info and "Model" in info:
        name += f" (family {info['CPU family']}, model {info['Model']})"
    hyper = f", {info['Hypervisor vendor']} guest" if info.get("Hypervisor vendor") else ""
    return (
        f"{name}, {os.cpu_count()} logical CPUs{hyper}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )
