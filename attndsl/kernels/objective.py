"""The enumerative search's objective kernels (Numba): soft IoU sums of candidate programs.

The greedy search (`attndsl.synthesis.search.greedy`) scores thousands of
candidates per step: "the current score plus c times this term" for every
pool term and several mixing fractions c.  These kernels compute, per row of
the causal layout, Σ_k min(A, normalise(max(score, 0))) directly, without
materialising the normalised row, and per sequence the soft IoU
Σmin / (2n − Σmin) (the definition in `attndsl.synthesis.scoring`):

- `row_min`: one row's Σ min; an all-zero row falls back to all mass on key 0
  (the language's ``fallback sink``), so its Σ min is ``A[q, 0]``;
- `base_mins`: that for every row and summed per sequence (the current program);
- `screen_candidates`: the mean IoU of ``score + cs[t, c] · value_t`` for every
  candidate t and step c, recomputing only the rows the term is active in;
- `active_rows`: which rows each term is non-zero in (the index screening uses).

The clip-normalise-with-fallback here is fused with the Σ min (two passes
over a row's keys, no normalised row is stored), so it cannot call the
evaluator's normaliser (`attndsl.kernels.evaluator.combine_row_block`)
without changing the loops and the numerics; ``tests/test_objective.py``
checks every kernel against a NumPy reference that normalises the row first
(`attndsl.language.interpreter` semantics), within float tolerance.

Compilation flags, and why ``fastmath=True`` is acceptable here while
`attndsl.kernels.evaluator` must keep it off:

- The evaluator's semantics depend on IEEE behaviour (every non-finite
  intermediate becomes 0 via ``np.isfinite``; exact float comparisons;
  exp(−inf) = 0 in softmax); fast-math lets LLVM delete those checks.  Here
  every input is finite by construction — term values come out of that
  evaluator (non-finite already zeroed) scaled by finite positive scales,
  weights and steps are finite, attention rows are finite — and no kernel
  tests for NaN/inf, so there is nothing for fast-math to remove.
- What fast-math does change is the association of the sums (reassociation,
  vectorised reductions, reciprocal instead of division), i.e. the last bits
  of an objective that only *ranks* candidates during the search.  The
  printed program is re-scored exactly by the library (non-fastmath scorer),
  so those bits never reach a reported IoU; and the compiled code is fixed
  for a machine (``cache=True``), so the search stays deterministic for a
  seed.  These flags are part of the search's behaviour: changing them
  changes which programs are found.
- ``error_model="numpy"``: no ``ZeroDivisionError`` checks in the loops
  (a sequence's 2n − Σmin is ≥ n > 0, so no division by zero happens).
- ``parallel=True`` with ``prange`` over rows or candidates; every
  per-sequence sum is then reduced in a fixed serial order.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_JIT = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")


@njit(**_JIT)
def row_min(A, score, lo, m):
    """Σ_k min(A, normalised score) over one row (fallback: all mass on key 0)."""
    z = 0.0
    for k in range(m):
        v = score[lo + k]
        if v > 0.0:
            z += v
    if z <= 0.0:
        return A[lo]  # min(A[q, 0], 1)
    inv = 1.0 / z
    total = 0.0
    for k in range(m):
        v = score[lo + k]
        if v > 0.0:
            w = v * inv
            a = A[lo + k]
            total += a if a < w else w
    return total


@njit(parallel=True, **_JIT)
def base_mins(A, score, row_start, row_len, row_seq, n_seq, out_rows, out_seq):
    """Σmin per row and per sequence for the program ``score``."""
    R = len(row_start)
    for r in prange(R):
        out_rows[r] = row_min(A, score, row_start[r], row_len[r])
    for s in range(n_seq):
        out_seq[s] = 0.0
    for r in range(R):
        out_seq[row_seq[r]] += out_rows[r]


@njit(parallel=True, **_JIT)
def screen_candidates(A, score, V, cand_term, cand_gate, gates, cand_ptr, cand_rows, cs,
            row_start, row_len, row_seq, base_rows, base_seq, two_n, out):
    """Mean IoU over sequences of ``score + cs[t, c] * value_t`` for every candidate t and step c.

    ``value_t = V[cand_term[t]] * gates[cand_gate[t]]`` (no gate when -1);
    only the rows ``cand_rows[cand_ptr[t]:cand_ptr[t+1]]`` (where the term
    can be non-zero) are recomputed; scores below 0 are clipped like the
    language does.
    """
    T, C = cs.shape
    n_seq = len(base_seq)
    for t in prange(T):
        delta = np.zeros((n_seq, C))
        z = np.empty(C)
        mins = np.empty(C)
        vt = cand_term[t]
        g = cand_gate[t]
        for i in range(cand_ptr[t], cand_ptr[t + 1]):
            r = cand_rows[i]
            lo = row_start[r]
            m = row_len[r]
            for c in range(C):
                z[c] = 0.0
                mins[c] = 0.0
            for k in range(m):
                v = V[vt, lo + k]
                if g >= 0 and gates[g, lo + k] == 0:
                    v = 0.0
                s = score[lo + k]
                for c in range(C):
                    x = s + cs[t, c] * v
                    if x > 0.0:
                        z[c] += x
            for k in range(m):
                v = V[vt, lo + k]
                if g >= 0 and gates[g, lo + k] == 0:
                    v = 0.0
                s = score[lo + k]
                a = A[lo + k]
                for c in range(C):
                    x = s + cs[t, c] * v
                    if x > 0.0 and z[c] > 0.0:
                        w = x / z[c]
                        mins[c] += a if a < w else w
            seq = row_seq[r]
            for c in range(C):
                mc = mins[c] if z[c] > 0.0 else A[lo]
                delta[seq, c] += mc - base_rows[r]
        for c in range(C):
            total = 0.0
            for s in range(n_seq):
                mm = base_seq[s] + delta[s, c]
                total += mm / (two_n[s] - mm)
            out[t, c] = total / n_seq


@njit(parallel=True, **_JIT)
def active_rows(V, row_start, row_len, counts, mark):
    """mark[t, r] = term t is non-zero somewhere in row r; counts[t] = rows marked."""
    T = V.shape[0]
    R = len(row_start)
    for t in prange(T):
        c = 0
        for r in range(R):
            lo = row_start[r]
            hit = 0
            for k in range(row_len[r]):
                if V[t, lo + k] != 0.0:
                    hit = 1
                    break
            mark[t, r] = hit
            c += hit
        counts[t] = c
