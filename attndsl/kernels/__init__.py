"""Numba kernels that evaluate attention programs over ragged token batches.

Strategy (why compiling a new program is cheap): programs are lowered to a
compact stack bytecode (`encoding`) and run by ONE precompiled, disk-cached
Numba evaluator (`evaluator`), so a fresh program costs microseconds of
encoding instead of seconds of JIT.  Work is done at *term* level: identical
`ir.Term`s (frozen, hashable) are evaluated once per batch and a program is a
weighted combination of term outputs — which also makes weight fitting cheap:

    values = evaluate_terms(terms, batch)          # TermValues, [T, entries]
    attn = combine(weights, values, "first")        # [entries], normalised

All values live on the batch's causal entries (``batch.tri_offsets``, see
`attndsl.extraction.batch`).  Results equal `attndsl.language.interpreter.evaluate` (float64;
same order of operations; non-finite → 0 after every operation), in both
combination forms (``combine linear`` and ``combine softmax``) and with masks.

Outputs: dense over entries (`evaluate_programs`), CSR rows per program
(`evaluate_sparse` / `to_csr`), or per-sequence n×n blocks (`dense_blocks`).

The enumerative search's objective kernels (soft-IoU sums of candidate
programs, compiled with fast-math: `objective` says why that is acceptable
there and not here) live beside these, in `attndsl.kernels.objective`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from attndsl.language import ir
from attndsl.extraction.batch import TokenBatch
from attndsl.extraction.layout import to_dense

from attndsl.kernels import evaluator
from attndsl.kernels.encoding import FALLBACK_CODES, FORM_CODES, EncodedTerms, ProgramTable, combination_code, encode_terms, program_table

__all__ = [
    "EncodedTerms",
    "ProgramTable",
    "SparseRows",
    "TermValues",
    "combine",
    "dense_blocks",
    "encode_terms",
    "evaluate_programs",
    "evaluate_sparse",
    "evaluate_term_rows",
    "evaluate_terms",
    "program_table",
    "to_csr",
    "warmup",
]


@dataclass(frozen=True, eq=False)
class TermValues:
    """Each term's value (weight included) on every causal entry of a batch."""

    terms: tuple[ir.Term, ...]
    values: np.ndarray  # float64[T, batch.n_entries]
    batch: TokenBatch


@dataclass(frozen=True, eq=False)
class SparseRows:
    """One program's attention over a batch as CSR rows.

    Row r is token r of the batch (sequence s owns rows ``offsets[s] ..
    offsets[s+1]-1``); ``keys`` are positions within the sequence.
    """

    name: str
    row_ptr: np.ndarray  # int64[N+1]
    keys: np.ndarray  # int32[nnz]
    weights: np.ndarray  # float32 or float64 [nnz]
    offsets: np.ndarray  # int64[S+1] token offsets of the batch

    def dense(self, s: int) -> np.ndarray:
        """Sequence s as an n×n matrix."""
        a, b = int(self.offsets[s]), int(self.offsets[s + 1])
        out = np.zeros((b - a, b - a), dtype=self.weights.dtype)
        for q in range(b - a):
            lo, hi = self.row_ptr[a + q], self.row_ptr[a + q + 1]
            out[q, self.keys[lo:hi]] = self.weights[lo:hi]
        return out


def _batch_args(batch: TokenBatch):
    return batch.text_ids, batch.numbers, batch.flags, batch.same_keys, batch.charset


def evaluate_terms(terms: Sequence[ir.Term], batch: TokenBatch) -> TermValues:
    """Evaluate each term (weight × factors, interpreter order) on every causal entry."""
    terms = tuple(terms)
    enc = encode_terms(terms, batch)
    out = np.zeros((len(terms), batch.n_entries), dtype=np.float64)
    if terms and batch.n_entries:
        evaluator.evaluate_terms_kernel(enc.code, enc.term_ptr, enc.pool, enc.depth, batch.lengths, batch.offsets,
                                        batch.tri_offsets, *_batch_args(batch), out)
    return TermValues(terms, out, batch)


def evaluate_term_rows(terms: Sequence[ir.Term], batch: TokenBatch, row_seq: np.ndarray,
                       row_q: np.ndarray) -> np.ndarray:
    """float64[T, Σ (row_q + 1)]: each term on the whole rows ``(row_seq[r], row_q[r])`` of the batch
    (keys 0..q, rows one after the other), bit-identical to those entries of `evaluate_terms`."""
    from attndsl.kernels.rows import evaluate_rows_kernel

    terms = tuple(terms)
    row_seq = np.ascontiguousarray(row_seq, dtype=np.int64)
    row_q = np.ascontiguousarray(row_q, dtype=np.int64)
    sizes = row_q + 1
    row_out = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else sizes
    out = np.zeros((len(terms), int(sizes.sum())), dtype=np.float64)
    if terms and len(row_q):
        enc = encode_terms(terms, batch)
        evaluate_rows_kernel(enc.code, enc.term_ptr, enc.pool, enc.depth, row_seq, row_q, row_out, batch.lengths,
                             batch.offsets, *_batch_args(batch), out)
    return out


