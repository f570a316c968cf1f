"""Per-key difficulty: a running loss per token id, word class, patch position, band, ..."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DifficultyTracker"]


class DifficultyTracker:
    """Running (exponential moving average) loss per key, updated from batched losses.

    ``update(keys, losses)`` folds in one batch: for every key present, the batch mean of its
    losses ``m_k`` enters ``ema_k = momentum * ema_k + (1 - momentum) * m_k`` (the first
    observation of a key sets ``ema_k = m_k``). One ``scatter_add`` per update, on any device, no
    host sync. Non-finite losses (NaN, or +-inf: e.g. a ``-inf`` logit at the label, common with
    vocabulary-masked logits) are ignored, like out-of-range keys and entries that ``valid``
    marks False: one of them must not turn every weight into NaN.

    ``weights(keys, temperature)`` turns difficulty into sampling weights for
    ``sample_mask(weights=...)``: ``w = exp(clip((ema_k - mean) / (std * temperature), -10, 10))``
    over the keys seen so far (unseen keys weigh 1). ``temperature > 0`` masks hard keys more,
    ``temperature < 0`` masks them less; a large ``|temperature|`` flattens the weights.

    Args:
        num_keys: number of keys (vocabulary size, patches, frequency bands, examples, ...).
        momentum: EMA momentum in [0, 1).
        device: device of the state.

    >>> t = DifficultyTracker(4, momentum=0.0)
    >>> t.update(torch.tensor([0, 1, 1, 2]), torch.tensor([1.0, 3.0, 5.0, 1.0]))
    >>> t.loss.tolist()
    [1.0, 4.0, 1.0, 0.0]
    >>> w = t.weights(torch.tensor([0, 1, 3]))
    >>> bool(w[1] > w[0]), float(w[2])       # key 1 is hardest; key 3 is unseen
    (True, 1.0)
    """

    def __init__(
        self, num_keys: int, *, momentum: float = 0.99, device: torch.device | str | None = None
    ) -> None:
        if isinstance(num_keys, bool) or not isinstance(num_keys, int) or num_keys < 1:
            raise ValueError(f"num_keys must be a positive int ({num_keys!r} given).")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) ({momentum} given).")
        self.num_keys, self.momentum = num_keys, float(momentum)
        self.loss = torch.zeros(num_keys, device=device)  # EMA loss per key
        self.count = torch.zeros(num_keys, device=device)  # observations per key
        # The counts at the last sync(): what every rank has already merged.
        self._synced = torch.zeros(num_keys, device=device)

    @property
    def device(self) -> torch.device:
        return self.loss.device

    def to(self, device: torch.device | str) -> DifficultyTracker:
        self.loss, self.count = self.loss.to(device), self.count.to(device)
        self._synced = self._synced.to(device)
        return self

    def update(
        self, keys: torch.Tensor, losses: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        """Fold in ``losses`` observed at ``keys`` (same shape; ``valid`` marks entries to use,
        e.g. ``labels != -100``)."""
        if keys.shape != losses.shape:
            raise ValueError(
                f"keys {tuple(keys.shape)} and losses {tuple(losses.shape)} must have one shape."
            )
        if keys.dtype.is_floating_point or keys.dtype == torch.bool:
            raise TypeError(f"keys must be integers ({keys.dtype} given).")
        k = keys.reshape(-1).to(self.device).long()
        x = losses.detach().reshape(-1).to(self.device, torch.float32)
        ok = (k >= 0) & (k < self.num_keys) & x.isfinite()
        if valid is not None:
            ok &= valid.reshape(-1).to(self.device).bool()
        k = torch.where(ok, k, 0)
        w = ok.float()
        total = torch.zeros_like(self.loss).scatter_add_(0, k, torch.where(ok, x, 0.0))
        n = torch.zeros_like(self.loss).scatter_add_(0, k, w)
        seen = n > 0
        mean = total / n.clamp_min(1.0)
        first = seen & (self.count == 0)
        blended = self.momentum * self.loss + (1.0 - self.momentum) * mean
        self.loss = torch.where(first, mean, torch.where(seen, blended, self.loss))
        self.count = self.count + n

    def weights(self, keys: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
        """Sampling weights (float, shape of ``keys``): harder keys weigh more for
        ``temperature > 0``, less for ``temperature < 0``."""
        if temperature == 0:
            raise ValueError("temperature must be non-zero.")
        seen = self.count > 0
        n = seen.sum().clamp_min(1)
        mean = (self.loss * seen).sum() / n
        std = (((self.loss - mean) ** 2) * seen).sum().div(n).sqrt().clamp_min(1e-6)
        z = ((self.loss - mean) / (std * temperature)).clamp(-10.0, 10.0)
        w = torch.where(seen, z.exp(), torch.ones_like(z))
        k = keys.to(self.device).long()
        inside = (k >= 0) & (k < self.num_keys)  # e.g. -1 for padding: weight 1, like unseen keys
        return torch.where(inside, w[k.clamp(0, self.num_keys - 1)], 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss.clone(),
            "count": self.count.clone(),
            "momentum": self.momentum,
            "synced": self._synced.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss = state["loss"].to(self.device).clone()
        self.count = state["count"].to(self.device).clone()
        self.momentum = float(state["momentum"])
        # A state without it (saved by an earlier version) counts as merged: every rank that
        # loads one checkpoint holds the same state, which a sync must not count twice.
        self._synced = state.get("synced", state["count"]).to(self.device).clone()

    def sync(self) -> None:
        """Merge the trackers of all ``torch.distributed`` ranks; no-op when not initialised.

        Every rank contributes what it observed since the last sync: the counts add up, and
        each key's EMA becomes the mean of the ranks' EMAs weighted by those new observations
        (a key no rank observed keeps its value). Every rank then holds the same state, and
        ``sync()`` is idempotent: with nothing observed in between, a second sync changes
        nothing, so syncing every step is safe (counts are never added twice)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        new = self.count - self._synced  # (K,) observations since the last sync, this rank
        merged = torch.stack([self.loss * new, new])  # (2, K), one all_reduce
        if dist.get_backend() == "nccl":
            merged = merged.cuda()
        dist.all_reduce(merged, op=dist.ReduceOp.SUM)
        weighted, added = merged.to(self.device)
        self.loss = torch.where(added > 0, weighted / added.clamp_min(1e-12), self.loss)
        self.count = self._synced + added
        self._synced = self.count.clone()

    def __repr__(self) -> str:
        return (
            f"DifficultyTracker(num_keys={self.num_keys}, momentum={self.momentum}, "
            f"seen={int((self.count > 0).sum())})"
        )
