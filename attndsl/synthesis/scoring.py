"""Soft-IoU scoring of programs against recorded attention heads.

For one sequence with head attention A and program attention Â (both causal,
row-stochastic, n×n)::

    IoU(A, Â) = Σ min(A, Â) / Σ max(A, Â),   Σ max = 2n − Σ min

so only Σ min is needed, and only over Â's non-zero entries: for each entry
where Â = w > 0 the kernel adds ``min(A[entry, :], w)`` for all heads at once
(heads are the minor axis of the attention block, so that loop vectorises).
A head's score is the mean over sequences.

The key-0-ignoring variant (the attention sink cannot carry the score)::

    IoU₀ = Σ_{k≥1} min / Σ_{k≥1} max,  Σ_{k≥1} max = ΣA_{k≥1} + ΣÂ_{k≥1} − Σ_{k≥1} min

per sequence, over all rows.  A sequence whose denominator is 0 (both sides
put all their mass on key 0, e.g. every length-1 sequence) scores 1: both
sides are empty there, and with non-negative values that is the only way the
denominator can vanish.

Attention comes from an `AttentionSource` (dense arrays now via
`DenseAttention`; the attention store implements the same protocol).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from attndsl.language import ir
from attndsl.extraction.batch import TokenBatch
from attndsl.extraction.layout import causal_layout, tri_size, tril


@runtime_checkable
class AttentionSource(Protocol):
    """Recorded attention of every head on a set of sequences.

    ``causal_block(seq_indices)`` returns float32[entries, n_layers*n_heads]:
    the causal entries of the given sequences, in the given order, laid out as
    `attndsl.extraction.batch.causal_layout` of their lengths; heads are flattened as
    ``layer * n_heads + head`` and are the minor (contiguous) axis.
    """

    n_layers: int
    n_heads: int

    @property
    def lengths(self) -> np.ndarray: ...

    def causal_block(self, seq_indices: Sequence[int]) -> np.ndarray: ...


class DenseAttention:
    """An `AttentionSource` over in-memory matrices: one [L, H, n, n] array per sequence."""

    def __init__(self, matrices: Sequence[np.ndarray]):
        self.matrices = [np.asarray(m) for m in matrices]
        if not self.matrices:
            raise ValueError("DenseAttention needs at least one sequence")
        shapes = {m.shape[:2] for m in self.matrices}
        if len(shapes) != 1 or any(m.ndim != 4 or m.shape[2] != m.shape[3] for m in self.matrices):
            raise ValueError("every matrix must be [layers, heads, n, n] with the same layers and heads")
        self.n_layers, self.n_heads = shapes.pop()
        self._lengths = np.array([m.shape[2] for m in self.matrices], dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return self._lengths

    def causal_block(self, seq_indices: Sequence[int]) -> np.ndarray:
        parts = []
        for s in seq_indices:
            m = self.matrices[int(s)]
            n = m.shape[2]
            q, k = tril(n)
            parts.append(m[:, :, q, k].reshape(self.n_layers * self.n_heads, -1).T)
        if not parts:
            return np.zeros((0, self.n_layers * self.n_heads), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


class PackedAttention:
    """An `AttentionSource` over one float32[entries, L*H] array already in causal layout."""

    def __init__(self, lengths: Sequence[int], entries: np.ndarray, n_layers: int, n_heads: int):
        self._lengths = np.asarray(lengths, dtype=np.int64)
        self.tri_offsets = causal_layout(self._lengths)
        if entries.shape != (self.tri_offsets[-1], n_layers * n_heads):
            raise ValueError(f"entries must be [{self.tri_offsets[-1]}, {n_layers * n_heads}], got {entries.shape}")
        self.entries = entries
        self.n_layers, self.n_heads = n_layers, n_heads

    @property
    def lengths(self) -> np.ndarray:
        return self._lengths

    def causal_block(self, seq_indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(seq_indices, dtype=np.int64)
        if len(idx) and np.all(np.diff(idx) == 1):  # contiguous run: a view, no copy
            return self.entries[self.tri_offsets[idx[0]]:self.tri_offsets[idx[-1] + 1]]
        parts = [self.entries[self.tri_offsets[s]:self.tri_offsets[s + 1]] for s in idx]
        return np.concatenate(parts) if parts else self.entries[:0]


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """Soft IoU of P programs against every head.

    ``iou``: float64[P, layers, heads], mean over the S sequences;
    ``per_sequence``: float64[P, layers, heads, S] when requested;
    ``iou_ignore_sink`` / ``per_sequence_ignore_sink``: the key-0-ignoring
    variant when requested.  ``n_sequences`` / ``n_tokens`` say what the
    numbers rest on.
    """

    names: tuple[str, ...]
    iou: np.ndarray
    n_sequences: int
    n_tokens: int
    per_sequence: np.ndarray | None = None
    iou_ignore_sink: np.ndarray | None = None
    per_sequence_ignore_sink: np.ndarray | None = None


def _chunks(sizes: np.ndarray, budget: int) -> list[slice]:
    """Consecutive index ranges whose summed sizes stay under budget (at least one item each)."""
    out, start, acc = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and acc + size > budget:
            out.append(slice(start, i))
            start, acc = i, 0
        acc += int(size)
    if start < len(sizes):
        out.append(slice(start, len(sizes)))
    return out


def _check_inputs(source: AttentionSource, batch: TokenBatch, seq_indices) -> np.ndarray:
    seqs = np.arange(len(batch), dtype=np.int64) if seq_indices is None else np.asarray(seq_indices, dtype=np.int64)
    if len(seqs) != len(batch):
        raise ValueError(f"the batch holds {len(batch)} sequences but {len(seqs)} sequence indices were given")
    if len(seqs) == 0:
        raise ValueError("no sequences to score")
    lengths = np.asarray(source.lengths)
    if seqs.min() < 0 or seqs.max() >= len(lengths):
        raise ValueError(f"sequence index out of range (the source has {len(lengths)} sequences)")
    if not np.array_equal(lengths[seqs], batch.lengths):
        bad = int(np.flatnonzero(lengths[seqs] != batch.lengths)[0])
        raise ValueError(f"sequence {int(seqs[bad])}: the attention source has {int(lengths[seqs[bad]])} tokens "
                         f"but the token batch has {int(batch.lengths[bad])}")
    if (batch.lengths == 0).any():
        raise ValueError("cannot score empty sequences")
    return seqs


def _chunk_iou(lengths, min_k1, min_k0, hat_k0, attn_k1, ignore_sink):
    """Per-sequence IoU (and key-0-ignoring IoU) from the kernel's sums.

    Inputs are [S, P, H] / [S, P] / [S, H]; outputs [S, P, H]."""
    n = lengths.astype(np.float64)[:, None, None]
    # every row of A and of Â sums to 1, so each matrix totals n
    iou = soft_iou_from_sums(min_k1 + min_k0, n, n)
    iou0 = None
    if ignore_sink:
        hat_k1 = n[:, :, 0] - hat_k0  # Σ Â over k ≥ 1 (rows of Â sum to 1)
        iou0 = soft_iou_from_sums(min_k1, attn_k1[:, None, :], hat_k1[:, :, None], empty=1.0)
    return iou, iou0


class _Collector:
    """Gathers per-chunk IoUs into means (and per-sequence arrays on request)."""

    def __init__(self, n_programs, n_layers, n_heads, n_sequences, per_sequence, ignore_sink):
        self.shape = (n_programs, n_layers, n_heads)
        self.n_sequences = n_sequences
        self.per_sequence, self.ignore_sink = per_sequence, ignore_sink
        self.sum = np.zeros((n_programs, n_layers * n_heads))
        self.sum0 = np.zeros_like(self.sum) if ignore_sink else None
        self.seq = np.zeros((n_programs, n_layers * n_heads, n_sequences)) if per_sequence else None
        self.seq0 = np.zeros_like(self.seq) if (per_sequence and ignore_sink) else None

    def add(self, seq_slice, prog_slice, iou, iou0):
        self.sum[prog_slice] += iou.sum(axis=0)
        if self.seq is not None:
            self.seq[prog_slice, :, seq_slice] = np.moveaxis(iou, 0, -1)
        if iou0 is not None:
            self.sum0[prog_slice] += iou0.sum(axis=0)
            if self.seq0 is not None:
                self.seq0[prog_slice, :, seq_slice] = np.moveaxis(iou0, 0, -1)

    def result(self, names, batch) -> ScoreResult:
        shape, S = self.shape, self.n_sequences
        return ScoreResult(
            names=tuple(names),
            iou=(self.sum / S).reshape(shape),
            n_sequences=S,
            n_tokens=batch.n_tokens,
            per_sequence=self.seq.reshape(shape + (S,)) if self.seq is not None else None,
            iou_ignore_sink=(self.sum0 / S).reshape(shape) if self.sum0 is not None else None,
            per_sequence_ignore_sink=self.seq0.reshape(shape + (S,)) if self.seq0 is not None else None,
        )


def score(
    programs: Sequence[ir.Program],
    source: AttentionSource,
    batch: TokenBatch,
    seq_indices: Sequence[int] | None = None,
    per_sequence: bool = False,
    ignore_sink: bool = False,
    program_chunk: int = 64,
    entry_budget: int = 1 << 19,
    progress: bool = False,
) -> ScoreResult:
    """Soft IoU of every program against every head of ``source``.

    ``batch`` holds the token tables of the scored sequences; batch sequence
    i is source sequence ``seq_indices[i]`` (default: ``range(len(batch))``),
    and their lengths must agree.  Programs are evaluated in chunks of
    ``program_chunk`` (terms shared within a chunk are evaluated once) and
    sequences in chunks of about ``entry_budget`` causal entries, fused with
    the IoU sums so that program outputs never leave the cache.
    """
    from attndsl.kernels import evaluator
    from attndsl.kernels.encoding import encode_terms, program_table

    seqs = _check_inputs(source, batch, seq_indices)
    programs = list(programs)
    n_heads = source.n_layers * source.n_heads
    P = len(programs)
    collector = _Collector(P, source.n_layers, source.n_heads, len(batch), per_sequence, ignore_sink)
    entries = tri_size(batch.lengths)
    seq_chunks = _chunks(entries, entry_budget)
    prog_chunks = [slice(a, min(a + program_chunk, P)) for a in range(0, P, program_chunk)]
    encoded = []
    for pc in prog_chunks:
        table = program_table(programs[pc], batch)
        encoded.append((table, encode_terms(table.terms, batch)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seq_chunks) * len(prog_chunks), desc="scoring", unit="chunk")
    for sc in seq_chunks:
        block = np.ascontiguousarray(source.causal_block(seqs[sc]), dtype=np.float32)
        local = np.arange(sc.start, sc.stop, dtype=np.int64)
        a_offsets = causal_layout(batch.lengths[sc])
        for pc, (table, enc) in zip(prog_chunks, encoded):
            k1 = np.zeros((len(local), pc.stop - pc.start, n_heads))
            k0 = np.zeros_like(k1)
            h0 = np.zeros((len(local), pc.stop - pc.start))
            a1 = np.zeros((len(local), n_heads))
            evaluator.score_kernel(local, a_offsets, block, enc.code, enc.term_ptr, enc.pool, enc.depth,
                                   table.prog_ptr, table.term_idx, table.coef, table.fallback,
                                   batch.lengths, batch.offsets, batch.text_ids, batch.numbers, batch.flags,
                                   batch.same_keys, batch.charset, k1, k0, h0, a1)
            collector.add(sc, pc, *_chunk_iou(batch.lengths[sc], k1, k0, h0, a1, ignore_sink))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return collector.result([p.name for p in programs], batch)


@dataclass(frozen=True, eq=False)
class PairScores:
    """Soft IoU of chosen (program, head) pairs (`score_pairs`), laid out like `ScoreResult`:
    ``iou`` [P, layers, heads] (and the optional arrays) hold NaN where a pair was not asked for."""

    iou: np.ndarray
    n_sequences: int
    n_tokens: int
    per_sequence: np.ndarray | None = None
    iou_ignore_sink: np.ndarray | None = None


def score_pairs(
    programs: Sequence[ir.Program],
    heads: Sequence[Sequence[int]],
    source: AttentionSource,
    batch: TokenBatch,
    seq_indices: Sequence[int] | None = None,
    per_sequence: bool = False,
    ignore_sink: bool = False,
    program_chunk: int = 64,
    entry_budget: int = 1 << 19,
) -> PairScores:
    """`score` for program p on the flat head columns ``heads[p]`` only (``layer * n_heads + head``).

    Each asked-for number is bit-identical to `score`'s (same kernels' order of
    additions, same chunks of sequences, the same sequential sums over
    sequences), at pairs × entries work instead of programs × heads × entries:
    what the library's choice and held-out steps need (`attndsl.kernels.pairs`)."""
    from attndsl.kernels.encoding import encode_terms, program_table
    from attndsl.kernels.pairs import score_pairs_kernel

    seqs = _check_inputs(source, batch, seq_indices)
    programs = list(programs)
    if len(heads) != len(programs):
        raise ValueError("one list of head columns per program is required")
    n_heads = source.n_layers * source.n_heads
    P, S = len(programs), len(batch)
    shape = (P, source.n_layers, source.n_heads)
    pair_prog = np.concatenate([np.full(len(h), p, dtype=np.int64) for p, h in enumerate(heads)]) \
        if P else np.zeros(0, np.int64)
    pair_head = np.concatenate([np.asarray(sorted(set(int(x) for x in h)), dtype=np.int64) for h in heads]) \
        if P else np.zeros(0, np.int64)
    if len(pair_head) != len(pair_prog):
        raise ValueError("head columns of a program must be distinct")
    if len(pair_head) and (pair_head.min() < 0 or pair_head.max() >= n_heads):
        raise ValueError(f"head column out of range (the source has {n_heads} heads)")
    sums = np.zeros(len(pair_head))
    sums0 = np.zeros(len(pair_head)) if ignore_sink else None
    seq_out = np.full((len(pair_head), S), np.nan) if per_sequence else None
    entries = tri_size(batch.lengths)
    seq_chunks = _chunks(entries, entry_budget)
    prog_chunks = [slice(a, min(a + program_chunk, P)) for a in range(0, P, program_chunk)]
    encoded = []
    for pc in prog_chunks:
        j0, j1 = np.searchsorted(pair_prog, [pc.start, pc.stop])
        if j0 == j1:
            continue
        table = program_table(programs[pc], batch)
        counts = np.bincount(pair_prog[j0:j1] - pc.start, minlength=pc.stop - pc.start)
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        encoded.append((pc, j0, j1, ptr, table, encode_terms(table.terms, batch)))
    for sc in seq_chunks:
        block = np.ascontiguousarray(source.causal_block(seqs[sc]), dtype=np.float32)
        local = np.arange(sc.start, sc.stop, dtype=np.int64)
        a_offsets = causal_layout(batch.lengths[sc])
        n = batch.lengths[sc].astype(np.float64)[:, None]
        for pc, j0, j1, ptr, table, enc in encoded:
            k1 = np.zeros((len(local), j1 - j0))
            k0 = np.zeros_like(k1)
            h0 = np.zeros((len(local), pc.stop - pc.start))
            a1 = np.zeros((len(local), n_heads))
            score_pairs_kernel(local, a_offsets, block, enc.code, enc.term_ptr, enc.pool, enc.depth,
                               table.prog_ptr, table.term_idx, table.coef, table.fallback,
                               batch.lengths, batch.offsets, batch.text_ids, batch.numbers, batch.flags,
                               batch.same_keys, batch.charset, ptr, pair_head[j0:j1], k1, k0, h0, a1)
            # the same elementwise formulas as `_chunk_iou`, per pair
            iou = soft_iou_from_sums(k1 + k0, n, n)
            _add_sequential(sums, j0, iou)
            if seq_out is not None:
                seq_out[j0:j1, sc] = iou.T
            if sums0 is not None:
                hat_k1 = n - h0[:, pair_prog[j0:j1] - pc.start]
                iou0 = soft_iou_from_sums(k1, a1[:, pair_head[j0:j1]], hat_k1, empty=1.0)
                _add_sequential(sums0, j0, iou0)

    def spread(values: np.ndarray, fill_shape: tuple) -> np.ndarray:
        out = np.full(fill_shape, np.nan)
        flat = out.reshape(P, n_heads, *fill_shape[3:])
        flat[pair_prog, pair_head] = values
        return out

    return PairScores(
        iou=spread(sums / S, shape),
        n_sequences=S,
        n_tokens=batch.n_tokens,
        per_sequence=spread(seq_out, shape + (S,)) if seq_out is not None else None,
        iou_ignore_sink=spread(sums0 / S, shape) if sums0 is not None else None,
    )


