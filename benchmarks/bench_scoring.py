"""Scoring throughput: fused kernels vs a straightforward NumPy soft-IoU scorer.

Heads are synthetic (random causal row-stochastic attention, peaked like real
heads, 30 layers × 9 heads = 270 as in SmolLM2-135M) over TinyStories
sequences cut to 64 tokens; programs are the standard library plus fresh
generated ones.  The NumPy baseline is given the programs' outputs for free
(evaluated by the kernels, not timed) and computes Σ min over all heads of a
sequence at once with broadcasting; the kernels' time includes encoding and
evaluating the programs.

Full run target: 1,000 fresh programs × 270 heads × 200 sequences ≤ 60 s,
compile (encoding) included.
"""
from __future__ import annotations

import time

import numpy as np

from attndsl.extraction.batch import TokenBatch, causal_layout
from attndsl.synthesis.scoring import PackedAttention, score

from .common import generate_programs, row, sample_tables, stdlib_programs

N_LAYERS, N_HEADS = 30, 9


def synthetic_heads(lengths: np.ndarray, n_layers: int, n_heads: int, seed: int = 0) -> PackedAttention:
    """Random causal, row-stochastic attention for every head, in causal layout."""
    rng = np.random.default_rng(seed)
    tri = causal_layout(lengths)
    entries = rng.random((int(tri[-1]), n_layers * n_heads), dtype=np.float32)
    entries **= 6  # peaked rows, like real heads
    row_sizes = np.concatenate([np.arange(1, n + 1) for n in lengths])
    starts = np.concatenate([[0], np.cumsum(row_sizes)[:-1]])
    sums = np.add.reduceat(entries, starts, axis=0)
    entries /= np.repeat(sums, row_sizes, axis=0)
    return PackedAttention(lengths, entries, n_layers, n_heads)


def numpy_scorer(values: np.ndarray, source: PackedAttention, batch: TokenBatch) -> np.ndarray:
    """Straightforward NumPy: per program and sequence, Σ min over all heads → IoU [P, L*H]."""
    P = values.shape[0]
    out = np.zeros((P, source.n_layers * source.n_heads))
    for s in range(len(batch)):
        n = int(batch.lengths[s])
        lo, hi = batch.tri_offsets[s], batch.tri_offsets[s + 1]
        A = source.entries[lo:hi]  # [m, heads]
        for p in range(P):
            smin = np.minimum(A, values[p, lo:hi, None]).sum(axis=0)
            out[p] += smin / (2 * n - smin)
    return out / len(batch)


def run(quick: bool) -> list[dict]:
    from attndsl.kernels import evaluate_programs, warmup

    warmup()
    n_seqs, n_programs = (60, 150) if quick else (200, 1000)
    corpus = sample_tables(n_seqs, 64)
    batch = TokenBatch.from_tables(corpus.tables)
    source = synthetic_heads(batch.lengths, N_LAYERS, N_HEADS)
    heads = N_LAYERS * N_HEADS
    library = stdlib_programs()
    fresh = generate_programs(n_programs - len(library), seed=7, prefix="s")
    programs = library + fresh
    work = len(programs) * heads * batch.n_tokens
    results = []

    # target: all programs, fresh (never encoded before), compile included
    start = time.perf_counter()
    result = score(programs, source, batch)
    kernel_s = time.perf_counter() - start
    assert result.iou.shape == (len(programs), N_LAYERS, N_HEADS)

    # baseline on a subset of programs (it is slow), scaled per unit of work
    subset = programs[: (12 if quick else 40)]
    values = evaluate_programs(subset, batch)
    start = time.perf_counter()
    baseline = numpy_scorer(values, source, batch)
    numpy_s = time.perf_counter() - start
    check = score(subset, source, batch)
    max_diff = float(np.abs(check.iou.reshape(len(subset), -1) - baseline).max())
    start = time.perf_counter()
    score(subset, source, batch)
    kernel_subset_s = time.perf_counter() - start
    sub_work = len(subset) * heads * batch.n_tokens
    results.append(row(
        "scoring: programs x heads x tokens", "NumPy scorer (outputs given)", numpy_s, kernel_subset_s, sub_work,
        programs=len(subset), heads=heads, sequences=len(batch), tokens=batch.n_tokens,
        attndsl_per_s=sub_work / kernel_subset_s, baseline_per_s=sub_work / numpy_s, max_abs_diff=max_diff,
        tokenizer=corpus.tokenizer,
    ))
    results.append(row(
        f"scoring: {len(programs)} fresh programs x {heads} heads x {len(batch)} seqs (target <= 60 s)",
        "NumPy scorer, time scaled from the subset", numpy_s * work / sub_work, kernel_s, work,
        programs=len(programs), heads=heads, sequences=len(batch), tokens=batch.n_tokens,
        attndsl_per_s=work / kernel_s, target_s=60.0, meets_target=bool(kernel_s <= 60.0), baseline_estimated=True,
        tokenizer=corpus.tokenizer,
    ))
    return results
