"""The one precompiled Numba evaluator for encoded programs (see encoding.py).

Every kernel here is compiled once per machine and cached on disk
(``cache=True``): a new program is only new *data* (bytecode), so scoring
thousands of fresh candidates pays no JIT cost after the first call.
The module is long because it holds the whole bytecode dispatch and every
batch kernel that fuses it: Numba inlines helpers only within what it
compiles together, and splitting the dispatch would cost a call per
instruction.  Opcodes and codes come from `attndsl.language.ops`; causal
offsets from `attndsl.extraction.layout`.

Compilation flags, and why:

- ``fastmath=False``: the semantics turn every non-finite intermediate into
  0 (``np.isfinite`` after each operation) and compare floats exactly;
  fast-math lets LLVM assume no NaN/inf and delete exactly those checks, which
  would make the kernels disagree with the reference interpreter.
  The softmax form relies on the same IEEE behaviour: a logit difference that
  overflows to −inf must give exp(−inf) = 0, as in NumPy.
- ``error_model="numpy"``: division by zero gives inf/NaN (then 0) like NumPy
  instead of raising ``ZeroDivisionError`` as Python semantics would.

Work is parallel over sequences (``prange``); each sequence is evaluated on
vectors over its causal entries (q, k ≤ q), laid out as in
`attndsl.extraction.batch.causal_layout`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# opcodes and codes come from the one table (module-level ints, frozen into the
# compiled kernels; the table never renumbers, see its docstring)
from attndsl.language.ops import (
    FALLBACK_FIRST, FALLBACK_PREVIOUS, FALLBACK_SELF, FORM_SOFTMAX, FORM_STRIDE, OP_ABS, OP_ADD, OP_AND,
    OP_BOOLF, OP_CONST, OP_DIST, OP_DIV, OP_EQ, OP_EXP, OP_GE, OP_GT, OP_IN, OP_LE, OP_LEX, OP_LOG, OP_LT,
    OP_MAX, OP_MIN, OP_MUL, OP_NE, OP_NEG, OP_NUMF, OP_OR, OP_POS, OP_POW, OP_SAME, OP_SELECT, OP_SIM,
    OP_SQRT, OP_STRF, OP_SUB, SELECT_NEAREST, SELECT_SPREAD, VAR_K, VAR_Q,
)
# the causal layout's offsets (one formula, `attndsl.extraction.layout`)
from attndsl.extraction.layout import row_start_jit as row_start, tri_size_jit as tri_size

_FLAGS = dict(cache=True, fastmath=False, error_model="numpy", nogil=True)

#: softmax logits are clamped to ±LOGIT_BOUND (= attndsl.language.ir.LOGIT_BOUND; a literal
#: here so the cached kernels do not depend on a module global changing)
LOGIT_BOUND = 1e4


@njit(inline="always", **_FLAGS)
def _fin(x):
    return x if np.isfinite(x) else 0.0


@njit(inline="always", **_FLAGS)
def _popcount(x):
    x = np.uint64(x)
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


#: causal entries evaluated together (whole rows; a longer row is one tile):
#: small enough that the stack vectors stay in L1/L2
TILE = 1024


@njit(**_FLAGS)
def tile_size(n):
    """Entries a tile of a sequence of n tokens may hold: `TILE`, or the whole causal triangle
    when that is smaller, and at least one row.  Buffers are sized by it, not by `TILE`: a
    sentence's per-term buffers of `TILE` floats touched a fresh page per term, and scoring a
    library of thousands of distinct terms spent much of its time in page faults."""
    return max(min(TILE, n * (n + 1) // 2), n)


@njit(**_FLAGS)
def next_tile(n, q0):
    """End row q1 of the tile starting at row q0: rows q0..q1-1 hold at most TILE entries (≥ 1 row)."""
    q1 = q0 + 1
    entries = q0 + 1
    while q1 < n and entries + q1 + 1 <= TILE:
        entries += q1 + 1
        q1 += 1
    return q1


@njit(**_FLAGS)
def fill_positions(q0, q1, qv, kv):
    """q and k of each causal entry of rows q0..q1-1, in layout order."""
    e = 0
    for q in range(q0, q1):
        for k in range(q + 1):
            qv[e] = q
            kv[e] = k
            e += 1
    return e


@njit(**_FLAGS)
def run_term(code, start, stop, pool, base, n, q0, q1, m, qv, kv,
             text_ids, numbers, flags, same_keys, charset, stack, out):
    """Evaluate instructions ``code[start:stop]`` over the m causal entries of rows
    q0..q1-1 of one sequence (tokens ``base .. base+n-1``) into ``out[:m]``."""
    sp = 0
    for pc in range(start, stop):
        op = code[pc, 0]
        a1 = code[pc, 1]
        if op == OP_CONST:
            top = stack[sp]
            v = pool[a1]
            for e in range(m):
                top[e] = v
            sp += 1
        elif op == OP_DIST:
            top = stack[sp]
            for e in range(m):
                top[e] = qv[e] - kv[e]
            sp += 1
        elif op == OP_POS:
            top = stack[sp]
            src = qv if a1 == VAR_Q else kv
            for e in range(m):
                top[e] = src[e]
            sp += 1
        elif op == OP_NUMF or op == OP_STRF or op == OP_BOOLF:
            top = stack[sp]
            src = kv if code[pc, 2] == VAR_K else qv
            off = code[pc, 3]
            if op == OP_NUMF:
                col = numbers[a1]
                for e in range(m):
                    i = src[e] + off
                    top[e] = col[base + i] if (i >= 0 and i < n) else -1.0
            elif op == OP_STRF:
                tcol = text_ids[a1]
                for e in range(m):
                    i = src[e] + off
                    top[e] = tcol[base + i] if (i >= 0 and i < n) else -1.0
            else:
                fcol = flags[a1]
                for e in range(m):
                    i = src[e] + off
                    top[e] = 1.0 if (i >= 0 and i < n and fcol[base + i] != 0) else 0.0
            sp += 1
        elif op == OP_SAME or op == OP_SIM:
            top = stack[sp]
            srca = kv if code[pc, 2] == VAR_K else qv
            offa = code[pc, 3]
            srcb = kv if code[pc, 4] == VAR_K else qv
            offb = code[pc, 5]
            if op == OP_SAME:
                scol = same_keys[a1]
                for e in range(m):
                    i = srca[e] + offa
                    j = srcb[e] + offb
                    ok = i >= 0 and i < n and j >= 0 and j < n
                    top[e] = 1.0 if (ok and scol[base + i] == scol[base + j]) else 0.0
            else:
                for e in range(m):
                    i = srca[e] + offa
                    j = srcb[e] + offb
                    r = 0.0
                    if i >= 0 and i < n and j >= 0 and j < n:
                        ma = charset[base + i]
                        mb = charset[base + j]
                        union = _popcount(ma | mb)
                        if union != 0:
                            r = _popcount(ma & mb) / union
                    top[e] = r
            sp += 1
        elif op <= OP_DIV or (op >= OP_POW and op <= OP_MAX) or (op >= OP_EQ and op <= OP_GE) or op == OP_AND or op == OP_OR:
            x = stack[sp - 2]
            y = stack[sp - 1]
            if op == OP_ADD:
                for e in range(m):
                    x[e] = _fin(x[e] + y[e])
            elif op == OP_SUB:
                for e in range(m):
                    x[e] = _fin(x[e] - y[e])
            elif op == OP_MUL:
                for e in range(m):
                    x[e] = _fin(x[e] * y[e])
            elif op == OP_DIV:
                for e in range(m):
                    x[e] = _fin(x[e] / y[e])
            elif op == OP_POW:
                for e in range(m):
                    x[e] = _fin(np.power(x[e], y[e]))
            elif op == OP_MIN:
                for e in range(m):
                    x[e] = _fin(min(x[e], y[e]))
            elif op == OP_MAX:
                for e in range(m):
                    x[e] = _fin(max(x[e], y[e]))
            elif op == OP_EQ:
                for e in range(m):
                    x[e] = 1.0 if x[e] == y[e] else 0.0
            elif op == OP_NE:
                for e in range(m):
                    x[e] = 1.0 if x[e] != y[e] else 0.0
            elif op == OP_LT:
                for e in range(m):
                    x[e] = 1.0 if x[e] < y[e] else 0.0
            elif op == OP_LE:
                for e in range(m):
                    x[e] = 1.0 if x[e] <= y[e] else 0.0
            elif op == OP_GT:
                for e in range(m):
                    x[e] = 1.0 if x[e] > y[e] else 0.0
            elif op == OP_GE:
                for e in range(m):
                    x[e] = 1.0 if x[e] >= y[e] else 0.0
            elif op == OP_AND:
                for e in range(m):
                    x[e] = 1.0 if (x[e] != 0.0 and y[e] != 0.0) else 0.0
            else:  # OP_OR
                for e in range(m):
                    x[e] = 1.0 if (x[e] != 0.0 or y[e] != 0.0) else 0.0
            sp -= 1
        elif op == OP_IN:
            x = stack[sp - 1]
            for e in range(m):
                v = x[e]
                hit = 0.0
                for j in range(a1, a1 + code[pc, 2]):
                    if pool[j] == v:
                        hit = 1.0
                        break
                x[e] = hit
        elif op == OP_SELECT:
            x = stack[sp - 1]
            first_entry = row_start(q0)
            for q in range(q0, q1):
                r0 = row_start(q) - first_entry
                if a1 == SELECT_SPREAD:
                    count = 0
                    for k in range(q + 1):
                        if x[r0 + k] != 0.0:
                            count += 1
                    w = 1.0 / count if count > 0 else 0.0
                    for k in range(q + 1):
                        x[r0 + k] = w if x[r0 + k] != 0.0 else 0.0
                else:
                    found = -1
                    if a1 == SELECT_NEAREST:  # largest k
                        for k in range(q, -1, -1):
                            if x[r0 + k] != 0.0:
                                found = k
                                break
                    else:  # SELECT_FIRST: smallest k
                        for k in range(q + 1):
                            if x[r0 + k] != 0.0:
                                found = k
                                break
                    for k in range(q + 1):
                        x[r0 + k] = 0.0
                    if found >= 0:
                        x[r0 + found] = 1.0
        elif op == OP_LEX:
            # lexicon read: binary search of the lower-text id among the sorted key ids
            # pool[a1 : a1+count]; the weight of key j is pool[j + count]
            top = stack[sp]
            count = code[pc, 2]
            src = kv if code[pc, 3] == VAR_K else qv
            off = code[pc, 4]
            tcol = text_ids[code[pc, 5]]
            # read as a factor of a product (``[upos(q) == "NOUN"] * noun_reads(k)``): where the
            # product so far is 0 the read cannot change it (a weight is finite), so it is not searched
            gated = sp > 0 and pc + 1 < stop and code[pc + 1, 0] == OP_MUL
            below = stack[sp - 1] if sp > 0 else stack[sp]
            for e in range(m):
                i = src[e] + off
                r = 0.0
                if gated and below[e] == 0.0:
                    i = -1
                if i >= 0 and i < n and count > 0:
                    v = np.float64(tcol[base + i])
                    lo = a1
                    hi = a1 + count
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if pool[mid] < v:
                            lo = mid + 1
                        else:
                            hi = mid
                    if lo < a1 + count and pool[lo] == v:
                        r = pool[lo + count]
                top[e] = r
            sp += 1
        else:  # unary numeric: NEG EXP LOG SQRT ABS NOT
            x = stack[sp - 1]
            if op == OP_NEG:
                for e in range(m):
                    x[e] = _fin(-x[e])
            elif op == OP_EXP:
                for e in range(m):
                    x[e] = _fin(np.exp(x[e]))
            elif op == OP_LOG:
                for e in range(m):
                    x[e] = _fin(np.log(x[e]))
            elif op == OP_SQRT:
                for e in range(m):
                    x[e] = _fin(np.sqrt(x[e]))
            elif op == OP_ABS:
                for e in range(m):
                    x[e] = _fin(abs(x[e]))
            else:  # OP_NOT
                for e in range(m):
                    x[e] = 1.0 if x[e] == 0.0 else 0.0
    for e in range(m):
        out[e] = stack[0, e]


@njit(**_FLAGS)
def combine_row_block(q0, q1, m, values, weights_idx, weights, lo, hi, fallback, total, out):
    """One program on rows q0..q1-1: out[:m] = normalise(Σ_j weights[j]·values[idx[j]]).

    ``fallback`` is the combination code (fallback + FORM_STRIDE·form); an entry
    with a NaN weight is a mask (keys where its value is 0 are not admissible;
    ``out`` holds the admissible flags until the rows are normalised)."""
    for e in range(m):
        total[e] = 0.0
    masked = False
    for j in range(lo, hi):
        w = weights[j]
        if np.isnan(w):
            masked = True
            continue
        if w == 0.0:
            continue
        v = values[weights_idx[j]]
        if w == 1.0:
            for e in range(m):
                total[e] = _fin(total[e] + v[e])
        else:
            for e in range(m):
                total[e] = _fin(total[e] + _fin(w * v[e]))
    form = fallback // FORM_STRIDE
    fb = fallback % FORM_STRIDE
    if masked:
        for e in range(m):
            out[e] = 1.0
        for j in range(lo, hi):
            if np.isnan(weights[j]):
                v = values[weights_idx[j]]
                for e in range(m):
                    if v[e] == 0.0:
                        out[e] = 0.0
    if form == FORM_SOFTMAX:
        softmax_rows(q0, q1, total, masked, fb, out)
    else:
        if masked:
            for e in range(m):
                if out[e] == 0.0:
                    total[e] = 0.0
        normalise(q0, q1, total, fb, out)


@njit(**_FLAGS)
def fallback_row(r0, q, fallback, out):
    """The fallback's mass on row q (entries out[r0 .. r0+q])."""
    for k in range(q + 1):
        out[r0 + k] = 0.0
    if fallback == FALLBACK_FIRST:
        out[r0] = 1.0
    elif fallback == FALLBACK_SELF:
        out[r0 + q] = 1.0
    elif fallback == FALLBACK_PREVIOUS:
        out[r0 + max(q - 1, 0)] = 1.0
    else:  # FALLBACK_UNIFORM
        for k in range(q + 1):
            out[r0 + k] = 1.0 / (q + 1)


