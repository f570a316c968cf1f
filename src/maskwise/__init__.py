"""maskwise: masking for training and fine-tuning PyTorch models.

``import maskwise as mw`` gives the functional API (``mw.mask_tokens``, ``mw.corrupt``, ...) and the
submodules ``mw.nn``, ``mw.functional``, ``mw.random`` and ``mw.collators``. Only torch is
imported; integrations with optional libraries are imported when first used.
"""

from maskwise import attention, collators, dynamic, functional, nn, random
from maskwise.functional import (
    SPEC_AUGMENT_POLICIES,
    SpecAugmentResult,
    consistency_loss,
    corrupt,
    drop_tokens,
    erase,
    keep_indices,
    lm_labels,
    mask_blocks,
    mask_coarse,
    mask_features,
    mask_patches,
    mask_spans,
    mask_time_spans,
    mask_tokens,
    mask_words,
    patches_to_pixels,
    patchify,
    sample_mask,
    span_length_pmf,
    spec_augment,
    spec_augment_policy,
    t5_corrupt,
    unpatchify,
    word_ids_from_encoding,
    word_ids_from_offsets,
)
from maskwise.monitor import MaskMonitor

__version__ = "0.1.0"

__all__ = [
    "MaskMonitor",
    "SPEC_AUGMENT_POLICIES",
    "SpecAugmentResult",
    "__version__",
    "attention",
    "consistency_loss",
    "drop_tokens",
    "dynamic",
    "erase",
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
    "collators",
    "corrupt",
    "functional",
    "lm_labels",
    "mask_features",
    "mask_spans",
    "mask_tokens",
    "mask_words",
    "nn",
    "random",
    "sample_mask",
    "span_length_pmf",
    "t5_corrupt",
    "word_ids_from_encoding",
    "word_ids_from_offsets",
]
