"""Terms evaluated on chosen rows (queries) only: the search's row subsample of long sequences.

`attndsl.kernels.evaluator.evaluate_terms_kernel` evaluates every causal entry
of every sequence; the search on long sequences keeps a seeded subset of
whole rows (`attndsl.synthesis.search.data.row_subsample`), an eighth of the
entries at 256 tokens.  `evaluate_rows_kernel` evaluates each kept row as a
tile of its own.  Tiles are whole rows and every instruction works per entry
or per row of its tile (selections), so a row's values do not depend on which
rows share its tile: they are bit-identical to the full evaluation's
(``tests/test_search_rows.py`` checks it).  A module of its own so that the
evaluator's cached kernels (keyed by function and line) stay valid.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from attndsl.kernels.evaluator import _FLAGS, eval_terms_tile


@njit(parallel=True, **_FLAGS)
def evaluate_rows_kernel(code, term_ptr, pool, depth, row_seq, row_q, row_out, lengths, offsets,
                         text_ids, numbers, flags, same_keys, charset, out):
    """out[t, row_out[r] + k] = term t at (row_q[r], k), k ≤ q, on sequence row_seq[r], for every row r."""
    n_terms = len(term_ptr) - 1
    for r in prange(len(row_q)):
        s = row_seq[r]
        q = row_q[r]
        n = lengths[s]
        m = q + 1
        qv = np.empty(m, dtype=np.int64)
        kv = np.empty(m, dtype=np.int64)
        for k in range(m):
            qv[k] = q
            kv[k] = k
        stack = np.empty((depth, m))
        values = np.empty((n_terms, m))
        eval_terms_tile(code, term_ptr, pool, offsets[s], n, q, q + 1, m, qv, kv,
                        text_ids, numbers, flags, same_keys, charset, stack, values)
        lo = row_out[r]
        for t in range(n_terms):
            for e in range(m):
                out[t, lo + e] = values[t, e]
