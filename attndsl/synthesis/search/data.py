"""Search data: every pool term evaluated once over a set of sequences, scaled and indexed.

`prepare` evaluates the distinct pool terms with the Numba evaluator
(`attndsl.kernels`), scales each so its mean row sum is 1 where it is active,
records the rows each term is active in (so screening only touches those) and
evaluates the shared gates; `SearchData` holds the result with the row layout
the objective kernels (`attndsl.kernels.objective`) read.  `Component` is one
term of a found program, an index into a `SearchData`'s terms and gates.

Long sequences: a set with more causal entries than ``max_entries`` keeps a
seeded random subset of whole rows (`row_subsample`: a row is one query and
all its keys k ≤ q, so row normalisation and every per-row selection stay
exact, and each sequence's IoU denominator counts only its kept rows).  Terms
and gates are then evaluated on the kept rows only, in one pass
(`attndsl.kernels.evaluate_term_rows`, bit-identical to those entries of a
full evaluation), and `attention_block` gathers the heads' attention chunk by
chunk of sequences, so neither the [terms, entries] values nor the [entries,
heads] block of the whole set is ever held.  Sets within the budget take the
unchanged path (the gates are evaluated in the same pass as the terms there
too, which changes no value).
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
    #: causal entries of ``batch`` the data holds (whole rows), None for all of them
    entries: np.ndarray | None = None

    @property
    def n_entries(self) -> int:
        return self.batch.n_entries if self.entries is None else len(self.entries)

    @property
    def n_seq(self) -> int:
        """Sequences the objective averages over (those with at least one kept row)."""
        return len(self.two_n)

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
            if self.entries is not None:
                seq, q, k = seq[self.entries], q[self.entries], k[self.entries]
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


@dataclass(frozen=True, eq=False)
class RowSubsample:
    """Whole rows kept of a set of sequences, and where their entries lie.

    ``rows``: sorted global row indices (row r of sequence s is query
    ``r - row_offsets[s]``); ``entries``: the causal entries of those rows in
    the set's causal layout, in order.
    """

    rows: np.ndarray
    entries: np.ndarray
    row_seq: np.ndarray  # set sequence of each kept row
    row_q: np.ndarray  # query position of each kept row


def row_subsample(lengths: Sequence[int], max_entries: int | None, seed: int) -> RowSubsample | None:
    """A seeded random subset of whole rows holding at most ``max_entries`` entries.

    None when the set already fits (every row is kept and nothing changes).
    Rows are drawn uniformly without replacement and kept in a random order
    while their entries fit; the kept rows are returned in layout order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_entries is None or int(layout.causal_layout(lengths)[-1]) <= max_entries:
        return None
    row_seq = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    row_q = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
    order = np.random.default_rng(seed).permutation(len(row_q))
    fits = np.cumsum(row_q[order] + 1) <= max_entries
    rows = np.sort(order[fits])
    tri = layout.causal_layout(lengths)
    starts = tri[row_seq[rows]] + layout.row_start(row_q[rows])
    sizes = row_q[rows] + 1
    entries = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)
    return RowSubsample(rows, entries, row_seq[rows], row_q[rows])


def _sequence_chunks(lengths: np.ndarray, chunk_entries: int) -> list[tuple[int, int]]:
    """Consecutive sequence ranges [a, b) of at most ``chunk_entries`` causal entries (at least one sequence)."""
    out, a, size = [], 0, 0
    for i, n in enumerate(lengths):
        t = int(n) * (int(n) + 1) // 2
        if i > a and size + t > chunk_entries:
            out.append((a, i))
            a, size = i, 0
        size += t
    if len(lengths):
        out.append((a, len(lengths)))
    return out


