"""Thin ``nn.Module`` wrappers around :mod:`maskwise.functional`.

Each module stores its settings and a seeded generator per device, calls the pure function in
training mode, and is the identity in eval mode (returning an all-False mask). Every module's
``forward`` returns ``(x_masked, mask)`` so the mask can be logged or used to choose loss
targets. The generators' state is part of ``state_dict()``, so a restored module continues with
exactly the masks it would have drawn.

Layout: :mod:`~maskwise.nn.base` (``MaskModule``: rate, generators, state),
:mod:`~maskwise.nn.text`, :mod:`~maskwise.nn.vision`, :mod:`~maskwise.nn.speech` (the maskers),
:mod:`~maskwise.nn.dynamic` (``DynamicMask``). ``MultiheadAttention`` lives in
:mod:`maskwise.attention` and is re-exported here.
"""

from maskwise.attention.modules import MultiheadAttention
from maskwise.nn.base import MaskModule
from maskwise.nn.dynamic import DynamicMask
from maskwise.nn.speech import SpecAugment, TimeSpanMask
from maskwise.nn.text import FeatureMask, TokenMask
from maskwise.nn.vision import BlockPatchMask, Erase, PatchMask

__all__ = [
    "BlockPatchMask",
    "DynamicMask",
    "Erase",
    "FeatureMask",
    "MaskModule",
    "MultiheadAttention",
    "PatchMask",
    "SpecAugment",
    "TimeSpanMask",
    "TokenMask",
]