def _add_sequential(total: np.ndarray, j0: int, values: np.ndarray) -> None:
    """total[j0 + j] += Σ_i values[i, j], summed over i in order from 0, as ``values.sum(axis=0)``
    does for `score`'s [sequences, programs, heads] chunks (NumPy may sum a single column pairwise)."""
    chunk = np.zeros(values.shape[1])
    for row in values:
        chunk += row
    total[j0:j0 + values.shape[1]] += chunk


def score_values(
    values: np.ndarray,
    source: AttentionSource,
    batch: TokenBatch,
    seq_indices: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    per_sequence: bool = False,
    ignore_sink: bool = False,
) -> ScoreResult:
    """Like `score` for program outputs already evaluated over the batch's causal
    entries (float64[P, entries], e.g. `attndsl.kernels.combine` with fitted weights)."""
    from attndsl.kernels import evaluator

    seqs = _check_inputs(source, batch, seq_indices)
    values = np.ascontiguousarray(np.atleast_2d(values), dtype=np.float64)
    if values.shape[1] != batch.n_entries:
        raise ValueError(f"values have {values.shape[1]} entries, the batch has {batch.n_entries}")
    P, S, n_heads = values.shape[0], len(batch), source.n_layers * source.n_heads
    names = tuple(names) if names is not None else tuple(f"program_{i}" for i in range(P))
    block = np.ascontiguousarray(source.causal_block(seqs), dtype=np.float32)
    min_k1 = np.zeros((S, P, n_heads))
    min_k0 = np.zeros_like(min_k1)
    hat_k0 = np.zeros((S, P))
    attn_k1 = np.zeros((S, n_heads))
    evaluator.score_values_kernel(np.arange(S, dtype=np.int64), batch.tri_offsets, block, values, batch.tri_offsets,
                                  batch.lengths, min_k1, min_k0, hat_k0, attn_k1)
    collector = _Collector(P, source.n_layers, source.n_heads, S, per_sequence, ignore_sink)
    collector.add(slice(0, S), slice(0, P), *_chunk_iou(batch.lengths, min_k1, min_k0, hat_k0, attn_k1, ignore_sink))
    return collector.result(names, batch)


