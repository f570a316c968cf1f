"""Text masking benchmark: maskwise against Hugging Face transformers, side by side.

Run from the repository root::

    python benchmarks/text.py                 # default: --repeats 30 --data ../shared/data

Everything runs in one process on one CPU thread (``torch.set_num_threads(1)``). Each case is
warmed up, then maskwise and its peer are timed alternately ``--repeats`` times and the MEDIAN
wall time is reported. The data are real: a WordPiece tokenizer (vocab 8000) is trained here on
the SST-2 training sentences, every sentence is encoded as ``[CLS] ... [SEP]`` and the token
stream is cut into rows, so special tokens sit inside rows as they do in packed pre-training
batches. Nothing is written to disk.

Cases (B x L):

1. token masking + 80/10/10, 64x512: ``mw.mask_tokens`` + ``mw.corrupt`` against
   ``DataCollatorForLanguageModeling.torch_mask_tokens`` with a precomputed special-tokens mask.
2. whole-word masking, 64x512: ``mw.mask_words`` + ``mw.corrupt`` against the same collator
   with ``whole_word_mask=True`` fed character offsets. transformers forces 100 % [MASK] there,
   so the target row runs ``corrupt(replace_prob=1)`` for the same output; a second row gives
   maskwise's 80/10/10 time against the same peer, for information.
3. span masking, geometric mean 3, 64x512: ``mw.mask_spans`` (stationary renewal process, and
   ``exact=True`` T5 arithmetic) against a numpy port of T5's ``random_spans_noise_mask`` run row
   by row, as transformers' ``examples/flax/language-modeling/run_t5_mlm_flax.py`` does.
4. whole-word masking time vs L, batch 8, L = 512, 2048, 8192: ``mw.mask_words`` against the
   collator's whole-word path, whose ``_whole_word_mask`` builds a (B, L, L) array.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import maskwise as mw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import compare, fmt_ms, machine, time_ms  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
VOCAB = 8000
RATE = 0.15
MEAN_SPAN = 3.0
HF_SKIP_S = 20.0  # skip a transformers whole-word run expected to take longer than this


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def read_sentences(data: Path) -> list[str]:
    path = data / "text" / "sst2" / "stsa.binary.train"
    sentences = []
    for line in path.read_text(encoding="utf-8").splitlines():
        label, _, text = line.strip().partition(" ")
        if label in ("0", "1") and text:
            sentences.append(text)
    return sentences


def train_tokenizer(sentences: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def hf_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def token_stream(tok, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All sentences as one stream of ids and (start, end) character offsets.

    Each sentence is ``[CLS] tokens [SEP]``; special tokens get offsets (0, 0). Offsets are the
    tokenizer's real offsets shifted by the running character position, with a gap of one
    character between sentences, so a word never continues across a sentence boundary.
    """
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    encodings = tok.encode_batch(sentences, add_special_tokens=False)
    ids: list[int] = []
    offs: list[tuple[int, int]] = []
    base = 1
    for text, enc in zip(sentences, encodings):
        ids.append(cls_id)
        offs.append((0, 0))
        ids.extend(enc.ids)
        offs.extend((base + s, base + e) for s, e in enc.offsets)
        ids.append(sep_id)
        offs.append((0, 0))
        base += len(text) + 1
    return np.asarray(ids, dtype=np.int64), np.asarray(offs, dtype=np.int64)


