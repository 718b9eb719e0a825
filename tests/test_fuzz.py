"""CI-sized fuzzing of the front end (the long run is ``python -m benchmarks fuzz``).

Only `AttnError` may come out of hostile input; every accepted program must
round-trip through the canonical printer and through emitted Python (which
compiles and equals the interpreter), and no input may take 2 s.
"""
from __future__ import annotations

import random

import numpy as np

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attndsl.language.printer import format_module

from . import fuzzing
from .strategies import modules


@pytest.fixture(scope="module")
def checker():
    return fuzzing.Checker()


def test_ci_sized_mutation_run_has_no_failures():
    report = fuzzing.fuzz(250, seed=12)
    assert report.counts["failure"] == 0, report.summary()
    assert report.over_slow == 0, report.summary()
    # the run reaches both outcomes, and every mutation ran
    assert report.counts["accepted"] >= 25 and report.counts["rejected"] >= 100, report.summary()
    assert set(fuzzing.MUTATIONS) <= set(report.mutations)


@pytest.mark.parametrize("name", sorted(fuzzing.MUTATIONS))
def test_every_mutation_changes_its_input(name):
    rng = random.Random(5)
    seeds = fuzzing.seed_sources()
    changed = sum(fuzzing.MUTATIONS[name](rng, seeds[1], seeds) != seeds[1] for _ in range(20))
    assert changed >= 10


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(module=modules(valid=True), rng=st.randoms(use_true_random=False))
def test_generated_programs_are_accepted_and_their_mutants_only_rejected(checker, module, rng):
    source = format_module(module)
    outcome = checker.run(source.encode())
    assert outcome.status == "accepted", outcome
    seeds = [source.encode()]
    mutant, names = fuzzing.mutate(rng, seeds[0], seeds)
    outcome = checker.run(mutant)
    assert outcome.status != "failure", (names, mutant[:300], outcome)


def test_checker_reports_exceptions_and_broken_round_trips(checker, monkeypatch):
    """The harness itself can fail: a crash or a lossy printer is a failure, not a pass."""
    source = b"program p {\n    1 * [k == q - 1]\n}\n"
    assert checker.run(source).status == "accepted"

    def crash(*args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(fuzzing, "check", crash)
    outcome = checker.run(source)
    assert outcome.status == "failure" and outcome.failure.startswith("validate: RecursionError at test_fuzz.py:crash")
    monkeypatch.undo()
    monkeypatch.setattr(fuzzing, "format_module", lambda m: format_module(m).replace("q - 1", "q - 2"))
    outcome = checker.run(source)
    assert outcome.status == "failure" and outcome.failure == "round-trip: canonical: parse(print(m)) != m"


def _ir_depth(node) -> int:
    from attndsl.language import ir

    children = []
    for name in getattr(node, "__dataclass_fields__", {}):
        value = getattr(node, name)
        for item in value if isinstance(value, tuple) else (value,):
            if hasattr(item, "__dataclass_fields__") and not isinstance(item, ir.At):
                children.append(item)
    return 1 + max(map(_ir_depth, children), default=0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_ir_at_the_parsers_limits_runs_in_every_evaluator(checker, data):
    """Random IR (tests/strategies_ir) deepened to the parser's depth limit and
    repeated to its factor limit: emitted Python compiles and equals the
    interpreter, and so do the kernels."""
    from attndsl.language import ir
    from attndsl.language.emit import load_function
    from attndsl.language.interpreter import evaluate
    from attndsl.kernels import dense_blocks, evaluate_programs
    from attndsl.language.parser import MAX_DEPTH, MAX_FACTORS

    from . import strategies_ir

    program = data.draw(strategies_ir.programs(syntax=True, max_terms=2))
    term = program.terms[0]
    numbers = [f for f in term.factors if not isinstance(f, ir.Select)] or [ir.Const(1.0)]
    deep = numbers[0]
    while _ir_depth(deep) < MAX_DEPTH:
        deep = ir.Func(data.draw(st.sampled_from(["abs", "exp", "sqrt"])), (deep,))
    factors = (deep,) + tuple(term.factors) * MAX_FACTORS
    program = ir.Program(program.name, (ir.Term(term.weight, factors[:MAX_FACTORS]),) + program.terms[1:],
                         program.fallback, True)
    fn = load_function(program)
    values = evaluate_programs([program], checker.batch)
    for table, block in zip(checker.tables, dense_blocks(values[0], checker.batch)):
        expected = evaluate(program, table)
        np.testing.assert_allclose(fn(table.records()), expected, atol=1e-9, rtol=1e-9)
        np.testing.assert_allclose(block, expected, atol=1e-9, rtol=1e-9)
