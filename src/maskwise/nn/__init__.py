"""Thin ``nn.Module`` wrappers around :mod:`maskwise.functional`.

Each module stores its settings and a seeded random source, calls the pure function in
training mode, and is the identity in eval mode (returning an all-False mask). Every module's
``forward`` returns ``(x_masked, mask)`` so the mask can be logged or used to choose loss
targets, or ``x_masked`` alone when built with ``return_mask=False`` (for ``nn.Sequential``,
``Compose`` and Dataset transforms). The random source's state is part of ``state_dict()``, so
a restored module continues with exactly the masks it would have drawn; ``keyed=True`` draws
from counter-based keys, which ``torch.compile(fullgraph=True)`` traces.

Layout: :mod:`~maskwise.nn.base` (``MaskModule``: rate, generators, state),
:mod:`~maskwise.nn.text`, :mod:`~maskwise.nn.vision`, :mod:`~maskwise.nn.speech` (the maskers),
:mod:`~maskwise.nn.dynamic` (``DynamicMask``). ``SpecAttention`` lives in
:mod:`maskwise.attention` and is re-exported here (``MultiheadAttention``: its deprecated name).
"""

from maskwise.attention.modules import MultiheadAttention, SpecAttention
from maskwise.nn.base import MaskModule
from maskwise.nn.dynamic import DynamicMask
from maskwise.nn.speech import SpecAugment, TimeSpanMask
from maskwise.nn.text import FeatureMask, TokenMask
from maskwise.nn.views import View, two_views
from maskwise.nn.vision import BlockPatchMask, Erase, PatchMask, TokenDrop

__all__ = [
    "BlockPatchMask",
    "DynamicMask",
    "Erase",
    "FeatureMask",
    "MaskModule",
    "MultiheadAttention",
    "PatchMask",
    "SpecAttention",
    "SpecAugment",
    "TimeSpanMask",
    "TokenDrop",
    "TokenMask",
    "View",
    "two_views",
]