@njit(**_FLAGS)
def softmax_rows(q0, q1, total, masked, fallback, out):
    """Softmax of the logits (clamped to ±LOGIT_BOUND) over each row's admissible
    keys (interpreter step 5): exp(s − max) / Σ exp(s − max); with ``masked``, ``out`` holds 1.0 for the
    admissible entries on entry; a row with no admissible key takes the fallback."""
    first_entry = row_start(q0)
    for q in range(q0, q1):
        r0 = row_start(q) - first_entry
        top = -np.inf
        found = False
        for k in range(q + 1):
            if (not masked) or out[r0 + k] != 0.0:
                x = min(max(total[r0 + k], -LOGIT_BOUND), LOGIT_BOUND)
                total[r0 + k] = x
                if not found or x > top:
                    top = x
                found = True
        if not found:
            fallback_row(r0, q, fallback, out)
            continue
        s = 0.0
        for k in range(q + 1):
            if (not masked) or out[r0 + k] != 0.0:
                x = np.exp(total[r0 + k] - top)
                out[r0 + k] = x
                s += x
            else:
                out[r0 + k] = 0.0
        for k in range(q + 1):
            out[r0 + k] = out[r0 + k] / s


@njit(**_FLAGS)
def normalise(q0, q1, total, fallback, out):
    """Clip below 0, divide each row by its sum, fallback on empty rows (interpreter step 4-5)."""
    first_entry = row_start(q0)
    for q in range(q0, q1):
        r0 = row_start(q) - first_entry
        s = 0.0
        for k in range(q + 1):
            v = total[r0 + k]
            if v > 0.0:
                s += v
        if s > 0.0 and np.isfinite(s):
            for k in range(q + 1):
                v = total[r0 + k]
                out[r0 + k] = v / s if v > 0.0 else 0.0
        else:
            fallback_row(r0, q, fallback, out)


