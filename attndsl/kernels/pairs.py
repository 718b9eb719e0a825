"""Fused evaluate + soft-IoU numerators for chosen (program, head) pairs only.

`attndsl.kernels.evaluator.score_kernel` scores every program against every
head: its work is programs × non-zero entries × heads.  The library's choice
and held-out steps need far fewer numbers: each head's few shortlisted
programs on the synthesis side, each head's winner on the held-out side.
`score_pairs_kernel` takes, per program, the list of head columns it is
needed for and accumulates Σ min only for those, so its work is pairs ×
non-zero entries.

Every pair's sums are added in exactly the order `score_kernel` adds them
(same tiles, same rows, same keys; the evaluator's helpers, same flags), so a
pair's numbers are bit-identical to the full matrix's entry
(``tests/test_scoring.py`` checks it).  A new module, not new functions in
``evaluator.py``: Numba's on-disk cache is keyed by function and line, so
the evaluator's cached kernels stay valid.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from attndsl.kernels.evaluator import (
    _FLAGS, attention_k1, combine_row_block, eval_terms_tile, fill_positions, next_tile, row_start, tile_size,
)


@njit(**_FLAGS)
def accumulate_min_pairs(q0, q1, ahat, block, a_lo, pair_head, j0, j1, acc_k1, acc_k0):
    """`attndsl.kernels.evaluator.accumulate_min` for the head columns ``pair_head[j0:j1]``:
    acc_k0[j] / acc_k1[j] take what acc_k0[h] / acc_k1[h] would, in the same order.
    Returns Σ_q Â[q,0]."""
    e = 0
    z = 0.0
    for q in range(q0, q1):
        w = ahat[e]
        z += w
        if w != 0.0:
            row = block[a_lo + e]
            for j in range(j0, j1):
                a = np.float64(row[pair_head[j]])
                acc_k0[j] += a if a < w else w
        e += 1
        for k in range(1, q + 1):
            w = ahat[e]
            if w != 0.0:
                row = block[a_lo + e]
                for j in range(j0, j1):
                    a = np.float64(row[pair_head[j]])
                    acc_k1[j] += a if a < w else w
            e += 1
    return z


@njit(parallel=True, **_FLAGS)
def score_pairs_kernel(seqs, a_offsets, block,
                       code, term_ptr, pool, depth, prog_ptr, term_idx, coef, fallback,
                       lengths, offsets, text_ids, numbers, flags, same_keys, charset,
                       pair_ptr, pair_head, min_k1, min_k0, hat_k0, attn_k1):
    """`score_kernel` restricted to pairs: program p is scored on the head columns
    ``pair_head[pair_ptr[p]:pair_ptr[p+1]]``; ``min_k1[i, j]`` / ``min_k0[i, j]`` are pair j's
    sums on sequence i, ``hat_k0[i, p]`` and ``attn_k1[i, h]`` as in `score_kernel`."""
    n_terms = len(term_ptr) - 1
    n_programs = len(prog_ptr) - 1
    for i in prange(len(seqs)):
        s = seqs[i]
        n = lengths[s]
        if n == 0:
            continue
        size = tile_size(n)
        qv = np.empty(size, dtype=np.int64)
        kv = np.empty(size, dtype=np.int64)
        stack = np.empty((depth, size))
        values = np.empty((n_terms, size))
        total = np.empty(size)
        ahat = np.empty(size)
        attention_k1(n, block, a_offsets[i], attn_k1[i])
        q0 = 0
        while q0 < n:
            q1 = next_tile(n, q0)
            m = fill_positions(q0, q1, qv, kv)
            eval_terms_tile(code, term_ptr, pool, offsets[s], n, q0, q1, m, qv, kv,
                            text_ids, numbers, flags, same_keys, charset, stack, values)
            a_lo = a_offsets[i] + row_start(q0)
            for p in range(n_programs):
                if pair_ptr[p] == pair_ptr[p + 1]:
                    continue
                combine_row_block(q0, q1, m, values, term_idx, coef, prog_ptr[p], prog_ptr[p + 1], fallback[p],
                                  total, ahat)
                hat_k0[i, p] += accumulate_min_pairs(q0, q1, ahat, block, a_lo, pair_head, pair_ptr[p],
                                                     pair_ptr[p + 1], min_k1[i], min_k0[i])
            q0 = q1
