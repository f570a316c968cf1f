"""Thin ``nn.Module`` wrappers around :mod:`maskwise.functional`.

Each module stores its settings and a seeded generator per device, calls the pure function in
training mode, and is the identity in eval mode (returning an all-False mask). Every module's
``forward`` returns ``(x_masked, mask)`` so the mask can be logged or used to choose loss
targets. The generators' state is part of ``state_dict()``, so a restored module continues with
exactly the masks it would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from maskwise import functional as F
from maskwise._checks import check_probability, check_split
from maskwise.attention.modules import MultiheadAttention  # noqa: F401  (maskwise.nn's alias)
from maskwise.dynamic.feedback import feed
from maskwise.dynamic.rates import check_rate_source, controller_of, resolve_rate
from maskwise.dynamic.reliability import reliability as compute_reliability
from maskwise.functional.features import mask_shape
from maskwise.random import DeviceGenerators

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


class MaskModule(nn.Module):
    """Base of the masking modules: a rate, a seeded generator per device, train/eval logic.

    ``rate`` is the module's one knob that schedules and controllers move: the masked fraction
    for most modules, the probability of erasing for :class:`Erase`, a scale on the number of
    time masks for :class:`SpecAugment`.
    """

    def __init__(self, rate: float, *, seed: int | None = None) -> None:
        super().__init__()
        self.rate = check_probability("rate", rate)
        self.generators = DeviceGenerators(seed)

    def generator(self, device: torch.device) -> torch.Generator:
        return self.generators.get(device)

    def get_extra_state(self) -> dict[str, Any]:
        return {"rate": self.rate, "generators": self.generators.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.rate = float(state["rate"])
        self.generators.load_state_dict(state["generators"])


class _FillMixin:
    """Replacement of masked vectors: a constant, or a learned mask token (BEiT, SimMIM, wav2vec2)."""

    mask_token: nn.Parameter | None

    def _init_fill(self, value: float, mask_token_dim: int | None) -> None:
        self.value = float(value)
        if mask_token_dim is not None:
            self.mask_token = nn.Parameter(torch.zeros(int(mask_token_dim)))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        else:
            self.mask_token = None

    def _fill(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, D) with the vectors where ``mask`` (B, N) is True replaced."""
        if self.mask_token is None:
            return x.masked_fill(mask.unsqueeze(-1), self.value)
        return torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)


class FeatureMask(MaskModule):
    """Zero a random ``rate`` of a tensor's entries (or of whole slices): ``x * (1 - mask)``.

    See :func:`maskwise.functional.mask_features`.

    Args:
        rate: probability that an entry (or a slice along ``dims``) is masked.
        dims: dimensions that share a mask, e.g. ``-1`` masks whole feature vectors.
        seed: seed of the module's generator (None: drawn from torch's global generator).

    >>> m = FeatureMask(0.5, dims=-1, seed=0)
    >>> x_masked, mask = m(torch.ones(2, 4, 8))
    >>> mask.shape
    torch.Size([2, 4, 1])
    >>> _ = m.eval(); bool(m(torch.ones(2, 4, 8))[1].any())
    False
    """

    def __init__(
        self, rate: float, *, dims: int | Sequence[int] | None = None, seed: int | None = None
    ) -> None:
        super().__init__(rate, seed=seed)
        if dims is not None and not (
            isinstance(dims, int) or all(isinstance(d, int) for d in dims)
        ):
            raise TypeError(f"dims must be an int, a sequence of ints or None ({dims!r} given).")
        self.dims = dims

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training or self.rate == 0.0:
            shape = mask_shape(x.shape, self.dims)
            return x, torch.zeros(shape, dtype=torch.bool, device=x.device)
        return F.mask_features(x, self.rate, dims=self.dims, generator=self.generator(x.device))

    def extra_repr(self) -> str:
        return f"rate={self.rate}, dims={self.dims}, seed={self.generators.seed}"