# ---------------------------------------------------------------- batch kernels


@njit(**_FLAGS)
def eval_terms_tile(code, term_ptr, pool, base, n, q0, q1, m, qv, kv,
                    text_ids, numbers, flags, same_keys, charset, stack, values):
    for t in range(len(term_ptr) - 1):
        run_term(code, term_ptr[t], term_ptr[t + 1], pool, base, n, q0, q1, m, qv, kv,
                 text_ids, numbers, flags, same_keys, charset, stack, values[t])


@njit(parallel=True, **_FLAGS)
def evaluate_terms_kernel(code, term_ptr, pool, depth, lengths, offsets, tri_offsets,
                          text_ids, numbers, flags, same_keys, charset, out):
    """out[t, entries of s] = term t on sequence s, for every term and sequence."""
    n_terms = len(term_ptr) - 1
    for s in prange(len(lengths)):
        n = lengths[s]
        if n == 0:
            continue
        size = tile_size(n)
        qv = np.empty(size, dtype=np.int64)
        kv = np.empty(size, dtype=np.int64)
        stack = np.empty((depth, size))
        values = np.empty((n_terms, size))
        q0 = 0
        while q0 < n:
            q1 = next_tile(n, q0)
            m = fill_positions(q0, q1, qv, kv)
            eval_terms_tile(code, term_ptr, pool, offsets[s], n, q0, q1, m, qv, kv,
                            text_ids, numbers, flags, same_keys, charset, stack, values)
            lo = tri_offsets[s] + row_start(q0)
            for t in range(n_terms):
                for e in range(m):
                    out[t, lo + e] = values[t, e]
            q0 = q1


