"""maskwise: masking for training and fine-tuning PyTorch models.

``import maskwise as mw`` gives the functional API (``mw.mask_tokens``, ``mw.corrupt``, ...) and the
submodules ``mw.nn``, ``mw.functional``, ``mw.random`` and ``mw.collators``. Only torch is
imported; integrations with optional libraries are imported when first used.
"""

from maskwise import collators, functional, nn, random
from maskwise.functional import (
    corrupt,
    lm_labels,
    mask_features,
    mask_spans,
    mask_tokens,
    mask_words,
    sample_mask,
    span_length_pmf,
    t5_corrupt,
    word_ids_from_encoding,
    word_ids_from_offsets,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
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
