"""maskwise.packing: literal small cases, a naive loop reference of the plan and of the rows,
invariants on random inputs (every prediction placed once, pieces never split across rows,
positions restarting at every document), packed attention equal to padded attention, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwise.attention import attend, causal, documents
from maskwise.packing import (
    PackedRows,
    Pieces,
    pack_plan,
    pack_rows,
    pad_rows,
    pieces_of,
    place_pieces,
)

PAD, IGNORE = 0, -100


# ----------------------------------------------------------------------------------------------
# Naive references (loops over pieces and positions)
# ----------------------------------------------------------------------------------------------


def naive_plan(lengths: list[int], row_len: int) -> tuple[list[int], list[int], list[int], int]:
    """Best-fit decreasing by a scan over all rows: longest piece first (ties: lower index) into
    the row with the least room that fits (ties: lower row), else a new row."""
    order = sorted(range(len(lengths)), key=lambda p: (-lengths[p], p))
    used: list[int] = []
    count: list[int] = []
    row_of, offset_of, doc_of = [0] * len(lengths), [0] * len(lengths), [0] * len(lengths)
    for p in order:
        fits = [r for r in range(len(used)) if row_len - used[r] >= lengths[p]]
        if fits:
            row = min(fits, key=lambda r: (row_len - used[r], r))
        else:
            row = len(used)
            used.append(0)
            count.append(0)
        row_of[p], offset_of[p], doc_of[p] = row, used[row], count[row]
        used[row] += lengths[p]
        count[row] += 1
    return row_of, offset_of, doc_of, len(used)


def naive_rows(
    seqs: list[list[int]], row_len: int, plan: tuple[list[int], list[int], list[int], int] | None
) -> dict[str, list[list[int]]]:
    """Rows built position by position; ``plan=None``: one piece per row (padding)."""
    pieces = []  # (inputs, targets) of every piece, in order
    for s in seqs:
        pairs = list(zip(s[:-1], s[1:]))
        for i in range(0, len(pairs), row_len):
            chunk = pairs[i : i + row_len]
            pieces.append(([a for a, _ in chunk], [b for _, b in chunk]))
    if plan is None:
        n = len(pieces)
        plan = (list(range(n)), [0] * n, [0] * n, n)
    row_of, offset_of, doc_of, rows = plan
    out = {
        "inputs": [[PAD] * row_len for _ in range(rows)],
        "targets": [[IGNORE] * row_len for _ in range(rows)],
        "doc_ids": [[-1] * row_len for _ in range(rows)],
        "positions": [[0] * row_len for _ in range(rows)],
    }
    for p, (inputs, targets) in enumerate(pieces):
        for j in range(len(inputs)):
            r, c = row_of[p], offset_of[p] + j
            out["inputs"][r][c] = inputs[j]
            out["targets"][r][c] = targets[j]
            out["doc_ids"][r][c] = doc_of[p]
            out["positions"][r][c] = j
    return out


def as_lists(rows: PackedRows) -> dict[str, list[list[int]]]:
    return {
        "inputs": rows.inputs.tolist(),
        "targets": rows.targets.tolist(),
        "doc_ids": rows.doc_ids.tolist(),
        "positions": rows.positions.tolist(),
    }


def random_seqs(n: int, max_len: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len, (n,), generator=g).tolist()
    return [torch.randint(1, 1000, (m,), generator=g) for m in lengths]


# ----------------------------------------------------------------------------------------------
# Literal cases
# ----------------------------------------------------------------------------------------------


def test_pieces_of_cuts_sequences_into_row_sized_predictions() -> None:
    p = pieces_of([torch.arange(5), torch.tensor([7]), torch.arange(100, 112)], 4)
    assert p.lengths.tolist() == [4, 4, 4, 3]  # the one-token sequence predicts nothing
    assert p.inputs.tolist() == [0, 1, 2, 3] + list(range(100, 111))
    assert p.targets.tolist() == [1, 2, 3, 4] + list(range(101, 112))
    sub = p.select(torch.tensor([3, 0]))
    assert sub.lengths.tolist() == [3, 4] and sub.inputs.tolist() == [108, 109, 110, 0, 1, 2, 3]
    assert sub.targets.tolist() == [109, 110, 111, 1, 2, 3, 4]


def test_pack_rows_literal() -> None:
    seqs = [torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7, 8]), torch.tensor([9, 10])]
    rows = pack_rows(pieces_of(seqs, 4), 4)  # pieces of 4, 2 and 1 predictions
    assert rows.inputs.tolist() == [[1, 2, 3, 4], [6, 7, 9, 0]]
    assert rows.targets.tolist() == [[2, 3, 4, 5], [7, 8, 10, IGNORE]]
    assert rows.doc_ids.tolist() == [[0, 0, 0, 0], [0, 0, 1, -1]]
    assert rows.positions.tolist() == [[0, 1, 2, 3], [0, 1, 0, 0]]
    assert len(rows) == 2 and rows.tokens == 7


def test_pad_rows_literal_and_custom_padding() -> None:
    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4, 5])]
    rows = pad_rows(pieces_of(seqs, 3), 3, pad_id=9, ignore_index=-1)
    assert rows.inputs.tolist() == [[1, 2, 9], [4, 9, 9]]
    assert rows.targets.tolist() == [[2, 3, -1], [5, -1, -1]]
    assert rows.doc_ids.tolist() == [[0, 0, -1], [0, -1, -1]]
    assert rows.positions.tolist() == [[0, 1, 0], [0, 0, 0]]


def test_pack_plan_literal_best_fit() -> None:
    # 3 -> row 0; 2 does not fit row 0 (room 1) -> row 1; 2 -> row 1 (room 2); 1 -> row 0
    assert pack_plan([3, 2, 1, 2], 4) == ([0, 1, 0, 1], [0, 0, 3, 2], [0, 0, 1, 1], 2)
    # best fit, not first fit: the 2 goes to the row with room 2, not the one with room 3
    assert pack_plan([5, 6, 2], 8) == ([1, 0, 0], [0, 0, 6], [0, 0, 1], 2)
    assert pack_plan([], 4) == ([], [], [], 0)


def test_place_pieces_at_given_places() -> None:
    p = Pieces(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4]), torch.tensor([2, 1]))
    rows = place_pieces(p, torch.tensor([1, 0]), torch.tensor([1, 2]), torch.tensor([0, 5]), 2, 3)
    assert rows.inputs.tolist() == [[0, 0, 3], [0, 1, 2]]
    assert rows.doc_ids.tolist() == [[-1, -1, 5], [-1, 0, 0]]


# ----------------------------------------------------------------------------------------------
# Against the naive reference
# ----------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 12), max_size=40), st.integers(12, 20))
def test_pack_plan_matches_the_naive_scan(lengths: list[int], row_len: int) -> None:
    assert pack_plan(lengths, row_len) == naive_plan(lengths, row_len)


@pytest.mark.parametrize(("seed", "row_len"), [(0, 4), (1, 8), (2, 16), (3, 1)])
def test_rows_match_the_naive_loop(seed: int, row_len: int) -> None:
    seqs = random_seqs(25, 30, seed)
    pieces = pieces_of(seqs, row_len)
    lists = [s.tolist() for s in seqs]
    plan = naive_plan(pieces.lengths.tolist(), row_len)
    assert as_lists(pack_rows(pieces, row_len)) == naive_rows(lists, row_len, plan)
    assert as_lists(pad_rows(pieces, row_len)) == naive_rows(lists, row_len, None)


# ----------------------------------------------------------------------------------------------
# Invariants
# ----------------------------------------------------------------------------------------------


def segments(rows: PackedRows) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(inputs, targets) of every piece of every row, sorted."""
    out = []
    for r in range(len(rows)):
        ids = rows.doc_ids[r]
        for d in ids[ids >= 0].unique().tolist():
            sel = ids == d
            out.append((tuple(rows.inputs[r][sel].tolist()), tuple(rows.targets[r][sel].tolist())))
    return sorted(out)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 50), min_size=2, max_size=30), min_size=1, max_size=20),
    st.integers(1, 16),
)
def test_packing_invariants(seqs: list[list[int]], row_len: int) -> None:
    pieces = pieces_of([torch.tensor(s) for s in seqs], row_len)
    # every prediction of every sequence, once, in order (pieces split only at row_len)
    assert pieces.lengths.tolist() == [
        min(row_len, len(s) - 1 - i) for s in seqs for i in range(0, len(s) - 1, row_len)
    ]
    assert pieces.inputs.tolist() == [t for s in seqs for t in s[:-1]]
    assert pieces.targets.tolist() == [t for s in seqs for t in s[1:]]
    packed, padded = pack_rows(pieces, row_len), pad_rows(pieces, row_len)
    assert segments(packed) == segments(padded)  # the same pieces, each whole in one row
    assert packed.tokens == padded.tokens == int(pieces.lengths.sum())
    assert len(packed) <= len(padded) == pieces.lengths.numel()
    for rows in (packed, padded):
        real = rows.doc_ids >= 0
        assert torch.equal(real, rows.targets != IGNORE)
        assert (rows.inputs[~real] == PAD).all() and (rows.positions[~real] == 0).all()
        assert not (real[:, 1:] & ~real[:, :-1]).any()  # padding only at the end of a row
        assert (rows.doc_ids[:, 1:] >= rows.doc_ids[:, :-1])[real[:, 1:]].all()
        first = torch.ones_like(real[:, :1])
        starts = real & torch.cat([first, rows.doc_ids[:, 1:] != rows.doc_ids[:, :-1]], 1)
        assert (rows.positions[starts] == 0).all()  # positions restart at every document
        inner = (real & ~starts)[:, 1:]
        assert (rows.positions[:, 1:][inner] == rows.positions[:, :-1][inner] + 1).all()
        ids = rows.doc_ids.clamp_min(0)
        assert (ids.amax(1) + 1 == torch.where(real, starts, False).sum(1).clamp_min(1)).all()