@njit(parallel=True, **_FLAGS)
def combine_kernel(term_values, prog_ptr, term_idx, coef, fallback, lengths, tri_offsets, out):
    """out[p] = normalised weighted sum of term values (programs as ProgramTable arrays)."""
    n_programs = len(prog_ptr) - 1
    n_terms = term_values.shape[0]
    for s in prange(len(lengths)):
        n = lengths[s]
        if n == 0:
            continue
        size = tile_size(n)
        values = np.empty((n_terms, size))
        total = np.empty(size)
        ahat = np.empty(size)
        q0 = 0
        while q0 < n:
            q1 = next_tile(n, q0)
            lo = tri_offsets[s] + row_start(q0)
            m = row_start(q1) - row_start(q0)
            for t in range(n_terms):
                for e in range(m):
                    values[t, e] = term_values[t, lo + e]
            for p in range(n_programs):
                combine_row_block(q0, q1, m, values, term_idx, coef, prog_ptr[p], prog_ptr[p + 1], fallback[p],
                                  total, ahat)
                for e in range(m):
                    out[p, lo + e] = ahat[e]
            q0 = q1


@njit(parallel=True, **_FLAGS)
def evaluate_programs_kernel(code, term_ptr, pool, depth, prog_ptr, term_idx, coef, fallback,
                             lengths, offsets, tri_offsets, text_ids, numbers, flags, same_keys, charset, out):
    """out[p, entries] = program p's attention over every causal entry (terms shared)."""
    n_terms = len(term_ptr) - 1
    n_programs = len(prog_ptr) - 1
    for s in prange(len(lengths)):
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
        q0 = 0
        while q0 < n:
            q1 = next_tile(n, q0)
            m = fill_positions(q0, q1, qv, kv)
            eval_terms_tile(code, term_ptr, pool, offsets[s], n, q0, q1, m, qv, kv,
                            text_ids, numbers, flags, same_keys, charset, stack, values)
            lo = tri_offsets[s] + row_start(q0)
            for p in range(n_programs):
                combine_row_block(q0, q1, m, values, term_idx, coef, prog_ptr[p], prog_ptr[p + 1], fallback[p],
                                  total, ahat)
                for e in range(m):
                    out[p, lo + e] = ahat[e]
            q0 = q1


