"""Program evaluation: Numba kernels vs emitted Python vs the NumPy interpreter.

Programs: the standard library (syntax-free, linear ones) plus 30 generated
programs; the softmax rows use the library's softmax programs, the same 30
generated programs declared ``combine softmax`` (every third masked) and one
program reading a 64-word lexicon (`benchmarks.common.softmax_programs`).
Text: the TinyStories sample (see `benchmarks.common`).

1. kernels vs the same programs as emitted Python (`attndsl.language.emit`), called one
   sequence at a time on ``TokenTable.records()`` (what the paper did; the
   records are built once, not timed) — on a subset of sequences, because
   the emitted Python takes seconds per sequence;
2. kernels vs the reference interpreter, on a larger subset, and the kernels
   on the whole sample (the interpreter's whole-sample time is then scaled
   from its measured rate per causal entry and flagged ``baseline_estimated``);
3. compile cost: the first call in a fresh process (Numba loads the kernels
   from its disk cache; with an empty cache it JIT-compiles them — full run
   only) against the steady-state cost of a new program (encoding only);
4. memory: peak bytes allocated through Python/NumPy (tracemalloc) for each
   evaluator on the same subset (kernel scratch is per thread and tile-sized,
   not counted), and the process's peak RSS.

Kernel timings include lowering (encoding) and the dense output over causal
entries; both baselines produce dense n×n matrices.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


from attndsl.extraction.batch import TokenBatch

from .common import (generate_programs, max_rss_mb, peak_traced_mb, row, sample_tables, softmax_programs,
                     stdlib_programs, timed)

_FIRST_CALL = r"""
import time
start = time.perf_counter()
from attndsl import ir
from attndsl.extraction.batch import TokenBatch
from attndsl.extraction.features import table_from_words
from attndsl.kernels import evaluate_programs
batch = TokenBatch.from_tables([table_from_words("the cat sat on the mat".split())])
program = ir.Program("p", (ir.Term(1.0, (ir.Func("exp", (ir.Negate(ir.Dist()),)),)),))
imported = time.perf_counter()
evaluate_programs([program], batch)
print(imported - start, time.perf_counter() - imported)
"""


def _first_call(cache_dir: str | None) -> tuple[float, float]:
    """(import seconds, first-call seconds) of evaluate_programs in a fresh process."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True, check=True)
    imported, first = map(float, out.stdout.split())
    return imported, first


def _evaluate_in_chunks(programs, tables, max_entries: int = 1 << 22) -> None:
    """Kernels over many sequences, keeping the dense output bounded."""
    from attndsl.kernels import evaluate_programs

    chunk, entries = [], 0
    for table in tables:
        chunk.append(table)
        entries += len(table) * (len(table) + 1) // 2
        if entries * len(programs) >= max_entries:
            evaluate_programs(programs, TokenBatch.from_tables(chunk))
            chunk, entries = [], 0
    if chunk:
        evaluate_programs(programs, TokenBatch.from_tables(chunk))


def _against_baselines(programs, emit_tables, interp_tables, prefix: str, extra: dict) -> list[dict]:
    """Kernels vs emitted Python (per sequence) and vs the interpreter on the same programs."""
    from attndsl.language import emit, interpreter
    from attndsl.kernels import evaluate_programs

    P = len(programs)
    functions = [emit.load_function(p) for p in programs]
    records = [t.records() for t in emit_tables]

    def run_emitted():
        for f in functions:
            for r in records:
                f(r)

    emit_s, _ = timed(run_emitted)
    emit_batch = TokenBatch.from_tables(emit_tables)
    kernel_s, _ = timed(lambda: evaluate_programs(programs, emit_batch), repeat=3)
    rows = [row(f"{prefix}evaluate: kernels vs emitted Python", "emitted Python, per sequence", emit_s, kernel_s,
                P * sum(map(len, emit_tables)), sequences=len(emit_tables), tokens=sum(map(len, emit_tables)), **extra)]
    interp_s, _ = timed(lambda: [interpreter.evaluate(p, t) for p in programs for t in interp_tables])
    interp_batch = TokenBatch.from_tables(interp_tables)
    kernel_s, _ = timed(lambda: evaluate_programs(programs, interp_batch), repeat=3)
    rows.append(row(f"{prefix}evaluate: kernels vs interpreter", "NumPy interpreter", interp_s, kernel_s,
                    P * sum(map(len, interp_tables)), sequences=len(interp_tables),
                    tokens=sum(map(len, interp_tables)), **extra))
    return rows


