"""Front-end fuzzing: mutated programs through parser, validator, printer, emitter and kernels.

``python -m benchmarks fuzz --inputs 100000`` runs the mutation fuzzer of
`tests.fuzzing` (seeds: the standard library, library-shaped programs,
syntax programs; mutations: byte flips, odd bytes, splices, deep nesting and
long chains around the parser's limits, huge numbers, Unicode oddities,
CR / LF mixes) and prints inputs per second, the slowest input and every
failure class (anything but an `AttnError`, a round trip through the
canonical printer or emitted Python that changes the result, or an input
slower than 2 s).  Targets: 0 failures, 0 inputs over 2 s.

``--quick``: 2,000 inputs; default: 20,000.  The row's ``attndsl_s`` is the
slowest input's time and ``baseline_s`` the 2 s budget, so ``ratio`` ≥ 1
means every input met it.
"""
from __future__ import annotations

import sys

from .common import row


def run(quick: bool, inputs: int | None = None, seed: int = 0) -> list[dict]:
    from tests.fuzzing import SLOW_S, fuzz

    count = inputs or (2_000 if quick else 20_000)

    def progress(report):
        print(f"[fuzz] {report.inputs}/{count} inputs, {report.rate:.0f}/s, failures {report.counts['failure']}, "
              f"slowest {report.slowest_s:.3f} s", file=sys.stderr, flush=True)

    report = fuzz(count, seed=seed, progress=progress, every=max(count // 20, 500))
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
        failure_classes=dict(report.failure_counts),
    )]
