"""Packing token sequences into fixed-length rows, for training without padding.

Causal language-model training on many short documents either pads every document to the row
length (simple, but the model computes on padding) or packs several documents into one row and
forbids attention across them. This module does the packing; the attention mask comes from the
document ids it returns, ``causal() & documents(rows.doc_ids)`` (:mod:`maskwise.attention`),
and the positions it returns restart at 0 in every document, so a packed document is seen exactly
as it would be alone in a padded row.

Three steps, each usable on its own:

1. :func:`pieces_of`: a sequence of ``n`` tokens gives ``n - 1`` next-token predictions
   (input ``s[i]``, target ``s[i + 1]``), cut into pieces of at most ``row_len`` predictions;
   a piece never holds two sequences.
2. :func:`pack_plan`: best-fit decreasing bin packing of the piece lengths into rows of
   ``row_len``; pieces are never split.
3. :func:`place_pieces` / :func:`pack_rows` / :func:`pad_rows`: the rows, as
   :class:`PackedRows` (``inputs``, ``targets``, ``doc_ids``, ``positions``, each (R, L)).

Padding (only at the end of a row) has input ``pad_id``, target ``ignore_index``, document id
``-1`` (attends to nothing under :func:`~maskwise.attention.documents`) and position 0.

>>> import torch
>>> from maskwise.attention import causal, documents
>>> docs = [torch.tensor([10, 11, 12, 13]), torch.tensor([20, 21, 22]), torch.tensor([30, 31])]
>>> rows = pack_rows(pieces_of(docs, 4), 4)    # 3 + 2 + 1 predictions into rows of 4
>>> rows.inputs.tolist()
[[10, 11, 12, 30], [20, 21, 0, 0]]
>>> rows.targets.tolist()
[[11, 12, 13, 31], [21, 22, -100, -100]]
>>> rows.doc_ids.tolist()
[[0, 0, 0, 1], [0, 0, -1, -1]]
>>> rows.positions.tolist()
[[0, 1, 2, 0], [0, 1, 0, 0]]
>>> (causal() & documents(rows.doc_ids)).dense(4).int()[0, 0].tolist()   # row 0: who sees whom
[[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "PackedRows",
    "Pieces",
    "pack_plan",
    "pack_rows",
    "pad_rows",
    "pieces_of",
    "place_pieces",
]


@dataclass
class Pieces:
    """Next-token prediction pieces, concatenated.

    Piece ``p`` has the inputs ``inputs[o_p : o_p + lengths[p]]`` and its targets (the next
    tokens) at the same offsets, ``o_p = lengths[:p].sum()``.

    Attributes:
        inputs: (N,) int64 input tokens of all pieces.
        targets: (N,) int64 target tokens (the token after each input).
        lengths: (P,) int64 predictions per piece, each in ``[1, row_len]``; they sum to N.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor

    def select(self, index: torch.Tensor) -> Pieces:
        """The pieces ``index`` (P',) int64, in that order.

        >>> p = Pieces(torch.arange(5), torch.arange(1, 6), torch.tensor([2, 3]))
        >>> p.select(torch.tensor([1, 0])).inputs.tolist()
        [2, 3, 4, 0, 1]
        """
        starts = self.lengths.cumsum(0) - self.lengths  # (P,) offset of each piece
        lengths = self.lengths[index]  # (P',)
        new_starts = (lengths.cumsum(0) - lengths).repeat_interleave(lengths)  # (N',)
        within = torch.arange(int(lengths.sum())) - new_starts  # (N',) position in its piece
        flat = starts[index].repeat_interleave(lengths) + within  # (N',) index into inputs
        return Pieces(self.inputs[flat], self.targets[flat], lengths)


