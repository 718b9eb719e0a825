"""Enumerative search: screening speed against the generic scorer, time and IoU per head.

Heads: synthetic heads on TinyStories tokens whose attention is a known
mixture program times ±30 % noise (previous token + sink, recent punctuation +
sink, induction + sink, local decay + sink, sentence start, current token), so
the rows need no model and the IoU a search should reach is known to be high.
With ``ATTNDSL_SEARCH_RUN=RUN`` (a run directory made by ``attndsl extract``)
the full mode also searches real heads of that run (every 30th head).

Rows:

- ``search_screen_step``: one greedy step — every pool term mixed into the
  sink at every fraction — scored by the search's screening kernel versus the
  same candidates built as programs and scored by `attndsl.synthesis.scoring.score`
  (the kernels' fused evaluator; all heads at once, as the library does).
  ``max_abs_diff`` checks both give the same IoU.
- ``search_heads``: the whole search of the synthetic heads (pool evaluation
  included) versus scoring the four trivial patterns; extra keys give the mean
  IoU of both and the seconds per head.
"""
from __future__ import annotations

import os
import time

import numpy as np

from attndsl.synthesis import search
from attndsl.extraction.batch import TokenBatch
from attndsl.language.interpreter import evaluate
from attndsl.synthesis.scoring import DenseAttention, score
from attndsl.language.validate import compile_program, compile_source

from .common import row, sample_tables

HEADS = (
    "0.7 * [k == q - 1] + 0.3 * [k == 0]",
    "0.6 * nearest(punct(k) and k < q) + 0.4 * [k == 0]",
    "0.7 * nearest(tok(k - 1) == tok(q) and k < q) + 0.3 * [k == 0]",
    "0.5 * [k > 0] * exp(-0.5 * d) + 0.5 * [k == 0]",
    "1 * first(same_sent(q, k))",
    "0.8 * [k == q] + 0.2 * [k == 0]",
)
TRIVIAL = "program sink { 1 * [k == 0] }\nprogram uniform { 1 }\nprogram self { 1 * [k == q] }\nprogram prev { fallback self\n 1 * [k == q - 1] }"


def _synthetic_source(tables, seed: int = 0) -> DenseAttention:
    rng = np.random.default_rng(seed)
    programs = [compile_program(f"program h{i} {{ {body} }}") for i, body in enumerate(HEADS)]
    mats = []
    for table in tables:
        heads = []
        for program in programs:
            m = evaluate(program, table) * rng.uniform(0.7, 1.3, size=(len(table), len(table))) + 1e-3
            m = np.tril(m)
            heads.append(m / m.sum(axis=1, keepdims=True))
        mats.append(np.stack(heads)[None].astype(np.float32))
    return DenseAttention(mats)


def _screen_row(tables, source, settings) -> dict:
    data = search.prepare(tables, np.arange(len(tables)), search.term_pool(tables, settings.n_words))
    column = source.causal_block(range(len(tables)))[:, 0]
    fit = search._HeadFit(data, column, settings)
    sink = search._sink_index(data)
    fit.comps, fit.weights = [search.Component(sink)], [1.0]
    fit._rebuild()
    candidates = [search.Component(t) for t in range(len(data.specs))]
    fractions = np.asarray(settings.fractions)
    cs = np.tile(fractions / (1 - fractions), (len(candidates), 1))
    fit.screen(candidates, cs)  # compile / warm
    start = time.perf_counter()
    screened = fit.screen(candidates, cs)
    ours = time.perf_counter() - start
    # the same candidates as programs: sink + c * term (weights on the unscaled term)
    sources = []
    for t, comp in enumerate(candidates):
        spec = data.specs[comp.spec]
        for j, c in enumerate(cs[t]):
            weight = float(c * data.scales[comp.spec])
            term = repr(weight) if not spec.factors else f"{weight!r} * {spec.factors}"
            sources.append(f"program c{t}_{j} {{ 1 * [k == 0] + {term} }}")
    programs = compile_source("\n".join(sources))
    batch = TokenBatch.from_tables(tables)
    score(programs[:8], source, batch)  # warm
    start = time.perf_counter()
    generic = score(programs, source, batch).iou[:, 0, 0].reshape(screened.shape)
    theirs = time.perf_counter() - start
    return row("search_screen_step", "attndsl.synthesis.scoring.score of the candidate programs", theirs, ours,
               len(programs), max_abs_diff=float(np.abs(generic - screened).max()), n_sequences=len(tables))


def _heads_row(tables, source, settings, name: str, heads) -> dict:
    seqs = list(range(len(tables)))
    start = time.perf_counter()
    results = search.search_heads(source, tables, seqs, heads, settings, progress=False)
    ours = time.perf_counter() - start
    batch = TokenBatch.from_tables(tables)
    found = score([compile_program(r.source) for r in results], source, batch).iou
    start = time.perf_counter()
    trivial = score(compile_source(TRIVIAL), source, batch).iou
    theirs = time.perf_counter() - start
    search_iou = float(np.mean([found[i, layer, head] for i, (layer, head) in enumerate(heads)]))
    trivial_iou = float(np.mean([trivial[:, layer, head].max() for layer, head in heads]))
    return row(name, "score the 4 trivial patterns (sink/uniform/self/previous)", theirs, ours, len(heads),
               mean_iou_search=search_iou, mean_iou_trivial=trivial_iou, seconds_per_head=ours / len(heads),
               n_sequences=len(tables), mean_terms=float(np.mean([len(compile_program(r.source).terms)
                                                                  for r in results])))


def run(quick: bool) -> list[dict]:
    n_sequences = 32 if quick else 160
    settings = search.SearchSettings(screen_sequences=24 if quick else 96, max_terms=4 if quick else 6)
    corpus = sample_tables(n_sequences, 64)
    tables = corpus.tables
    source = _synthetic_source(tables)
    heads = [(0, h) for h in range(3 if quick else len(HEADS))]
    rows = [_screen_row(tables[: settings.screen_sequences], source_subset(source, settings.screen_sequences),
                        settings),
            _heads_row(tables, source, settings, "search_heads", heads)]
    run_dir = os.environ.get("ATTNDSL_SEARCH_RUN")
    if run_dir and not quick:
        from attndsl.extraction.store import open_store

        store = open_store(run_dir)
        synth = store.synthesis_indices
        real = [divmod(i, store.n_heads) for i in range(0, store.n_layers * store.n_heads, 30)]
        start = time.perf_counter()
        results = search.search_heads(store, store.tables(synth), synth, real, search.SearchSettings(), progress=False)
        seconds = time.perf_counter() - start
        rows.append(row("search_real_heads", "none (time only)", seconds, seconds, len(real),
                        mean_fit_iou=float(np.mean([r.fit_iou for r in results])), n_sequences=len(synth)))
    for r in rows:
        r["tokens"] = corpus.tokenizer
    return rows


def source_subset(source: DenseAttention, n: int) -> DenseAttention:
    return DenseAttention(source.matrices[:n])
