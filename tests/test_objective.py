"""The search's objective kernels (`attndsl.kernels.objective`) against NumPy references.

Each kernel is compared on random inputs with a reference that first
normalises the row with the language's own normaliser
(`attndsl.language.interpreter.normalise`, fallback ``first``) and then takes
the soft IoU with `attndsl.synthesis.scoring.iou_dense`.  The kernels are
compiled with ``fastmath=True`` (see their module docstring), so sums may
differ from the reference in the last bits: the comparisons use a float
tolerance, not equality.
"""
from __future__ import annotations

import numpy as np
import pytest

from attndsl.kernels.objective import active_rows, base_mins, row_min, screen_candidates
from attndsl.language.interpreter import normalise
from attndsl.synthesis.scoring import iou_dense
from attndsl.synthesis.search.data import _row_layout

TOL = 1e-9


def _case(seed: int, n_seq: int = 5, max_len: int = 12):
    """Random causal attention (row-stochastic), a score with negative and all-zero rows."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=n_seq)
    row_start, row_len, row_seq = _row_layout(lengths)
    n_entries = int((lengths * (lengths + 1) // 2).sum())
    A = np.zeros(n_entries)
    score = rng.normal(size=n_entries)
    for r in range(len(row_start)):
        lo, m = row_start[r], row_len[r]
        a = rng.uniform(size=m) ** 3
        A[lo:lo + m] = a / a.sum()
        if rng.uniform() < 0.2:  # an all-zero row: the fallback
            score[lo:lo + m] = 0.0
        elif rng.uniform() < 0.2:  # an all-negative row: clipped to zero, the fallback
            score[lo:lo + m] = -np.abs(score[lo:lo + m])
    return rng, lengths, row_start, row_len, row_seq, A, score


def _square(vec: np.ndarray, lengths, s: int) -> np.ndarray:
    """Sequence s of a causal-layout vector as an n×n matrix (zero above the diagonal)."""
    tri = np.concatenate([[0], np.cumsum(lengths * (lengths + 1) // 2)])
    n = int(lengths[s])
    m = np.zeros((n, n))
    m[np.tril_indices(n)] = vec[tri[s]:tri[s + 1]]
    return m


def _reference_rows(A, score, lengths):
    """Per-row Σ min(A, normalise(score)) and per-sequence soft IoU, densely."""
    rows, ious = [], []
    for s in range(len(lengths)):
        a, hat = _square(A, lengths, s), normalise(_square(score, lengths, s), "first")
        rows.extend(np.minimum(a, hat).sum(axis=1))
        ious.append(iou_dense(a, hat))
    return np.array(rows), np.array(ious)


@pytest.mark.parametrize("seed", range(4))
def test_row_min_and_base_mins_match_the_reference(seed):
    _, lengths, row_start, row_len, row_seq, A, score = _case(seed)
    want_rows, want_iou = _reference_rows(A, score, lengths)
    for r in range(len(row_start)):
        assert row_min(A, score, row_start[r], row_len[r]) == pytest.approx(want_rows[r], abs=TOL)
    out_rows, out_seq = np.zeros(len(row_start)), np.zeros(len(lengths))
    base_mins(A, score, row_start, row_len, row_seq, len(lengths), out_rows, out_seq)
    np.testing.assert_allclose(out_rows, want_rows, atol=TOL)
    two_n = 2.0 * lengths.astype(np.float64)
    np.testing.assert_allclose(out_seq / (two_n - out_seq), want_iou, atol=TOL)


@pytest.mark.parametrize("seed", range(4))
def test_active_rows_matches_the_reference(seed):
    rng, lengths, row_start, row_len, row_seq, _, _ = _case(seed)
    V = rng.uniform(size=(6, int(row_start[-1] + row_len[-1]))).astype(np.float32)
    V[V < 0.8] = 0.0
    V[2] = 0.0  # a term that is zero everywhere
    counts, mark = np.zeros(len(V), np.int64), np.zeros((len(V), len(row_start)), np.uint8)
    active_rows(V, row_start, row_len, counts, mark)
    want = np.array([[np.any(V[t, lo:lo + m] != 0) for lo, m in zip(row_start, row_len)] for t in range(len(V))])
    np.testing.assert_array_equal(mark, want.astype(np.uint8))
    np.testing.assert_array_equal(counts, want.sum(axis=1))


@pytest.mark.parametrize("seed", range(4))
def test_screen_candidates_matches_the_reference(seed):
    """Mean IoU of ``score + c · gate · value_t``, with only the term's active rows recomputed."""
    rng, lengths, row_start, row_len, row_seq, A, score = _case(seed)
    n_entries = len(A)
    V = rng.uniform(size=(5, n_entries)).astype(np.float32)
    V[V < 0.6] = 0.0
    gates = (rng.uniform(size=(3, n_entries)) < 0.5).astype(np.uint8)
    counts, mark = np.zeros(len(V), np.int64), np.zeros((len(V), len(row_start)), np.uint8)
    active_rows(V, row_start, row_len, counts, mark)
    cand_term = np.array([0, 1, 2, 3, 4, 1, 3], dtype=np.int64)
    cand_gate = np.array([-1, -1, -1, -1, -1, 0, 2], dtype=np.int64)
    parts = [np.flatnonzero(mark[t]) for t in cand_term]
    ptr = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    cand_rows = np.concatenate(parts).astype(np.int64)
    cs = rng.uniform(0.05, 3.0, size=(len(cand_term), 4))
    base_rows, base_seq = np.zeros(len(row_start)), np.zeros(len(lengths))
    base_mins(A, score, row_start, row_len, row_seq, len(lengths), base_rows, base_seq)
    two_n = 2.0 * lengths.astype(np.float64)
    out = np.zeros(cs.shape)
    screen_candidates(A, score, V, cand_term, cand_gate, gates, ptr, cand_rows, cs,
                      row_start, row_len, row_seq, base_rows, base_seq, two_n, out)
    for t in range(len(cand_term)):
        value = V[cand_term[t]].astype(np.float64)
        if cand_gate[t] >= 0:
            value = value * gates[cand_gate[t]]
        for c in range(cs.shape[1]):
            _, ious = _reference_rows(A, score + cs[t, c] * value, lengths)
            assert out[t, c] == pytest.approx(ious.mean(), abs=TOL)