def pieces_of(seqs: Sequence[torch.Tensor], row_len: int) -> Pieces:
    """Cut token sequences into pieces of at most ``row_len`` next-token predictions.

    A sequence of ``n`` tokens gives ``n - 1`` (input, target) pairs, cut into
    ``ceil((n - 1) / row_len)`` pieces in order (all of length ``row_len`` but the last);
    sequences of fewer than two tokens predict nothing and are skipped. A piece never holds two
    sequences, so the packed and the padded layout of the same pieces predict exactly the same
    targets from exactly the same context.

    Args:
        seqs: 1-D integer tensors (token ids), e.g. ``[BOS] document [EOS]``.
        row_len: the most predictions per piece (the row length), >= 1.

    Returns:
        The :class:`Pieces`, in sequence order.

    Raises:
        ValueError: ``row_len < 1``, a sequence that is not 1-D, or no sequence with two tokens.

    >>> p = pieces_of([torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([7, 8])], 3)
    >>> p.lengths.tolist(), p.inputs.tolist(), p.targets.tolist()
    ([3, 2, 1], [1, 2, 3, 4, 5, 7], [2, 3, 4, 5, 6, 8])
    """
    if row_len < 1:
        raise ValueError(f"row_len must be >= 1 ({row_len} given).")
    for i, s in enumerate(seqs):
        if s.dim() != 1:
            raise ValueError(f"sequences must be 1-D (sequence {i} has shape {tuple(s.shape)}).")
    seqs = [s for s in seqs if s.numel() >= 2]
    if not seqs:
        raise ValueError("no sequence has two tokens or more (nothing to predict).")
    inputs = torch.cat([s[:-1] for s in seqs])
    targets = torch.cat([s[1:] for s in seqs])
    m = torch.tensor([s.numel() - 1 for s in seqs])  # (S,) predictions per sequence
    count = (m + row_len - 1) // row_len  # (S,) pieces per sequence
    lengths = torch.full((int(count.sum()),), row_len, dtype=torch.long)
    last = count.cumsum(0) - 1  # (S,) index of each sequence's last piece
    lengths[last] = m - row_len * (count - 1)
    return Pieces(inputs, targets, lengths)