def _per_program(value, n_programs: int, codes, what: str) -> list[str]:
    """One setting for every program, or one per program; each must be one of ``codes``."""
    values = [value] * n_programs if isinstance(value, str) else list(value)
    if len(values) != n_programs:
        raise ValueError(f"give one {what} or one per program")
    unknown = [v for v in values if v not in codes]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; expected one of {', '.join(codes)}")
    return values


def combine(weights, term_values: TermValues, fallback: str | Sequence[str] = "first",
            form: str | Sequence[str] = "linear") -> np.ndarray:
    """Programs as weighted sums of term outputs, combined in ``form`` (``linear``:
    clipped and row-normalised; ``softmax``: the sums are logits), with fallback.

    ``weights``: float[T] (one program → float64[entries]) or float[P, T]
    (→ float64[P, entries]); ``fallback``: one name or one per program.
    Terms are summed in index order; a weight of 0 skips the term, a weight
    of 1 adds the term's value unchanged (so a program's own terms with
    weight 1 reproduce the interpreter exactly).  Terms evaluated with unit
    weight and combined with fitted weights equal the program
    ``Σ w_i * factors_i`` up to float rounding (the interpreter multiplies the
    weight first; the two differ only where an intermediate product overflows).
    A NaN weight makes that term a mask: keys where its value is 0 get no mass
    (as a program's ``mask`` declarations do).  ``form``: one name or one per
    program.
    """
    w = np.asarray(weights, dtype=np.float64)
    single = w.ndim == 1
    w = np.atleast_2d(w)
    n_programs, n_terms = w.shape
    if n_terms != len(term_values.terms):
        raise ValueError(f"weights have {n_terms} columns but there are {len(term_values.terms)} terms")
    fallbacks = _per_program(fallback, n_programs, FALLBACK_CODES, "fallback")
    forms = _per_program(form, n_programs, FORM_CODES, "form")
    batch = term_values.batch
    prog_ptr = np.arange(0, (n_programs + 1) * n_terms, n_terms, dtype=np.int64)
    term_idx = np.tile(np.arange(n_terms, dtype=np.int64), n_programs)
    codes = np.array([combination_code(fo, f) for fo, f in zip(forms, fallbacks)], dtype=np.int64)
    out = np.zeros((n_programs, batch.n_entries), dtype=np.float64)
    if batch.n_entries:
        values = term_values.values if n_terms else np.zeros((0, batch.n_entries))
        evaluator.combine_kernel(values, prog_ptr, term_idx, np.ascontiguousarray(w.ravel()), codes,
                                 batch.lengths, batch.tri_offsets, out)
    return out[0] if single else out


def evaluate_programs(programs: Sequence[ir.Program], batch: TokenBatch) -> np.ndarray:
    """float64[P, entries]: every program's attention on every causal entry of the batch."""
    table = program_table(programs, batch)
    enc = encode_terms(table.terms, batch)
    out = np.zeros((len(programs), batch.n_entries), dtype=np.float64)
    if programs and batch.n_entries:
        evaluator.evaluate_programs_kernel(enc.code, enc.term_ptr, enc.pool, enc.depth, table.prog_ptr, table.term_idx,
                                           table.coef, table.fallback, batch.lengths, batch.offsets, batch.tri_offsets,
                                           *_batch_args(batch), out)
    return out


def to_csr(values: np.ndarray, batch: TokenBatch, name: str = "", dtype=np.float64) -> SparseRows:
    """CSR rows of one program's values over the batch's causal entries (zeros dropped)."""
    seq, q, k = batch.entry_index()
    nonzero = np.flatnonzero(values)
    rows = batch.offsets[seq[nonzero]] + q[nonzero]
    row_ptr = np.zeros(batch.n_tokens + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=batch.n_tokens), out=row_ptr[1:])
    return SparseRows(name, row_ptr, k[nonzero].astype(np.int32), values[nonzero].astype(dtype), batch.offsets)


def evaluate_sparse(programs: Sequence[ir.Program], batch: TokenBatch, dtype=np.float64) -> list[SparseRows]:
    """Each program's attention over the batch as CSR rows (`SparseRows`)."""
    dense = evaluate_programs(programs, batch)
    return [to_csr(dense[p], batch, program.name, dtype) for p, program in enumerate(programs)]


def dense_blocks(values: np.ndarray, batch: TokenBatch) -> list[np.ndarray]:
    """One program's values over causal entries → one n×n matrix per sequence."""
    return [to_dense(values[batch.tri_offsets[s]:], int(n)) for s, n in enumerate(batch.lengths)]


def warmup() -> float:
    """Compile (or load from Numba's disk cache) every kernel; returns seconds taken."""
    import time

    from attndsl.extraction.features import table_from_words

    start = time.perf_counter()
    batch = TokenBatch.from_tables([table_from_words(["a", "b"])])
    term = ir.Term(1.0, (ir.Indicator(ir.NumCompare("==", ir.Position("k"), ir.Const(0.0))),))
    program = ir.Program("warmup", (term,))
    values = evaluate_terms([term], batch)
    combine([1.0], values)
    evaluate_programs([program], batch)
    from attndsl.synthesis.scoring import DenseAttention, score

    source = DenseAttention([np.tril(np.ones((1, 1, 2, 2), dtype=np.float32)) / np.array([1, 2])[:, None]])
    score([program], source, batch)
    return time.perf_counter() - start