class TokenMask(MaskModule):
    """Mask tokens of ``input_ids`` in training: choose with :func:`~maskwise.functional.mask_tokens`,
    replace with :func:`~maskwise.functional.corrupt`.

    By default every chosen token becomes ``mask_id`` (``replace_prob=1``, input-token noising);
    pass ``replace_prob=0.8, random_prob=0.1, vocab_size=V`` for BERT's 80/10/10.

    Args:
        rate: fraction of maskable tokens to mask.
        mask_id: id written over masked tokens.
        special_ids: ids never masked (and never drawn as random replacements).
        vocab_size: vocabulary size, needed when ``random_prob > 0``.
        replace_prob: probability that a masked token becomes ``mask_id``.
        random_prob: probability that it becomes a random token.
        exact: exact count per row instead of Bernoulli draws.
        seed: seed of the module's generator.

    ``forward(input_ids, attention_mask=None, weights=None) -> (input_ids_masked, mask)``
    (``weights``: optional per-token sampling weights, e.g. from a
    :class:`~maskwise.dynamic.DifficultyTracker`); the loss targets of masked-token prediction
    are ``input_ids.masked_fill(~mask, -100)``.

    >>> tm = TokenMask(1.0, mask_id=4, special_ids=[0, 1], seed=0)
    >>> tm(torch.tensor([[1, 7, 8, 0]]))[0].tolist()
    [[1, 4, 4, 0]]
    """

    def __init__(
        self,
        rate: float,
        *,
        mask_id: int,
        special_ids: Iterable[int] = (),
        vocab_size: int | None = None,
        replace_prob: float = 1.0,
        random_prob: float = 0.0,
        exact: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.mask_id = int(mask_id)
        self.special_ids = tuple(int(i) for i in special_ids)
        self.vocab_size = vocab_size
        self.replace_prob, self.random_prob = check_split(replace_prob, random_prob)
        if self.random_prob > 0 and vocab_size is None:
            raise ValueError("vocab_size is required when random_prob > 0 (None given).")
        self.exact = exact

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training or self.rate == 0.0:
            return input_ids, torch.zeros(
                input_ids.shape, dtype=torch.bool, device=input_ids.device
            )
        g = self.generator(input_ids.device)
        mask = F.mask_tokens(
            input_ids,
            self.rate,
            special_ids=self.special_ids,
            attention_mask=attention_mask,
            exact=self.exact,
            weights=weights,
            generator=g,
        )
        out, _ = F.corrupt(
            input_ids,
            mask,
            mask_id=self.mask_id,
            vocab_size=self.vocab_size,
            replace_prob=self.replace_prob,
            random_prob=self.random_prob,
            special_ids=self.special_ids,
            generator=g,
        )
        return out, mask

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, mask_id={self.mask_id}, replace_prob={self.replace_prob}, "
            f"random_prob={self.random_prob}, exact={self.exact}, seed={self.generators.seed}"
        )


def _check_tokens(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"{name} must be (B, N, D) ({tuple(getattr(x, 'shape', ()))} given).")


class PatchMask(_FillMixin, MaskModule):
    """MAE / guided patch masking of patch embeddings (B, N, D): exactly ``round(rate * N)``
    patches per row (:func:`~maskwise.functional.mask_patches`).

    ``drop=False`` replaces masked patches by ``value`` or a learned mask token (SimMIM,
    BEiT-style inputs); ``drop=True`` removes them (MAE's encoder input, or timm's
    ``PatchDropout``) and returns the visible patches (B, N_keep, D) in order; restore the order
    in a decoder with :func:`~maskwise.functional.keep_indices`.

    ``forward(x, scores=None) -> (x_out, mask)`` with ``mask`` (B, N); in eval, ``(x, no mask)``.

    >>> pm = PatchMask(0.75, drop=True, seed=0)
    >>> x_vis, mask = pm(torch.randn(2, 16, 8))
    >>> x_vis.shape, mask.sum(1).tolist()
    (torch.Size([2, 4, 8]), [12, 12])
    """

    def __init__(
        self,
        rate: float,
        *,
        drop: bool = False,
        hard_fraction: float = 1.0,
        value: float = 0.0,
        mask_token_dim: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.drop = drop
        self.hard_fraction = check_probability("hard_fraction", hard_fraction)
        self._init_fill(value, mask_token_dim)

    def forward(
        self, x: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_tokens(x)
        B, N, D = x.shape
        if not self.training or self.rate == 0.0:
            return x, torch.zeros(B, N, dtype=torch.bool, device=x.device)
        mask = F.mask_patches(
            B,
            N,
            self.rate,
            scores=scores,
            hard_fraction=self.hard_fraction,
            device=x.device,
            generator=self.generator(x.device),
        )
        if not self.drop:
            return self._fill(x, mask), mask
        ids_keep, _ = F.keep_indices(mask)
        return x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, D)), mask

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, drop={self.drop}, hard_fraction={self.hard_fraction}, "
            f"mask_token={self.mask_token is not None}, seed={self.generators.seed}"
        )