def run(quick: bool) -> list[dict]:
    from attndsl.language import interpreter
    from attndsl.kernels import encode_terms, evaluate_programs, program_table, warmup

    warmup()
    n_seqs, max_tokens = (10, 128) if quick else (None, None)
    n_emit, n_interp = (2, 10) if quick else (4, 200)
    corpus = sample_tables(n_seqs or 100_000, max_tokens)
    tables = corpus.tables
    programs = stdlib_programs() + generate_programs(30, seed=0)
    P = len(programs)
    extra = dict(programs=P, tokenizer=corpus.tokenizer)
    results = []

    def entries(ts):
        return sum(len(t) * (len(t) + 1) // 2 for t in ts)

    # 1-2. emitted Python (one sequence at a time) and the interpreter, linear form
    results += _against_baselines(programs, tables[:n_emit], tables[:n_interp], "", extra)
    interp_tables = tables[:n_interp]
    interp_batch = TokenBatch.from_tables(interp_tables)
    interp_s = results[-1]["baseline_s"]
    # the same targets for the softmax form (masks and a lexicon included)
    soft = softmax_programs(30, tables, seed=0)
    results += _against_baselines(soft, tables[:n_emit], interp_tables, "softmax: ",
                                  dict(programs=len(soft), tokenizer=corpus.tokenizer))

    if not quick:  # the whole sample
        whole_s, _ = timed(lambda: _evaluate_in_chunks(programs, tables))
        scale = entries(tables) / entries(interp_tables)
        results.append(row("evaluate: kernels on the whole sample", "NumPy interpreter (scaled from subset)",
                           interp_s * scale, whole_s, P * sum(map(len, tables)), sequences=len(tables),
                           tokens=sum(map(len, tables)), baseline_estimated=True, **extra))

    # 3. compile cost
    fresh = generate_programs(200 if quick else 1000, seed=123, prefix="c")
    encode_s, _ = timed(lambda: encode_terms(program_table(fresh, interp_batch).terms, interp_batch))
    eval_s, _ = timed(lambda: evaluate_programs(fresh[:50], interp_batch))
    per_encode, per_eval = encode_s / len(fresh), eval_s / 50
    imported_s, warm_first = _first_call(None)
    cold = {}
    if not quick:
        with tempfile.TemporaryDirectory() as empty_cache:
            cold = dict(cold_jit_s=_first_call(empty_cache)[1])
    results.append(row("compile: new program (encode) vs first call in a fresh process",
                       "first call, Numba disk cache warm", warm_first, per_encode, len(fresh),
                       import_s=imported_s, **cold, **extra))
    results.append(row("compile: new program (encode) vs evaluating it", "evaluating it on the subset",
                       per_eval, per_encode, len(fresh), encode_share=per_encode / (per_encode + per_eval),
                       sequences=len(interp_tables), **extra))

    # 4. memory: peak allocated through Python/NumPy on the same sequences (timed apart from the runs above)
    mem_tables = interp_tables[:2]
    mem_batch = TokenBatch.from_tables(mem_tables)
    start = time.perf_counter()
    interp_peak = peak_traced_mb(lambda: [interpreter.evaluate(p, t) for p in programs for t in mem_tables])
    interp_mem_s = time.perf_counter() - start
    start = time.perf_counter()
    kernel_peak = peak_traced_mb(lambda: evaluate_programs(programs, mem_batch))
    kernel_mem_s = time.perf_counter() - start
    results.append(row("memory: peak traced MiB, kernels vs interpreter", "NumPy interpreter (traced run)",
                       interp_mem_s, kernel_mem_s, P * sum(map(len, mem_tables)), baseline_peak_mib=interp_peak,
                       attndsl_peak_mib=kernel_peak, memory_ratio=interp_peak / max(kernel_peak, 1e-9),
                       process_peak_rss_mib=max_rss_mb(), sequences=len(mem_tables), **extra))
    return results