def _chunked(tables: Sequence[TokenTable], entries: np.ndarray, chunk_entries: int, per_chunk):
    """Call ``per_chunk(a, b, local)`` for each chunk of sequences; ``local`` = kept entries of [a, b)
    relative to the chunk's own causal layout.  Returns the list of results in order."""
    lengths = np.array([len(t) for t in tables], dtype=np.int64)
    tri = layout.causal_layout(lengths)
    out = []
    for a, b in _sequence_chunks(lengths, chunk_entries):
        lo, hi = np.searchsorted(entries, [tri[a], tri[b]])
        out.append(per_chunk(a, b, entries[lo:hi] - tri[a]))
    return out


def attention_block(source, data: "SearchData", tables: Sequence[TokenTable], chunk_entries: int = 1 << 18) -> np.ndarray:
    """float32 [entries, heads] of ``data``'s sequences (``tables``, from an `AttentionSource`):
    with a row subsample only its entries, gathered chunk by chunk of sequences."""
    seq_indices = data.seq_indices
    if data.entries is None:
        return np.asarray(source.causal_block(seq_indices), dtype=np.float32)

    def one(a, b, local):
        return np.asarray(source.causal_block(seq_indices[a:b])[local], dtype=np.float32)

    parts = _chunked(tables, data.entries, chunk_entries, one)
    return np.ascontiguousarray(np.concatenate(parts)) if parts else \
        np.zeros((0, source.n_layers * source.n_heads), np.float32)


def prepare(
    tables: Sequence[TokenTable],
    seq_indices: Sequence[int],
    specs: Sequence[TermSpec],
    gate_names: Sequence[str] = GATES,
    scales: np.ndarray | None = None,
    max_entries: int | None = None,
    seed: int = 0,
) -> SearchData:
    """Evaluate every distinct term once over the sequences, scale, index active rows.

    Without ``scales`` terms that are zero everywhere or equal to an earlier
    term are dropped and each term's scale is computed here; with ``scales``
    (one per spec, e.g. from the screening subsample) every spec is kept and
    scaled by it, so weights mean the same on both sets.  With more causal
    entries than ``max_entries`` only a seeded subset of whole rows is kept
    (`row_subsample`), and only those rows are evaluated (`attndsl.kernels.evaluate_term_rows`).
    """
    from attndsl.kernels import evaluate_term_rows, evaluate_terms

    batch = TokenBatch.from_tables(tables)
    specs = list(specs)
    terms = compile_terms(specs)
    sub = row_subsample(batch.lengths, max_entries, seed)
    # the shared gates are evaluated as terms, in the same pass as the pool terms
    gate_terms = compile_terms([TermSpec(f"[{g}]", "gate") for g in gate_names])
    if sub is None:
        evaluated = evaluate_terms(list(terms) + list(gate_terms), batch).values  # float64 [T + G, E]
        row_start, row_len, row_seq = _row_layout(batch.lengths)
    else:  # only the kept rows are evaluated
        evaluated = evaluate_term_rows(list(terms) + list(gate_terms), batch, sub.row_seq, sub.row_q)
        row_len = sub.row_q + 1
        row_start = np.concatenate([[0], np.cumsum(row_len)[:-1]]).astype(np.int64)
        # sequences without a kept row drop out of the objective's mean
        present, row_seq = np.unique(sub.row_seq, return_inverse=True)
        row_seq = row_seq.astype(np.int64)
    raw, gates = evaluated[:len(terms)], (evaluated[len(terms):] != 0).astype(np.uint8)
    del evaluated
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
    if sub is None:
        lengths = batch.lengths.astype(np.float64)
    else:  # Σ max = 2·(kept rows) − Σ min per sequence
        lengths = np.bincount(row_seq, minlength=len(present)).astype(np.float64)
    return SearchData(
        batch=batch,
        seq_indices=np.asarray(seq_indices, dtype=np.int64),
        specs=specs,
        terms=terms,
        values=values,
        scales=scales,
        rows_ptr=rows_ptr,
        rows=rows.astype(np.int64),
        gates=gates,
        gate_names=tuple(gate_names),
        row_start=row_start,
        row_len=row_len,
        row_seq=row_seq,
        two_n=2.0 * lengths,
        entries=None if sub is None else sub.entries,
    )