class Batch:
    """A (B, L) batch cut from the token stream, with everything both libraries need."""

    def __init__(self, ids: np.ndarray, offs: np.ndarray, B: int, L: int, special_ids: list[int]):
        n = B * L
        if ids.size < n:
            raise SystemExit(f"The token stream has {ids.size} tokens; {B}x{L} needs {n}.")
        self.ids = torch.from_numpy(ids[:n].reshape(B, L).copy())
        self.offsets = offs[:n].reshape(B, L, 2).copy()  # numpy, as the collator converts anyway
        # Precomputed special-tokens mask, as a tokenizer returns it (int 0/1).
        self.stm = torch.isin(self.ids, torch.tensor(special_ids)).long()
        self.valid = ~self.stm.bool()
        self.word_ids = mw.word_ids_from_offsets(
            torch.from_numpy(self.offsets), special_tokens_mask=self.stm
        )
        self._check_words_match_transformers()

    def _check_words_match_transformers(self) -> None:
        from transformers import DataCollatorForLanguageModeling as C

        hf_words, _ = C._calc_word_ids_and_prob_mask(self.offsets, self.stm.numpy())
        hf_words = torch.from_numpy(np.asarray(hf_words))
        # Same words on both sides: same word starts and same "no word" positions.
        assert torch.equal(
            mw.functional.word_starts(self.word_ids),
            mw.functional.word_starts(torch.where(hf_words >= 0, hf_words, -1)),
        )
        assert torch.equal(self.word_ids < 0, hf_words < 0)


# ----------------------------------------------------------------------------------------------
# The T5 peer: numpy port of random_spans_noise_mask (run_t5_mlm_flax.py), row by row
# ----------------------------------------------------------------------------------------------


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """T5's noise mask for one sequence, as in transformers' Flax T5 MLM example.

    The only changes: ``np.random.shuffle`` draws from ``rng`` (seeded), and
    ``jax.ops.segment_sum(ones, segment_id)`` is ``np.bincount(segment_id)``.
    """
    orig_length = length
    num_noise_tokens = int(np.round(length * noise_density))
    # avoid degeneracy by ensuring positive numbers of noise and nonnoise tokens.
    num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
    num_noise_spans = int(np.round(num_noise_tokens / mean_noise_span_length))
    # avoid degeneracy by ensuring positive number of noise spans
    num_noise_spans = max(num_noise_spans, 1)
    num_nonnoise_tokens = length - num_noise_tokens

    def _random_segmentation(num_items: int, num_segments: int) -> np.ndarray:
        mask_indices = np.arange(num_items - 1) < (num_segments - 1)
        rng.shuffle(mask_indices)
        first_in_segment = np.pad(mask_indices, [[1, 0]])
        segment_id = np.cumsum(first_in_segment)
        return np.bincount(segment_id)

    noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans)
    nonnoise_span_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans)
    interleaved_span_lengths = np.reshape(
        np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1), [num_noise_spans * 2]
    )
    span_starts = np.cumsum(interleaved_span_lengths)[:-1]
    span_start_indicator = np.zeros((length,), dtype=np.int8)
    span_start_indicator[span_starts] = True
    span_num = np.cumsum(span_start_indicator)
    is_noise = np.equal(span_num % 2, 1)
    return is_noise[:orig_length]