# ------------------------------------------------------------------ the soft IoU


def soft_iou(A: np.ndarray, B: np.ndarray, ignore_sink: bool = False) -> float:
    """The definition of the score: Σ min(A, B) / Σ max(A, B) in float64 (any shapes).

    ``ignore_sink``: over keys k ≥ 1 only (the last axis from 1), and 1 when both
    are empty there; without it an empty pair gives NaN (0/0), as it always has.
    The kernels compute the same quantity from sums (`soft_iou_from_sums`).
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if ignore_sink:
        A, B = A[..., 1:], B[..., 1:]
    denom = np.maximum(A, B).sum()
    if ignore_sink and not denom > 0:
        return 1.0
    return float(np.minimum(A, B).sum() / denom)


def soft_iou_from_sums(total_min, total_a, total_b, empty: float | None = None):
    """`soft_iou` from Σ min(A, B) and the totals Σ A, Σ B (Σ max = Σ A + Σ B − Σ min),
    elementwise (what the fused kernels accumulate).  ``empty``: the value where
    Σ max is not positive (None: the plain quotient)."""
    denom = total_a + total_b - total_min
    if empty is None:
        return total_min / denom
    return np.where(denom > 0, total_min / np.where(denom > 0, denom, 1.0), empty)


def iou_dense(A: np.ndarray, B: np.ndarray) -> float:
    """`soft_iou` over every entry (any shapes)."""
    return soft_iou(A, B)


def iou_dense_ignore_sink(A: np.ndarray, B: np.ndarray) -> float:
    """`soft_iou` over keys k ≥ 1 of one n×n pair (1 if both are empty there)."""
    return soft_iou(A, B, ignore_sink=True)


# ------------------------------------------------------------------ length buckets

#: upper ends (tokens, BOS included) of the length buckets that held-out IoU is reported in:
#: 1–8, 9–16, 17–32, … 513–1024, then one open bucket.  The one definition every table uses.
LENGTH_BUCKET_EDGES = (8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class BucketRow:
    """One length bucket: its range, what it holds, and the mean of each scored column."""

    label: str  # "1-8", "9-16", …, "1025+"
    low: int
    high: int | None  # None: open-ended
    sequences: int
    tokens: int
    means: dict  # column name → mean over rows (heads) and the bucket's sequences


def length_bucket(n: int) -> tuple[int, int | None]:
    """The ``(low, high)`` bucket of a sequence of ``n`` tokens (`LENGTH_BUCKET_EDGES`)."""
    low = 1
    for high in LENGTH_BUCKET_EDGES:
        if n <= high:
            return low, high
        low = high + 1
    return low, None


def length_buckets(lengths: Sequence[int], columns: dict) -> list[BucketRow]:
    """Mean per-sequence scores by length bucket, for the buckets that hold sequences.

    ``columns``: name → float[rows, S] (e.g. one row per head, one column per
    sequence of ``lengths``); each mean is over all rows and the bucket's
    sequences, i.e. the mean over heads of each head's mean in that bucket."""
    lengths = np.asarray(lengths, dtype=np.int64)
    keys = [length_bucket(int(n)) for n in lengths]
    out = []
    for low, high in sorted(set(keys)):
        where = np.array([k == (low, high) for k in keys])
        means = {name: float(np.asarray(values, dtype=np.float64)[:, where].mean()) for name, values in columns.items()}
        label = f"{low}-{high}" if high is not None else f"{low}+"
        out.append(BucketRow(label, low, high, int(where.sum()), int(lengths[where].sum()), means))
    return out