def test_packed_attention_equals_padded_attention() -> None:
    """``causal() & documents(doc_ids)`` on packed rows attends exactly as ``causal()`` does on
    the same pieces padded one per row (each piece's outputs compared position by position)."""
    g = torch.Generator().manual_seed(0)
    row_len, H, D = 12, 2, 8
    pieces = pieces_of(random_seqs(20, 14, 0), row_len)
    packed, padded = pack_rows(pieces, row_len), pad_rows(pieces, row_len)
    table = torch.randn(1000, 3, H, D, generator=g)  # per token id: q, k, v of each head

    def run(rows: PackedRows, mask: object) -> torch.Tensor:
        qkv = table[rows.inputs] + 0.1 * rows.positions[..., None, None, None]  # (R, L, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (R, H, L, D)
        return attend(q, k, v, mask).transpose(1, 2)  # (R, L, H, D)

    a = run(packed, causal() & documents(packed.doc_ids))
    b = run(padded, causal())
    row_of, offset_of, _, _ = pack_plan(pieces.lengths.tolist(), row_len)
    for p, m in enumerate(pieces.lengths.tolist()):
        got = a[row_of[p], offset_of[p] : offset_of[p] + m]
        torch.testing.assert_close(got, b[p, :m], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"piece lengths must be in \[1, 4\] \(5 given\)"):
        pack_plan([5], 4)
    with pytest.raises(ValueError, match=r"piece lengths must be in \[1, 4\] \(0 given\)"):
        pack_plan([2, 0], 4)
    with pytest.raises(ValueError, match=r"row_len must be >= 1 \(0 given\)"):
        pieces_of([torch.arange(3)], 0)
    with pytest.raises(ValueError, match="nothing to predict"):
        pieces_of([torch.tensor([1]), torch.zeros(0, dtype=torch.long)], 4)
    with pytest.raises(ValueError, match="nothing to predict"):
        pieces_of([], 4)
    with pytest.raises(ValueError, match=r"sequence 1 has shape \(2, 2\)"):
        pieces_of([torch.arange(3), torch.zeros(2, 2, dtype=torch.long)], 4)
