"""Pure, batched masking functions: they return masks (or apply them) and keep no state.

Every random function takes a keyword-only ``generator`` (a ``torch.Generator``, a
:class:`maskwise.random.KeyedGenerator`, or None for torch's global generator) and draws only
from it.
"""

from maskwise.functional.consistency import CONSISTENCY_KINDS, consistency_loss
from maskwise.functional.drop import drop_tokens
from maskwise.functional.erasing import erase
from maskwise.functional.features import mask_features
from maskwise.functional.patches import (
    keep_indices,
    mask_blocks,
    mask_coarse,
    mask_patches,
    patches_to_pixels,
    patchify,
    unpatchify,
)
from maskwise.functional.select import Rate, per_sample_rates, sample_mask, top_k_per_row
from maskwise.functional.spans import (
    mask_spans,
    span_length_pmf,
    t5_corrupt,
    t5_corrupt_with_lengths,
)
from maskwise.functional.spectrogram import (
    SPEC_AUGMENT_POLICIES,
    SpecAugmentResult,
    interval_mask,
    mask_time_spans,
    spec_augment,
    spec_augment_policy,
)
from maskwise.functional.tokens import (
    corrupt,
    lm_labels,
    mask_tokens,
    mask_words,
    word_ids_from_encoding,
    word_ids_from_offsets,
    word_starts,
)

__all__ = [
    "CONSISTENCY_KINDS",
    "Rate",
    "SPEC_AUGMENT_POLICIES",
    "SpecAugmentResult",
    "consistency_loss",
    "corrupt",
    "drop_tokens",
    "erase",
    "interval_mask",
    "keep_indices",
    "mask_blocks",
    "mask_coarse",
    "mask_patches",
    "mask_time_spans",
    "patches_to_pixels",
    "patchify",
    "spec_augment",
    "spec_augment_policy",
    "unpatchify",
    "lm_labels",
    "mask_features",
    "mask_spans",
    "mask_tokens",
    "mask_words",
    "per_sample_rates",
    "sample_mask",
    "span_length_pmf",
    "t5_corrupt",
    "t5_corrupt_with_lengths",
    "top_k_per_row",
    "word_ids_from_encoding",
    "word_ids_from_offsets",
    "word_starts",
]