class BlockPatchMask(_FillMixin, MaskModule):
    """BEiT blockwise masking of patch embeddings (B, N, D) on an ``(H, W)`` grid: exactly
    ``round(rate * H * W)`` patches per sample in rectangles
    (:func:`~maskwise.functional.mask_blocks`), replaced by ``value`` or a learned mask token.
    (Named so as not to clash with FlexAttention's ``BlockMask``.)

    ``forward(x) -> (x_out, mask)`` with ``mask`` (B, N), row-major over the grid.

    >>> bm = BlockPatchMask(0.4, grid=14, mask_token_dim=8, seed=0)
    >>> _, mask = bm(torch.randn(2, 196, 8))
    >>> mask.sum(1).tolist()
    [78, 78]
    """

    def __init__(
        self,
        rate: float,
        grid: int | Sequence[int],
        *,
        min_block: int = 16,
        max_block: int | None = None,
        aspect: tuple[float, float] = (0.3, 1 / 0.3),
        value: float = 0.0,
        mask_token_dim: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        self.min_block, self.max_block, self.aspect = min_block, max_block, aspect
        self._init_fill(value, mask_token_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_tokens(x)
        B, N, _ = x.shape
        H, W = self.grid
        if N != H * W:
            raise ValueError(f"x has {N} patches but the grid is {H}x{W}.")
        if not self.training or self.rate == 0.0:
            return x, torch.zeros(B, N, dtype=torch.bool, device=x.device)
        mask = F.mask_blocks(
            B,
            (H, W),
            round(self.rate * N),
            min_block=self.min_block,
            max_block=self.max_block,
            aspect=self.aspect,
            device=x.device,
            generator=self.generator(x.device),
        ).view(B, N)
        return self._fill(x, mask), mask

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, grid={self.grid}, min_block={self.min_block}, "
            f"max_block={self.max_block}, aspect={self.aspect}, value={self.value}, "
            f"mask_token={self.mask_token is not None}, seed={self.generators.seed}"
        )


class Erase(MaskModule):
    """Random erasing / cutout on images (B, C, H, W), an independent rectangle per sample
    (:func:`~maskwise.functional.erase`); ``rate`` is the probability of erasing a sample.

    ``forward(images) -> (images_out, masked (B, H, W))``.

    >>> er = Erase(1.0, value="random", seed=0)
    >>> out, m = er(torch.zeros(4, 3, 32, 32))
    >>> bool(m.flatten(1).any(1).all())
    True
    """

    def __init__(
        self,
        rate: float = 0.5,
        *,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float | Sequence[float] | str = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.scale, self.ratio, self.value = scale, ratio, value

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
            raise ValueError(
                f"images must be (B, C, H, W) or (B, H, W) ({tuple(getattr(images, 'shape', ()))} given)."
            )
        if not self.training or self.rate == 0.0:
            B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
            return images, torch.zeros(B, H, W, dtype=torch.bool, device=images.device)
        return F.erase(
            images,
            p=self.rate,
            scale=self.scale,
            ratio=self.ratio,
            value=self.value,
            generator=self.generator(images.device),
        )

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, scale={self.scale}, ratio={self.ratio}, value={self.value!r}, "
            f"seed={self.generators.seed}"
        )


class SpecAugment(MaskModule):
    """SpecAugment on spectrograms (B, F, T) or (B, C, F, T)
    (:func:`~maskwise.functional.spec_augment`), e.g. ``SpecAugment(policy="LD")``.

    ``rate`` (default 1.0) scales the number of time masks: ``round(rate * time_masks)`` (or the
    adaptive rate ``rate * time_masks``), the knob a schedule or controller moves.

    ``forward(spec, lengths=None) -> SpecAugmentResult(spec, freq_masked, time_masked)``.

    >>> sa = SpecAugment(policy="LD", seed=0)
    >>> out = sa(torch.randn(2, 80, 200), lengths=torch.tensor([200, 150]))
    >>> out.spec.shape, bool(out.time_masked[1, 150:].any())
    (torch.Size([2, 80, 200]), False)
    """

    def __init__(
        self,
        rate: float = 1.0,
        *,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int | float = 2,
        time_width: int | float = 100,
        max_time_fraction: float = 1.0,
        max_time_masks: int = 20,
        value: float | str = 0.0,
        policy: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        if policy is not None:
            if policy not in F.SPEC_AUGMENT_POLICIES:
                raise ValueError(
                    f"policy must be one of {sorted(F.SPEC_AUGMENT_POLICIES)} ({policy!r} given)."
                )
            settings = F.SPEC_AUGMENT_POLICIES[policy]
            freq_masks, freq_width = settings["freq_masks"], settings["freq_width"]
            time_masks, time_width = settings["time_masks"], settings["time_width"]
            max_time_fraction = settings["max_time_fraction"]
        self.policy = policy
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.max_time_fraction, self.max_time_masks, self.value = (
            max_time_fraction,
            max_time_masks,
            value,
        )

    def forward(
        self, spec: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> F.SpecAugmentResult:
        B, Fq, T = spec.shape[0], spec.shape[-2], spec.shape[-1]
        if not self.training:  # rate scales the time masks only: rate 0 keeps frequency masks
            return F.SpecAugmentResult(
                spec,
                torch.zeros(B, Fq, dtype=torch.bool, device=spec.device),
                torch.zeros(B, T, dtype=torch.bool, device=spec.device),
            )
        time_masks: int | float = (
            round(self.rate * self.time_masks)
            if isinstance(self.time_masks, int)
            else self.rate * self.time_masks
        )
        return F.spec_augment(
            spec,
            freq_masks=self.freq_masks,
            freq_width=self.freq_width,
            time_masks=time_masks,
            time_width=self.time_width,
            max_time_fraction=self.max_time_fraction,
            max_time_masks=self.max_time_masks,
            lengths=lengths,
            value=self.value,
            generator=self.generator(spec.device),
        )

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, policy={self.policy}, freq_masks={self.freq_masks}, "
            f"freq_width={self.freq_width}, time_masks={self.time_masks}, "
            f"time_width={self.time_width}, max_time_fraction={self.max_time_fraction}"
        )


class TimeSpanMask(_FillMixin, MaskModule):
    """wav2vec2 / HuBERT time masking of frame features (B, T, D)
    (:func:`~maskwise.functional.mask_time_spans`): masked frames get ``value`` or a learned
    mask embedding (``mask_token_dim=D``, as wav2vec2's ``masked_spec_embed``).

    ``forward(x, lengths=None) -> (x_out, mask (B, T))``.

    >>> tm = TimeSpanMask(0.65, span=10, mask_token_dim=16, seed=0)
    >>> out, mask = tm(torch.randn(2, 100, 16), lengths=torch.tensor([100, 60]))
    >>> bool(mask[1, 60:].any())
    False
    """

    def __init__(
        self,
        rate: float,
        *,
        span: int = 10,
        min_spans: int = 0,
        value: float = 0.0,
        mask_token_dim: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(rate, seed=seed)
        self.span, self.min_spans = span, min_spans
        self._init_fill(value, mask_token_dim)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_tokens(x)
        B, T, _ = x.shape
        if not self.training or self.rate == 0.0:
            return x, torch.zeros(B, T, dtype=torch.bool, device=x.device)
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        mask = F.mask_time_spans(
            lengths.to(x.device),
            T,
            self.rate,
            span=self.span,
            min_spans=self.min_spans,
            generator=self.generator(x.device),
        )
        return self._fill(x, mask), mask

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate}, span={self.span}, min_spans={self.min_spans}, "
            f"mask_token={self.mask_token is not None}, seed={self.generators.seed}"
        )


class DynamicMask(nn.Module):
    """Make any maskwise masking module dynamic: its rate comes from a float, a schedule or a
    :class:`~maskwise.dynamic.ReliabilityController`, fed back by :meth:`observe`.

    ``forward(x, *args, **kwargs)`` sets ``masker.rate`` from the rate source, calls the masker
    and returns what it returns (``(x_masked, mask)``; a ``SpecAugmentResult`` for
    :class:`SpecAugment`); in eval the masker is the identity. With a
    :class:`~maskwise.dynamic.DifficultyTracker`, maskers that take ``weights`` (``TokenMask``)
    get per-key sampling weights (keys: ``keys=`` or, for integer inputs, the input itself).
    :meth:`observe` takes the step's logits and labels (or a precomputed
    :class:`~maskwise.dynamic.Reliability`): it updates the controller with the chosen signal
    and the tracker with the per-position losses. No extra forward pass, no hard-coded device.

    Args:
        masker: a :class:`MaskModule` (``TokenMask``, ``FeatureMask``, ``PatchMask``,
            ``BlockPatchMask``, ``Erase``, ``SpecAugment``, ``TimeSpanMask``).
        rate: a float, a schedule (``rate(step)``) or a controller.
        tracker: optional difficulty tracker (per-key sampling weights).
        temperature: the tracker's weight temperature (negative: hard keys masked less).
        monitor: optional :class:`~maskwise.monitor.MaskMonitor` fed at every training forward
            and observe.

    The step (training forwards so far) is a buffer, saved in ``state_dict``.

    >>> from maskwise.dynamic import ReliabilityController
    >>> dm = DynamicMask(TokenMask(0.3, mask_id=3, seed=0), ReliabilityController(0.3, target=0.5))
    >>> ids = torch.randint(4, 50, (8, 16))
    >>> noisy, mask = dm(ids)
    >>> logits, labels = torch.randn(8, 16, 50), ids.masked_fill(~mask, -100)
    >>> 0.0 <= dm.observe(logits, labels) <= 0.9
    True
    """

    def __init__(
        self,
        masker: MaskModule,
        rate: Any,
        *,
        tracker: Any = None,
        temperature: float = 1.0,
        monitor: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(masker, MaskModule):
            raise TypeError(
                f"masker must be a maskwise MaskModule ({type(masker).__name__} given)."
            )
        self.masker = masker
        self.rate_source = check_rate_source(rate)
        self.tracker, self.temperature, self.monitor = tracker, temperature, monitor
        self.step: torch.Tensor
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        import inspect

        self._takes_weights = "weights" in inspect.signature(masker.forward).parameters

    @property
    def controller(self) -> Any:
        """The rate source when it is a controller (it can be fed back), else None."""
        return controller_of(self.rate_source)

    def current_rate(self) -> float:
        """The rate the next training forward uses."""
        return resolve_rate(self.rate_source, int(self.step))

    def forward(self, x: Any, *args: Any, keys: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if not self.training:
            return self.masker(x, *args, **kwargs)
        rate = self.current_rate()
        self.masker.rate = rate
        if self.tracker is not None and self._takes_weights and "weights" not in kwargs:
            k = keys if keys is not None else x
            if isinstance(k, torch.Tensor) and not k.dtype.is_floating_point:
                kwargs["weights"] = self.tracker.weights(k, temperature=self.temperature)
        out = self.masker(x, *args, **kwargs)
        if self.monitor is not None:
            # Maskers return (x, mask), or a result with a .mask (SpecAugmentResult).
            mask = getattr(out, "mask", None)
            if mask is None and isinstance(out, tuple) and len(out) == 2:
                mask = out[1]
            self.monitor.record(int(self.step), rate=rate, mask=mask)
        self.step += 1
        return out

    def observe(
        self,
        logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        reliability: Any = None,
        keys: torch.Tensor | None = None,
        key_valid: torch.Tensor | None = None,
        ignore_index: int = -100,
    ) -> float:
        """Feed back the reliability of the latest predictions; returns the rate to come.

        Updates the controller with its signal and the tracker with the per-position losses at
        ``keys`` (see :func:`maskwise.dynamic.feed`: ``keys`` may have one more trailing
        dimension than ``labels``, sharing each example's loss among its keys; ``key_valid``
        marks the keys that count).
        """
        if reliability is None:
            if logits is None or labels is None:
                raise ValueError("observe needs logits and labels, or reliability=.")
            reliability = compute_reliability(logits, labels, ignore_index=ignore_index)
        feed(self.controller, self.tracker, reliability=reliability, keys=keys, key_valid=key_valid)
        if self.monitor is not None:
            self.monitor.record(int(self.step), rate=self.current_rate(), reliability=reliability)
        return self.current_rate()

    def extra_repr(self) -> str:
        return (
            f"rate={self.rate_source!r}, tracker={self.tracker is not None}, step={int(self.step)}"
        )