def t5_numpy_batch(valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row by row: T5 noise over the row's valid positions, scattered back into the row."""
    out = np.zeros(valid.shape, dtype=bool)
    for b in range(valid.shape[0]):
        pos = np.flatnonzero(valid[b])
        out[b, pos] = random_spans_noise_mask(pos.size, RATE, MEAN_SPAN, rng)
    return out


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=30, help="timed runs per case (median reported)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / ".." / "shared" / "data",
        help="data root holding text/sst2 (default: ../shared/data from the repo root)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    torch.set_num_threads(1)
    import transformers
    from transformers import DataCollatorForLanguageModeling

    t_start = time.perf_counter()
    sentences = read_sentences(args.data.resolve())
    tok = train_tokenizer(sentences)
    hf_tok = hf_tokenizer(tok)
    ids, offs = token_stream(tok, sentences)
    special_ids = sorted(hf_tok.all_special_ids)
    V = len(hf_tok)
    mask_id = hf_tok.mask_token_id
    assert V == tok.get_vocab_size() and special_ids == [0, 1, 2, 3, 4] and mask_id == 4

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"numpy {np.__version__}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    print(
        f"data: SST-2 train, {len(sentences)} sentences -> {ids.size} tokens "
        f"(WordPiece vocab {V}, special ids {special_ids}); median of {args.repeats} runs, "
        f"after warm-up"
    )
    print()

    rows: list[tuple[str, str, str, str, str]] = []

    def add(
        case: str,
        m: float | None,
        p: float | None,
        target: str,
        extra_m: str = "",
        extra_p: str = "",
    ) -> None:
        speed = f"{p / m:.1f}x" if (m and p) else "n/a"
        rows.append(
            (
                case,
                fmt_ms(m) + extra_m,
                (fmt_ms(p) if p is not None else "n/a") + extra_p,
                speed,
                target,
            )
        )

    big = Batch(ids, offs, 64, 512, special_ids)
    g = torch.Generator().manual_seed(0)
    shares: list[str] = []  # sanity check: both sides mask about RATE of the maskable tokens

    def share(name: str, out: object) -> None:
        masked = out[1] != -100 if isinstance(out, tuple) else out  # (inputs, labels) or a mask
        masked = torch.as_tensor(masked)
        shares.append(f"{name} {masked[big.valid].float().mean().item():.3f}")

    # 1. token masking + 80/10/10 -------------------------------------------------------------
    coll = DataCollatorForLanguageModeling(hf_tok, mlm_probability=RATE, seed=0)
    coll.create_rng()  # torch_call would do this on its first call; torch_mask_tokens does not

    def mw_tokens():
        masked = mw.mask_tokens(big.ids, RATE, special_ids=special_ids, generator=g)
        return mw.corrupt(
            big.ids, masked, mask_id=mask_id, vocab_size=V, special_ids=special_ids, generator=g
        )

    def hf_tokens():
        return coll.torch_mask_tokens(big.ids.clone(), special_tokens_mask=big.stm)

    m, p, _ = compare(mw_tokens, hf_tokens, args.repeats)
    share("tokens: maskwise", mw_tokens())
    share("transformers", hf_tokens())
    met1 = p / m >= 1.5 and m <= 1.0
    add(
        "token masking + 80/10/10, 64x512",
        m,
        p,
        f">= 1.5x and <= 1 ms: {'met' if met1 else 'MISSED'}",
    )

    # 2. whole-word masking + 80/10/10 --------------------------------------------------------
    with (
        warnings.catch_warnings()
    ):  # "Random token replacement is not supported with whole word masking"
        warnings.simplefilter("ignore")
        coll_wwm = DataCollatorForLanguageModeling(
            hf_tok, mlm_probability=RATE, whole_word_mask=True, seed=0
        )
    coll_wwm.create_rng()

    # transformers' whole-word path replaces every masked token by [MASK] (it drops 80/10/10),
    # so the target row asks maskwise for the same output; the 80/10/10 row is for information.
    def mw_words():
        masked = mw.mask_words(big.word_ids, RATE, generator=g)
        return mw.corrupt(
            big.ids,
            masked,
            mask_id=mask_id,
            vocab_size=V,
            replace_prob=1.0,
            random_prob=0.0,
            generator=g,
        )

    def mw_words_801010():
        masked = mw.mask_words(big.word_ids, RATE, generator=g)
        return mw.corrupt(
            big.ids, masked, mask_id=mask_id, vocab_size=V, special_ids=special_ids, generator=g
        )

    def hf_words():
        return coll_wwm.torch_mask_tokens(
            big.ids.clone(), special_tokens_mask=big.stm, offset_mapping=big.offsets
        )

    m, p, _ = compare(mw_words, hf_words, args.repeats)
    share("words: maskwise", mw_words())
    share("transformers", hf_words())
    add(
        "whole-word masking + 100% [MASK]†, 64x512",
        m,
        p,
        f">= 50x: {'met' if p / m >= 50 else 'MISSED'}",
    )
    m, p, _ = compare(mw_words_801010, hf_words, args.repeats)
    add("whole-word masking + 80/10/10 (peer: 100% [MASK]†), 64x512", m, p, "none (information)")

    # 3. span masking ---------------------------------------------------------------------------
    rng = np.random.default_rng(0)
    valid_np = big.valid.numpy()

    m, _, _ = compare(
        lambda: mw.mask_spans(big.valid, RATE, mean_length=MEAN_SPAN, generator=g),
        None,
        args.repeats,
    )
    add("span masking (geometric, mean 3), 64x512", m, None, "none (report only; no peer)")
    share("spans: maskwise", mw.mask_spans(big.valid, RATE, mean_length=MEAN_SPAN, generator=g))
    m, p, _ = compare(
        lambda: mw.mask_spans(big.valid, RATE, mean_length=MEAN_SPAN, exact=True, generator=g),
        lambda: t5_numpy_batch(valid_np, rng),
        args.repeats,
    )
    add(
        "span masking, exact T5 (mean 3), 64x512",
        m,
        p,
        f">= 3x: {'met' if p is not None and p / m >= 3 else 'MISSED'} (T5 numpy, row by row)",
    )
    share(
        "exact: maskwise",
        mw.mask_spans(big.valid, RATE, mean_length=MEAN_SPAN, exact=True, generator=g),
    )
    share("T5 numpy", torch.from_numpy(t5_numpy_batch(valid_np, rng)))

    # 4. whole-word masking vs L, batch 8 -----------------------------------------------------
    scaling: list[tuple[int, float]] = []
    hf_prev: tuple[int, float] | None = None
    for L in (512, 2048, 8192):
        bl = Batch(ids, offs, 8, L, special_ids)
        n_tok = 8 * L

        def mw_wl(bl=bl):
            return mw.mask_words(bl.word_ids, RATE, generator=g)

        def hf_wl(bl=bl):
            return coll_wwm.torch_mask_tokens(
                bl.ids.clone(), special_tokens_mask=bl.stm, offset_mapping=bl.offsets
            )

        # transformers is O(L^2): extrapolate from the previous L and skip if it would be too slow.
        run_hf = True
        note_p = ""
        if hf_prev is not None:
            est_s = hf_prev[1] * (L / hf_prev[0]) ** 2 / 1e3
            run_hf = est_s <= HF_SKIP_S
            if not run_hf:
                note_p = f" skipped (est. {est_s:.0f} s/call)"
        if run_hf:
            # One timed call first; it doubles as the first warm-up call.
            first = time_ms(hf_wl)
            if first / 1e3 > HF_SKIP_S:
                run_hf, note_p = False, f" skipped ({first / 1e3:.0f} s/call)"
        m, p, n_p = compare(
            mw_wl,
            hf_wl if run_hf else None,
            args.repeats,
            warmup=3 if L <= 2048 else 1,
            peer_budget_s=5.0,
        )
        if p is not None:
            hf_prev = (L, p)
            if n_p < args.repeats:
                note_p += f" [{n_p} runs]"
            note_p = f" ({p / n_tok * 1e3:.3f}/1k tok)" + note_p
        scaling.append((L, m))
        target = "linear in L"
        if L == 8192:
            per_small = scaling[0][1] / (8 * scaling[0][0])
            per_big = m / n_tok
            ok = per_big <= 1.5 * per_small
            target += (
                f": t(8192)/t(512) = {m / scaling[0][1]:.1f} for 16x tokens, "
                f"{'met' if ok else 'MISSED'}"
            )
        add(
            f"whole-word masking (mask_words), 8x{L}",
            m,
            p,
            target,
            extra_m=f" ({m / n_tok * 1e3:.4f}/1k tok)",
            extra_p=note_p,
        )
        del bl
        gc.collect()

    # Table --------------------------------------------------------------------------------------
    header = ("case", "maskwise (ms)", "peer (ms)", "speed-up (peer/maskwise)", "target")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---", "---:", "---:", "---:", "---"]) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    print(
        "Peers: transformers DataCollatorForLanguageModeling.torch_mask_tokens (seed=0) with a "
        "precomputed special_tokens_mask, input clone included; span rows: numpy port of T5's "
        "random_spans_noise_mask, one call per row."
    )
    print(
        "† with whole_word_mask=True transformers forces mask_replace_prob=1 (no random or "
        "kept tokens); the target row gives maskwise the same job (replace_prob=1)."
    )
    print("Masked share of the maskable tokens (one call each): " + ", ".join(shares) + ".")
    print(
        f"total time {time.perf_counter() - t_start:.0f} s; "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