@njit(**_FLAGS)
def accumulate_min(q0, q1, ahat, block, a_lo, acc_k1, acc_k0):
    """Rows q0..q1-1 (Â over their entries, A rows from ``block[a_lo ..]``):
    acc_k0[h] += Σ_q min(A[q,0,h], Â[q,0]); acc_k1[h] += Σ_{k≥1} min(A[q,k,h], Â[q,k]).
    Returns Σ_q Â[q,0]."""
    n_heads = block.shape[1]
    e = 0
    z = 0.0
    for q in range(q0, q1):
        w = ahat[e]
        z += w
        if w != 0.0:
            row = block[a_lo + e]
            for h in range(n_heads):
                a = np.float64(row[h])
                acc_k0[h] += a if a < w else w
        e += 1
        for k in range(1, q + 1):
            w = ahat[e]
            if w != 0.0:
                row = block[a_lo + e]
                for h in range(n_heads):
                    a = np.float64(row[h])
                    acc_k1[h] += a if a < w else w
            e += 1
    return z


@njit(**_FLAGS)
def attention_k1(n, block, a_lo, out):
    """out[h] = Σ over entries with k ≥ 1 of A (one sequence starting at block row a_lo)."""
    n_heads = block.shape[1]
    e = a_lo
    for q in range(n):
        e += 1
        for k in range(1, q + 1):
            row = block[e]
            for h in range(n_heads):
                out[h] += row[h]
            e += 1


