"""Front-end fuzzing: mutated programs through parser, validator, printer, emitter and kernels.

``python -m benchmarks fuzz --inputs 100000`` runs the mutation fuzzer of
`tests.fuzzing` (seeds: the standard library, library-shaped programs,
syntax programs; mutations: byte flips, odd bytes, splices, deep nesting and
long chains around the parser's limits, huge numbers, Unicode oddities,
CR / LF mixes) and prints inputs per second, the slowest input and every
failure class (anything but an `AttnError`, a round trip through the
canonical printer or emitted Python that changes the result, or an input
slower than 2 s).  Targets: 0 failures, 0 inputs over 2 s.

``--quick``: 500 inputs; default: 20,000.  ``ATTNDSL_FUZZ_JOBS=N`` splits
the inputs over N processes (worker w uses seed + w).  The row's
``attndsl_s`` is the slowest input's time (the smaller of its wall-clock and
CPU time, so a busy shared machine does not count) and ``baseline_s`` the
2 s budget, so ``ratio`` ≥ 1 means every input met it.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from functools import reduce

from .common import row


def _progress(worker: int, count: int):
    def show(report):
        print(f"[fuzz {worker}] {report.inputs}/{count} inputs, {report.rate:.0f}/s, failures {report.counts['failure']}, "
              f"slowest {report.slowest_s:.3f} s", file=sys.stderr, flush=True)
    return show


def _work(args):
    worker, count, seed = args
    from tests.fuzzing import fuzz

    return fuzz(count, seed=seed, progress=_progress(worker, count), every=max(count // 20, 500))


def run(quick: bool, inputs: int | None = None, seed: int = 0) -> list[dict]:
    from tests.fuzzing import SLOW_S

    count = inputs or (500 if quick else 20_000)
    jobs = max(1, int(os.environ.get("ATTNDSL_FUZZ_JOBS", "1")))
    shares = [(w, count // jobs + (1 if w < count % jobs else 0), seed + w) for w in range(jobs)]
    if jobs == 1:
        reports = [_work(shares[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            reports = pool.map(_work, shares)
    report = reduce(lambda a, b: a.merge(b), reports)
    print(report.summary(), file=sys.stderr, flush=True)
    return [row(
        "fuzz: mutated programs, whole front end (slowest input)",
        f"{SLOW_S:.0f} s per input budget",
        SLOW_S,
        report.slowest_s,
        report.inputs,
        inputs_per_s=round(report.rate, 1),
        accepted=report.counts["accepted"],
        rejected=report.counts["rejected"],
        failures=report.counts["failure"],
        over_2s=report.over_slow,
        slowest_wall_s=report.slowest_wall_s,
        failure_classes=dict(report.failure_counts),
    )]
