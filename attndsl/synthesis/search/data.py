"""Search data: every pool term evaluated once over a set of sequences, scaled and indexed.

`prepare` evaluates the distinct pool terms with the Numba evaluator
(`attndsl.kernels`), scales each so its mean row sum is 1 where it is active,
records the rows each term is active in (so screening only touches those) and
evaluates the shared gates; `SearchData` holds the result with the row layout
the objective kernels (`attndsl.kernels.objective`) read.  `Component` is one
term of a found program, an index into a `SearchData`'s terms and gates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from attndsl.language import ir
from attndsl.extraction import layout
from attndsl.extraction.batch import TokenBatch
from attndsl.extraction.features import TokenTable
from attndsl.kernels.objective import active_rows
from attndsl.synthesis.search.pool import GATES, TermSpec, compile_terms


@dataclass(eq=False)
class SearchData:
    """Term values, gates and row layout of one set of sequences (subsample or full)."""

    batch: TokenBatch
    seq_indices: np.ndarray  # source sequence of each batch sequence
    specs: list[TermSpec]  # pool terms kept (distinct, non-zero)
    terms: list[ir.Term]
    values: np.ndarray  # float32 [T, entries], scaled
    scales: np.ndarray  # float64 [T]: value = scale * term
    rows_ptr: np.ndarray  # CSR of the rows each term is active in
    rows: np.ndarray
    gates: np.ndarray  # uint8 [G, entries]
    gate_names: tuple[str, ...]
    row_start: np.ndarray
    row_len: np.ndarray
    row_seq: np.ndarray
    two_n: np.ndarray

    @property
    def n_entries(self) -> int:
        return self.batch.n_entries

    @property
    def spec_index(self) -> dict[str, int]:
        cached = self.__dict__.get("_spec_index")
        if cached is None:
            cached = self.__dict__["_spec_index"] = {spec.factors: i for i, spec in enumerate(self.specs)}
        return cached

    def entry_tokens(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(q, k, batch token index of q, batch token index of k) of every causal entry (cached)."""
        cached = self.__dict__.get("_entry_tokens")
        if cached is None:
            seq, q, k = self.batch.entry_index()
            base = self.batch.offsets[seq]
            cached = self.__dict__["_entry_tokens"] = (q, k, base + q, base + k)
        return cached


@dataclass(frozen=True)
class Component:
    """One term of a found program: a pool term, optionally gated."""

    spec: int  # index into SearchData.specs
    gate: int = -1  # index into SearchData.gate_names, -1 for none


def _row_layout(lengths: np.ndarray):
    lengths = np.asarray(lengths, dtype=np.int64)
    tri = layout.causal_layout(lengths)
    row_seq = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    q = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]) if len(lengths) else np.zeros(0, np.int64)
    row_start = tri[row_seq] + layout.row_start(q)
    return row_start, q + 1, row_seq


def _gate_masks(batch: TokenBatch, gate_names: Sequence[str]) -> np.ndarray:
    """uint8 [G, entries]: each gate evaluated as a term over the batch."""
    from attndsl.kernels import evaluate_terms

    specs = [TermSpec(f"[{g}]", "gate") for g in gate_names]
    values = evaluate_terms(compile_terms(specs), batch).values
    return (values != 0).astype(np.uint8)


def prepare(
    tables: Sequence[TokenTable],
    seq_indices: Sequence[int],
    specs: Sequence[TermSpec],
    gate_names: Sequence[str] = GATES,
    scales: np.ndarray | None = None,
) -> SearchData:
    """Evaluate every distinct term once over the sequences, scale, index active rows.

    Without ``scales`` terms that are zero everywhere or equal to an earlier
    term are dropped and each term's scale is computed here; with ``scales``
    (one per spec, e.g. from the screening subsample) every spec is kept and
    scaled by it, so weights mean the same on both sets.
    """
    from attndsl.kernels import evaluate_terms

    batch = TokenBatch.from_tables(tables)
    specs = list(specs)
    terms = compile_terms(specs)
    raw = evaluate_terms(terms, batch).values  # float64 [T, E]
    row_start, row_len, row_seq = _row_layout(batch.lengths)
    keep, seen = [], set()
    dedupe = scales is None
    for t in range(len(terms)):
        v = raw[t]
        if dedupe:
            if not np.any(v > 0):
                continue
            key = np.round(v, 9).tobytes()
            if key in seen:
                continue
            seen.add(key)
        keep.append(t)
    raw = raw[keep]
    specs = [specs[t] for t in keep]
    terms = [terms[t] for t in keep]
    # scale: mean row sum over the rows where the term is active becomes 1
    if scales is None:
        row_sums = np.add.reduceat(np.clip(raw, 0, None), row_start, axis=1) if raw.size else np.zeros((0, 0))
        scales = np.ones(len(terms))
        for t in range(len(terms)):
            active = row_sums[t] > 0
            if active.any():
                scales[t] = 1.0 / float(row_sums[t][active].mean())
    else:
        scales = np.asarray(scales, dtype=np.float64)
        if len(scales) != len(terms):
            raise ValueError("one scale per term spec is required")
    values = np.ascontiguousarray((raw * scales[:, None]).astype(np.float32))
    counts = np.zeros(len(terms), dtype=np.int64)
    mark = np.zeros((len(terms), len(row_start)), dtype=np.uint8)
    if len(terms):
        active_rows(values, row_start, row_len, counts, mark)
    rows_ptr = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum(counts, out=rows_ptr[1:])
    rows = np.flatnonzero(mark.ravel()) % max(len(row_start), 1)
    lengths = batch.lengths.astype(np.float64)
    return SearchData(
        batch=batch,
        seq_indices=np.asarray(seq_indices, dtype=np.int64),
        specs=specs,
        terms=terms,
        values=values,
        scales=scales,
        rows_ptr=rows_ptr,
        rows=rows.astype(np.int64),
        gates=_gate_masks(batch, gate_names) if gate_names else np.zeros((0, batch.n_entries), np.uint8),
        gate_names=tuple(gate_names),
        row_start=row_start,
        row_len=row_len,
        row_seq=row_seq,
        two_n=2.0 * lengths,
    )
