"""Image and speech masking benchmark: maskwise against its peers, side by side.

Run from the repository root::

    python benchmarks/vision_speech.py   # default: --repeats 30 --rounds 10 --timm-wheel /tmp/timm

Everything runs in one process on one CPU thread (``torch.set_num_threads(1)``). Each case is
warmed up, then maskwise and its peer are timed alternately ``--repeats`` times each, in
``--rounds`` interleaved rounds (more rounds than ``benchmarks/text.py``'s three, because load
from other jobs on a small machine comes and goes within seconds), and the MEDIAN wall time is
reported. Inputs are random tensors made here
with fixed seeds; nothing is read from or written to the repository.

Cases:

1. wav2vec2 time spans, 64x1000, mask_prob 0.65, span 10: ``mw.mask_time_spans`` against
   transformers' ``_compute_mask_indices`` (numpy), whose result is turned into a torch bool
   tensor inside the timed call; without and with an attention mask (lengths 200..1000).
2. Random erasing, 256x3x224x224, p = 0.5: ``mw.erase`` against timm's ``RandomErasing``
   (``mode='const'``), which loops over the samples of a 4-D batch and erases in place. Only
   ``timm/data/random_erasing.py`` is loaded from a timm wheel (``pip download --no-deps timm``),
   so timm's package ``__init__`` (which imports torchvision) never runs.
3. Reference implementations written here, faithful to the original algorithms:
   BEiT's ``MaskingGenerator`` run per sample (256 samples, 14x14, 75 cells) against
   ``mw.mask_blocks``; MAE random masking + gather, 256x196x768, per-sample loop and MAE's own
   batched ``random_masking``, against ``mw.mask_patches`` + ``mw.keep_indices`` + gather;
   guided ``mw.mask_patches(scores=...)`` against plain ``mw.mask_patches``; SpecAugment LD on
   64x80x1000 with per-row masks, a row-by-row port of torchaudio's ``mask_along_axis``, against
   ``mw.spec_augment(policy="LD")``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import os
import random
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import maskwise as mw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import compare, fmt_ms, machine  # noqa: E402

TIMM_MEMBER = "timm/data/random_erasing.py"


# ----------------------------------------------------------------------------------------------
# Peers
# ----------------------------------------------------------------------------------------------


def load_timm_random_erasing(wheel_dir: Path, tmp: Path):
    """timm's ``RandomErasing`` class from the newest timm wheel in ``wheel_dir``, or None.

    Only ``timm/data/random_erasing.py`` is extracted (into ``tmp``) and imported as a module of
    its own; it imports nothing but ``random``, ``math`` and ``torch``.
    """
    wheels = sorted(wheel_dir.glob("timm-*.whl")) if wheel_dir.is_dir() else []
    if not wheels:
        return None, None
    wheel = wheels[-1]
    with zipfile.ZipFile(wheel) as z:
        path = Path(z.extract(TIMM_MEMBER, tmp))
    spec = importlib.util.spec_from_file_location("_timm_random_erasing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.RandomErasing, wheel.name


class BeitMaskingGenerator:
    """BEiT's ``MaskingGenerator`` (microsoft/unilm, beit/masking_generator.py).

    One sample per call. As in BEiT pre-training: ``min_num_patches=16``
    (``--min_mask_patches_per_block``), ``max_num_patches=None`` (= the number of cells to mask),
    aspect (0.3, 1/0.3), Python's ``random`` for the draws, a numpy int array for the mask. Only
    ``np.int`` (removed from numpy) became ``int``.
    """

    def __init__(
        self,
        input_size: int,
        num_masking_patches: int,
        min_num_patches: int = 16,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ):
        self.height, self.width = (input_size, input_size)
        self.num_patches = self.height * self.width
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def _mask(self, mask: np.ndarray, max_mask_patches: int) -> int:
        delta = 0
        for _attempt in range(10):
            target_area = random.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = random.randint(0, self.height - h)
                left = random.randint(0, self.width - w)
                num_masked = mask[top : top + h, left : left + w].sum()
                # Overlap
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
                if delta > 0:
                    break
        return delta

    def __call__(self) -> np.ndarray:
        mask = np.zeros(shape=(self.height, self.width), dtype=int)
        mask_count = 0
        while mask_count < self.num_masking_patches:
            max_mask_patches = self.num_masking_patches - mask_count
            max_mask_patches = min(max_mask_patches, self.max_num_patches)
            delta = self._mask(mask, max_mask_patches)
            if delta == 0:
                break
            mask_count += delta
        return mask


def beit_batch(gen: BeitMaskingGenerator, batch: int) -> torch.Tensor:
    """One BEiT mask per sample (as the dataset's ``__getitem__`` does), stacked to bool
    (B, H, W).
    """
    return torch.from_numpy(np.stack([gen() for _ in range(batch)])).bool()


def mae_per_sample(x: torch.Tensor, len_keep: int) -> torch.Tensor:
    """MAE's random masking as a per-sample loop: shuffle by argsort of noise, keep the first."""
    B, N, D = x.shape
    out = torch.empty(B, len_keep, D, dtype=x.dtype)
    for i in range(B):
        noise = torch.rand(N)
        ids_shuffle = torch.argsort(noise)
        ids_keep = ids_shuffle[:len_keep]
        out[i] = x[i, ids_keep]
    return out


def mae_random_masking(x: torch.Tensor, mask_ratio: float):
    """MAE's batched ``random_masking`` (facebookresearch/mae, models_mae.py), inline."""
    N, L, D = x.shape
    len_keep = int(L * (1 - mask_ratio))
    noise = torch.rand(N, L, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
    mask = torch.ones([N, L], device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return x_masked, mask, ids_restore


def mask_along_axis(row: torch.Tensor, mask_param: int, axis: int, limit: int) -> torch.Tensor:
    """torchaudio's ``mask_along_axis`` for one (F, T) row, mask value 0, with two changes: the
    width is uniform in {0, ..., mask_param} (torchaudio: ``floor(rand * mask_param)``) and the
    start uniform in {0, ..., limit - width}, where ``limit`` is the row's real length (time) or F,
    so the distributions are those of ``mw.spec_augment``."""
    width = int(torch.randint(0, mask_param + 1, (1,)))
    width = min(width, limit)
    start = int(torch.randint(0, limit - width + 1, (1,)))
    idx = torch.arange(0, row.shape[axis], dtype=torch.long)
    mask = (idx >= start) & (idx < start + width)
    if axis == 0:
        mask = mask.unsqueeze(-1)
    return row.masked_fill(mask, 0.0)


def spec_augment_rows(spec: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """SpecAugment LD row by row: 2 frequency masks (F = 27), 2 time masks (T = 100) per row."""
    F = spec.shape[1]
    rows = []
    for b in range(spec.shape[0]):
        row = spec[b]
        for _ in range(2):
            row = mask_along_axis(row, 27, 0, F)
        for _ in range(2):
            row = mask_along_axis(row, 100, 1, lengths[b])
        rows.append(row)
    return torch.stack(rows)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


class Run:
    """What every case needs: the options, one maskwise generator, the table rows and notes."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.g = torch.Generator().manual_seed(0)
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.notes: list[str] = []

    def compare(
        self, mw_fn: Callable[[], object], peer_fn: Callable[[], object] | None
    ) -> tuple[float, float | None]:
        m, p, _ = compare(mw_fn, peer_fn, self.args.repeats, rounds=self.args.rounds)
        return m, p

    def add(self, case: str, m: float | None, p: float | None, target: str) -> None:
        speed = f"{p / m:.2f}x" if (m and p) else "n/a"
        self.rows.append((case, fmt_ms(m), fmt_ms(p), speed, target))


def case_time_spans(run: Run) -> None:
    """wav2vec2 time spans against transformers' _compute_mask_indices."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

    g = run.g
    B, T, RATE, SPAN = 64, 1000, 0.65, 10
    full = torch.full((B,), T, dtype=torch.long)
    lengths = torch.randint(200, T + 1, (B,), generator=torch.Generator().manual_seed(1))
    att = (torch.arange(T) < lengths[:, None]).long()  # right-padded attention mask

    def mw_full():
        return mw.mask_time_spans(full, T, RATE, span=SPAN, generator=g)

    def hf_full():
        return torch.from_numpy(_compute_mask_indices((B, T), RATE, SPAN))

    def mw_att():  # a user holds the attention mask: its row sums are maskwise's lengths
        return mw.mask_time_spans(att.sum(-1), T, RATE, span=SPAN, generator=g)

    def hf_att():
        return torch.from_numpy(_compute_mask_indices((B, T), RATE, SPAN, attention_mask=att))

    for label, mw_fn, hf_fn in (
        ("no attention mask", mw_full, hf_full),
        ("attention mask (lengths 200..1000)", mw_att, hf_att),
    ):
        m, p = run.compare(mw_fn, hf_fn)
        run.add(
            f"wav2vec2 time spans, {B}x{T}, {label}",
            m,
            p,
            f">= 1.5x: {'met' if p / m >= 1.5 else 'MISSED'}",
        )
    real = att.bool()
    run.notes.append(
        "time spans, masked share of real frames (one call each): no mask: maskwise "
        f"{mw_full().float().mean():.3f}, transformers {hf_full().float().mean():.3f}; "
        f"attention mask: maskwise {mw_att()[real].float().mean():.3f}, transformers "
        f"{hf_att()[real].float().mean():.3f}; frames masked in padding: maskwise "
        f"{int(mw_att()[~real].sum())}, transformers {int(hf_att()[~real].sum())}"
    )


def case_erase(run: Run) -> None:
    """Random erasing against timm's RandomErasing (skipped without a timm wheel)."""
    g, args = run.g, run.args
    with tempfile.TemporaryDirectory() as tmp:
        RandomErasing, wheel = load_timm_random_erasing(args.timm_wheel, Path(tmp))
    B, C, H, W = 256, 3, 224, 224
    images = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(2))
    scale, ratio = (0.02, 1 / 3), (0.3, 1 / 0.3)  # timm's defaults, passed to maskwise explicitly

    def mw_erase():
        return mw.erase(images, p=0.5, scale=scale, ratio=ratio, generator=g)

    if RandomErasing is None:
        m, _ = run.compare(mw_erase, None)
        run.add(
            f"random erasing, {B}x{C}x{H}x{W}",
            m,
            None,
            f"none (report only); timm row skipped: no timm wheel in {args.timm_wheel} "
            f"(pip download --no-deps timm to enable)",
        )
        print(
            f"timm row skipped: no timm wheel found in {args.timm_wheel}; "
            f"pip download --no-deps -d {args.timm_wheel} timm to enable"
        )
        return
    eraser = RandomErasing(probability=0.5, mode="const", device="cpu")
    assert eraser.log_aspect_ratio == (math.log(0.3), math.log(1 / 0.3)), eraser.log_aspect_ratio
    assert (eraser.min_area, eraser.max_area, eraser.min_count, eraser.max_count) == (
        0.02,
        1 / 3,
        1,
        1,
    )
    timm_images = images.clone()  # timm erases in place: give it its own batch

    def timm_erase():
        return eraser(timm_images)

    def timm_erase_clone():  # the same output contract as maskwise: a new tensor
        return eraser(images.clone())

    mw_images = images.clone()
    kw = dict(p=0.5, scale=scale, ratio=ratio, generator=g)

    def target(m: float, p: float | None) -> str:
        return "n/a" if p is None else f">= 1x: {'met' if p / m >= 1 else 'MISSED'}"

    # timm's contract: the erased images only, written into the batch / into a clone.
    m, p = run.compare(
        lambda: mw.erase(mw_images, inplace=True, return_mask=False, **kw), timm_erase
    )
    run.add(f"random erasing in place, {B}x{C}x{H}x{W}, p=0.5", m, p, target(m, p))
    m, p = run.compare(lambda: mw.erase(images, return_mask=False, **kw), timm_erase_clone)
    run.add(
        f"random erasing out of place, {B}x{C}x{H}x{W}, p=0.5 (timm on a clone)",
        m,
        p,
        target(m, p),
    )
    # maskwise's default also returns the (B, H, W) mask, which timm does not build.
    m, p = run.compare(lambda: mw.erase(mw_images, inplace=True, **kw), timm_erase)
    run.add(f"random erasing in place + mask, {B}x{C}x{H}x{W}", m, p, "none (information)")
    m, p = run.compare(mw_erase, timm_erase_clone)
    run.add(
        f"random erasing out of place + mask, {B}x{C}x{H}x{W} (timm on a clone)",
        m,
        p,
        "none (information)",
    )
    ones = torch.ones(B, C, H, W)
    timm_share = (eraser(ones) == 0).all(1).float().mean().item()
    mw_share = mw.erase(ones, p=0.5, scale=scale, ratio=ratio, generator=g)[1].float().mean().item()
    run.notes.append(
        f"random erasing: timm from {wheel} (only {TIMM_MEMBER} loaded); erased share "
        f"of pixels (one call each): maskwise {mw_share:.3f}, timm {timm_share:.3f}"
    )


def case_blocks(run: Run) -> None:
    """BEiT block masking against BEiT's MaskingGenerator, one sample at a time."""
    g, check = run.g, run.args.beit_check
    B, GRID, NUM = 256, 14, 75
    beit = BeitMaskingGenerator(GRID, NUM, min_num_patches=16)
    m, p = run.compare(
        lambda: mw.mask_blocks(B, GRID, NUM, generator=g), lambda: beit_batch(beit, B)
    )
    run.add(
        f"BEiT block masking, {B} samples, {GRID}x{GRID}, {NUM} cells",
        m,
        p,
        f">= 10x: {'met' if p / m >= 10 else 'MISSED'}",
    )
    counts = beit_batch(beit, check).sum((1, 2))
    miss = (counts != NUM).float().mean().item()
    mw_counts = mw.mask_blocks(check, GRID, NUM, generator=g).sum((1, 2))
    run.notes.append(
        f"block masking, {check} samples: BEiT misses the count of {NUM} in {miss:.1%} of them "
        f"(counts {int(counts.min())}..{int(counts.max())}, mean {counts.float().mean():.1f}); "
        f"maskwise: {int((mw_counts != NUM).sum())} misses "
        f"(counts {int(mw_counts.min())}..{int(mw_counts.max())})"
    )


def case_mae(run: Run) -> None:
    """MAE random masking + gather against a per-sample loop and MAE's batched version."""
    g = run.g
    B, N, D, RATE = 256, 196, 768, 0.75
    x = torch.randn(B, N, D, generator=torch.Generator().manual_seed(3))
    len_keep = int(N * (1 - RATE))

    def mw_mae():
        mask = mw.mask_patches(B, N, RATE, generator=g)
        ids_keep, ids_restore = mw.keep_indices(mask)
        return x.gather(1, ids_keep[..., None].expand(-1, -1, D)), mask, ids_restore

    assert (
        mw_mae()[0].shape
        == mae_per_sample(x, len_keep).shape
        == mae_random_masking(x, RATE)[0].shape
    )
    m, p = run.compare(mw_mae, lambda: mae_per_sample(x, len_keep))
    run.add(
        f"MAE random masking + gather, {B}x{N}x{D} (peer: per-sample loop)",
        m,
        p,
        "none (report only)",
    )
    m, p = run.compare(mw_mae, lambda: mae_random_masking(x, RATE))
    run.add(
        f"MAE random masking + gather, {B}x{N}x{D} (peer: MAE's batched random_masking)",
        m,
        p,
        "none (context)",
    )


def case_guided(run: Run) -> None:
    """Guided mask_patches against plain mask_patches (the ratio column is plain/guided)."""
    g = run.g
    B, N, RATE = 256, 196, 0.75
    scores = torch.rand(B, N, generator=torch.Generator().manual_seed(4))
    for hard in (1.0, 0.5):
        m, p = run.compare(
            lambda hard=hard: mw.mask_patches(
                B, N, RATE, scores=scores, hard_fraction=hard, generator=g
            ),
            lambda: mw.mask_patches(B, N, RATE, generator=g),
        )
        run.add(
            f"guided mask_patches (hard_fraction {hard}), {B}x{N} (peer: plain mask_patches)",
            m,
            p,
            f"guided/plain = {m / p:.2f} <= 1.5: {'met' if m / p <= 1.5 else 'MISSED'}",
        )


def case_spec_augment(run: Run) -> None:
    """SpecAugment LD against a row-by-row port of torchaudio's mask_along_axis."""
    g = run.g
    B, F, T = 64, 80, 1000
    spec = torch.randn(B, F, T, generator=torch.Generator().manual_seed(5))
    full = torch.full((B,), T, dtype=torch.long)
    varied = torch.randint(200, T + 1, (B,), generator=torch.Generator().manual_seed(6))
    for name, lens in (("lengths all 1000", full), ("lengths 200..1000", varied)):
        lens_list = lens.tolist()

        def mw_spec(lens=lens):
            return mw.spec_augment(spec, policy="LD", lengths=lens, generator=g)

        def ref_spec(lens_list=lens_list):
            return spec_augment_rows(spec, lens_list)

        m, p = run.compare(mw_spec, ref_spec)
        run.add(
            f"SpecAugment LD, {B}x{F}x{T}, {name}",
            m,
            p,
            f">= 4x: {'met' if p / m >= 4 else 'MISSED'}",
        )
        out_mw, out_ref = mw_spec().spec, ref_spec()
        run.notes.append(
            f"SpecAugment LD ({name}), zeroed share (one call each): maskwise "
            f"{(out_mw == 0).float().mean():.3f}, reference {(out_ref == 0).float().mean():.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=30, help="timed runs per case (median reported)"
    )
    parser.add_argument(
        "--rounds", type=int, default=10, help="interleaved rounds the repeats are split into"
    )
    parser.add_argument(
        "--timm-wheel",
        type=Path,
        default=Path("/tmp/timm"),
        help="folder holding a timm wheel (pip download --no-deps -d DIR timm)",
    )
    parser.add_argument(
        "--beit-check",
        type=int,
        default=4096,
        help="samples drawn to measure how often BEiT misses the exact count",
    )
    parser.add_argument(
        "--cases",
        default="time_spans,erase,blocks,mae,guided,spec_augment",
        help="comma-separated cases to run (default: all)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1 or args.beit_check < 1:
        parser.error("--repeats, --rounds and --beit-check must be >= 1")

    torch.set_num_threads(1)
    import transformers

    t_start = time.perf_counter()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"numpy {np.__version__}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}; "
        f"CUDA available: {torch.cuda.is_available()}"
    )
    print(
        f"median of {args.repeats} runs per side in {min(args.rounds, args.repeats)} interleaved "
        f"rounds, after warm-up"
    )
    print()

    torch.manual_seed(0)  # the peers draw from torch's, numpy's and Python's global generators
    np.random.seed(0)
    random.seed(0)
    run = Run(args)
    cases = {
        "time_spans": case_time_spans,
        "erase": case_erase,
        "blocks": case_blocks,
        "mae": case_mae,
        "guided": case_guided,
        "spec_augment": case_spec_augment,
    }
    chosen = args.cases.split(",")
    if unknown := set(chosen) - set(cases):
        parser.error(f"unknown --cases {sorted(unknown)}; choose from {sorted(cases)}")
    for name in chosen:
        cases[name](run)
        gc.collect()

    header = ("case", "maskwise (ms)", "peer (ms)", "speed-up (peer/maskwise)", "target")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---", "---:", "---:", "---:", "---"]) + "|")
    for r in run.rows:
        print("| " + " | ".join(r) + " |")
    print()
    print(
        "Peers: transformers _compute_mask_indices (global numpy RNG, result -> torch.from_numpy "
        "inside the timed call; maskwise's time includes attention_mask.sum(-1)); timm "
        "RandomErasing(probability=0.5, mode='const', device='cpu') on the 4-D batch; BEiT "
        "MaskingGenerator(14, 75, min_num_patches=16) per sample + np.stack; MAE per-sample "
        "loop and MAE's batched random_masking; SpecAugment: torchaudio-style mask_along_axis "
        "row by row. Guided row: the peer column is plain mask_patches, the ratio is plain/guided."
    )
    for n in run.notes:
        print(n + ".")
    print(
        f"total time {time.perf_counter() - t_start:.0f} s; "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