@dataclass
class PackedRows:
    """Rows of pieces, padded at the end to the row length L.

    Attributes:
        inputs: (R, L) int64 input tokens, ``pad_id`` on padding.
        targets: (R, L) int64 next tokens, ``ignore_index`` on padding.
        doc_ids: (R, L) int64 index of the piece among its row's pieces, in order (0, 1, ...),
            ``-1`` on padding: the argument of :func:`maskwise.attention.documents`.
        positions: (R, L) int64 position within the piece (restarting at 0), 0 on padding.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    doc_ids: torch.Tensor
    positions: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def tokens(self) -> int:
        """The number of real (non-padding) targets."""
        return int((self.doc_ids >= 0).sum())


def place_pieces(
    pieces: Pieces,
    row_of: torch.Tensor,
    offset_of: torch.Tensor,
    doc_of: torch.Tensor,
    rows: int,
    row_len: int,
    *,
    pad_id: int = 0,
    ignore_index: int = -100,
) -> PackedRows:
    """Rows holding piece ``p`` at ``(row_of[p], offset_of[p])`` as document ``doc_of[p]``.

    Vectorised: one scatter per field. The placement must keep pieces inside their row and must
    not overlap (as :func:`pack_plan`'s does); it is not checked.

    Args:
        pieces: the pieces.
        row_of, offset_of, doc_of: (P,) int64 row, offset in the row and document id per piece.
        rows, row_len: the shape (R, L) of the result.
        pad_id: input id of padding.
        ignore_index: target of padding.

    Returns:
        The :class:`PackedRows`.
    """
    lengths = pieces.lengths
    start = lengths.cumsum(0) - lengths  # (P,) offset of each piece in the flat arrays
    within = torch.arange(int(lengths.sum())) - start.repeat_interleave(lengths)  # (N,)
    r = row_of.repeat_interleave(lengths)  # (N,) row of every token
    c = offset_of.repeat_interleave(lengths) + within  # (N,) column of every token
    inputs = torch.full((rows, row_len), pad_id, dtype=torch.long)
    targets = torch.full((rows, row_len), ignore_index, dtype=torch.long)
    doc_ids = torch.full((rows, row_len), -1, dtype=torch.long)
    positions = torch.zeros((rows, row_len), dtype=torch.long)
    inputs[r, c] = pieces.inputs
    targets[r, c] = pieces.targets
    doc_ids[r, c] = doc_of.repeat_interleave(lengths)
    positions[r, c] = within
    return PackedRows(inputs, targets, doc_ids, positions)


def pad_rows(
    pieces: Pieces, row_len: int, *, pad_id: int = 0, ignore_index: int = -100
) -> PackedRows:
    """One piece per row, padded on the right to ``row_len`` (the layout packing replaces).

    >>> rows = pad_rows(pieces_of([torch.tensor([1, 2, 3]), torch.tensor([4, 5])], 3), 3)
    >>> rows.inputs.tolist(), rows.doc_ids.tolist()
    ([[1, 2, 0], [4, 0, 0]], [[0, 0, -1], [0, -1, -1]])
    """
    P = pieces.lengths.numel()
    zeros = torch.zeros(P, dtype=torch.long)
    return place_pieces(
        pieces, torch.arange(P), zeros, zeros, P, row_len, pad_id=pad_id, ignore_index=ignore_index
    )


def pack_plan(lengths: Sequence[int], row_len: int) -> tuple[list[int], list[int], list[int], int]:
    """Best-fit decreasing packing of pieces of ``lengths`` into rows of ``row_len``.

    Each piece, longest first (ties in index order), goes to the row with the least room left
    that fits it (ties: the lower row), or opens a new row; pieces are never split. Within a row
    the pieces lie in the order they were placed, so document ids grow along the row. Data
    preparation, once per split: the loop is over pieces, not positions.

    Args:
        lengths: the length of every piece, each in ``[1, row_len]``.
        row_len: the row length.

    Returns:
        ``(row_of, offset_of, doc_of, rows)``: per piece, its row, its offset in the row and its
        index among the row's pieces; and the number of rows.

    Raises:
        ValueError: a length outside ``[1, row_len]``.

    >>> pack_plan([3, 2, 1, 2], 4)
    ([0, 1, 0, 1], [0, 0, 3, 2], [0, 0, 1, 1], 2)
    """
    order = sorted(range(len(lengths)), key=lambda p: -lengths[p])
    row_of, offset_of, doc_of = [0] * len(lengths), [0] * len(lengths), [0] * len(lengths)
    free: list[tuple[int, int]] = []  # (room left, row), sorted: the best fit is the first fit
    used: list[int] = []  # per row: positions filled
    count: list[int] = []  # per row: pieces placed
    for p in order:
        m = lengths[p]
        if not 1 <= m <= row_len:
            raise ValueError(f"piece lengths must be in [1, {row_len}] ({m} given).")
        i = bisect.bisect_left(free, (m, -1))
        if i < len(free):
            _, row = free.pop(i)
        else:
            row = len(used)
            used.append(0)
            count.append(0)
        row_of[p], offset_of[p], doc_of[p] = row, used[row], count[row]
        used[row] += m
        count[row] += 1
        if used[row] < row_len:
            bisect.insort(free, (row_len - used[row], row))
    return row_of, offset_of, doc_of, len(used)


def pack_rows(
    pieces: Pieces, row_len: int, *, pad_id: int = 0, ignore_index: int = -100
) -> PackedRows:
    """Pieces packed into rows of ``row_len`` by :func:`pack_plan`.

    Several pieces per row; padding only at the end of the rows that are not full. See the module
    docstring for a literal example.
    """
    row_of, offset_of, doc_of, rows = pack_plan(pieces.lengths.tolist(), row_len)
    return place_pieces(
        pieces,
        torch.tensor(row_of),
        torch.tensor(offset_of),
        torch.tensor(doc_of),
        rows,
        row_len,
        pad_id=pad_id,
        ignore_index=ignore_index,
    )
