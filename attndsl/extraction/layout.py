"""The causal layout: how pairs k ≤ q of ragged sequences are packed in one array.

Program outputs, recorded head attention (the store), report weights and
the kernels all keep only the *causal entries* of each sequence, row by row:
entry (q, k), k ≤ q, of a sequence of n tokens is at ``row_start(q) + k``, a
sequence has ``tri_size(n)`` entries, and sequences follow each other at
``causal_layout(lengths)`` (``tri_offsets``).  Every module computes these
offsets with the helpers below; the kernels use the same functions compiled
with Numba (`row_start_jit`, `tri_size_jit`), so there is one formula.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit


def tri_size(n):
    """Causal entries of a sequence of n tokens: n(n+1)/2 (ints or int arrays)."""
    return n * (n + 1) // 2


def row_start(q):
    """Index of entry (q, 0) within its sequence (= ``tri_size(q)``)."""
    return q * (q + 1) // 2


#: the same formulas for Numba kernels (inlined; compiled like the kernels, no fast-math)
tri_size_jit = njit(inline="always", cache=True, fastmath=False, error_model="numpy", nogil=True)(tri_size)
row_start_jit = njit(inline="always", cache=True, fastmath=False, error_model="numpy", nogil=True)(row_start)


def causal_layout(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """``tri_offsets`` (int64[S+1]): where each sequence's causal entries start.

    Entry (s, q, k), k ≤ q, lives at ``tri_offsets[s] + row_start(q) + k``;
    ``tri_offsets[-1]`` is the total number of entries.
    """
    n = np.asarray(lengths, dtype=np.int64)
    if n.ndim != 1 or (n < 0).any():
        raise ValueError("lengths must be a 1-D array of non-negative integers")
    out = np.zeros(len(n) + 1, dtype=np.int64)
    np.cumsum(tri_size(n), out=out[1:])
    return out


def causal_entries(lengths: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sequence, q, k) of every causal entry, each int64[E], in layout order."""
    n = np.asarray(lengths, dtype=np.int64)
    tri = causal_layout(n)
    total = int(tri[-1])
    seq = np.repeat(np.arange(len(n), dtype=np.int64), tri_size(n))
    # row index q of each entry: rows of sequence s have sizes 1..n_s
    row_sizes = np.concatenate([np.arange(1, m + 1, dtype=np.int64) for m in n]) if total else np.zeros(0, np.int64)
    q = np.concatenate([np.repeat(np.arange(m, dtype=np.int64), np.arange(1, m + 1)) for m in n]) if total else np.zeros(0, np.int64)
    row_start_ = np.cumsum(row_sizes) - row_sizes
    k = np.arange(total, dtype=np.int64) - np.repeat(row_start_, row_sizes)
    return seq, q, k


def tril(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(q, k) of the causal entries of one n-token sequence, in layout order."""
    return np.tril_indices(n)


def to_dense(values: np.ndarray, n: int, dtype=None) -> np.ndarray:
    """One sequence's entries (``[tri_size(n), ...]``) → an n×n matrix (``[n, n, ...]``), 0 above the diagonal."""
    values = np.asarray(values)
    out = np.zeros((n, n) + values.shape[1:], dtype=values.dtype if dtype is None else dtype)
    out[tril(n)] = values[:tri_size(n)]
    return out