@njit(parallel=True, **_FLAGS)
def score_kernel(seqs, a_offsets, block,
                 code, term_ptr, pool, depth, prog_ptr, term_idx, coef, fallback,
                 lengths, offsets, text_ids, numbers, flags, same_keys, charset,
                 min_k1, min_k0, hat_k0, attn_k1):
    """Fused evaluate + soft-IoU numerators for sequences ``seqs`` of the batch.

    ``block`` holds the heads' attention of those sequences in causal layout
    (rows ``a_offsets[i] ..``; heads minor).  Per sequence i, program p, head h:
    ``min_k1[i,p,h]`` / ``min_k0[i,p,h]``: Σ min(A, Â) over keys k ≥ 1 / k = 0;
    ``hat_k0[i,p]``: Σ_q Â[q,0]; ``attn_k1[i,h]``: Σ_{k≥1} A.  Only Â's non-zero
    entries touch the attention rows; the loop over heads is contiguous.
    """
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
                combine_row_block(q0, q1, m, values, term_idx, coef, prog_ptr[p], prog_ptr[p + 1], fallback[p],
                                  total, ahat)
                hat_k0[i, p] += accumulate_min(q0, q1, ahat, block, a_lo, min_k1[i, p], min_k0[i, p])
            q0 = q1


@njit(parallel=True, **_FLAGS)
def score_values_kernel(seqs, a_offsets, block, ahat_all, tri_offsets, lengths, min_k1, min_k0, hat_k0, attn_k1):
    """Soft-IoU numerators for precomputed program outputs ``ahat_all[p, entries]``
    (e.g. from `combine` with fitted weights); same outputs as `score_kernel`."""
    n_programs = ahat_all.shape[0]
    for i in prange(len(seqs)):
        s = seqs[i]
        n = lengths[s]
        if n == 0:
            continue
        m = tri_size(n)
        lo = tri_offsets[s]
        attention_k1(n, block, a_offsets[i], attn_k1[i])
        for p in range(n_programs):
            hat_k0[i, p] = accumulate_min(0, n, ahat_all[p, lo:lo + m], block, a_offsets[i], min_k1[i, p], min_k0[i, p])
