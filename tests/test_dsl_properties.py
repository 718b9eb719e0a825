"""Property tests of the DSL front end and the reference interpreter."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from attndsl.language import ast
from attndsl.language.emit import load_function
from attndsl.language.interpreter import empty_rows, evaluate
from attndsl.language.parser import parse
from attndsl.language.printer import format_module
from attndsl.language.validate import check

from .strategies import modules, programs, token_tables


def lower(program: ast.Program):
    module = ast.Module((program,))
    lowered, problems = check(module)
    assert not problems, [d.render() for d in problems]
    return lowered[0]


@settings(max_examples=500)
@given(modules(valid=False))
def test_print_parse_round_trip(module):
    text = format_module(module)
    again = parse(text)
    assert again == module
    assert format_module(again) == text  # canonical form is a fixed point


@settings(max_examples=500)
@given(programs(valid=True))
def test_generated_programs_validate(program):
    lower(program)


@settings(max_examples=500)
@given(programs(valid=True), token_tables())
def test_interpreter_output_is_causal_row_stochastic_and_finite(program, table):
    program_ir = lower(program)
    matrix = evaluate(program_ir, table)
    n = len(table)
    assert matrix.shape == (n, n)
    assert np.all(np.isfinite(matrix))
    assert np.all(matrix >= 0)
    assert np.all(np.triu(matrix, 1) == 0), "attention to a later token"
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    fallback_rows = np.flatnonzero(empty_rows(program_ir, table))
    expected = {
        "first": lambda q: np.eye(n)[0],
        "self": lambda q: np.eye(n)[q],
        "previous": lambda q: np.eye(n)[max(q - 1, 0)],
        "uniform": lambda q: np.where(np.arange(n) <= q, 1.0 / (q + 1), 0.0),
    }[program_ir.fallback]
    for q in fallback_rows:
        np.testing.assert_array_equal(matrix[q], expected(q))


@settings(max_examples=500)
@given(programs(valid=True, max_terms=3), token_tables(max_size=14))
def test_emitted_python_equals_interpreter(program, table):
    program_ir = lower(program)
    function = load_function(program_ir)
    np.testing.assert_allclose(function(table.records()), evaluate(program_ir, table), rtol=0, atol=1e-9)


@settings(max_examples=100)
@given(programs(valid=True, max_terms=2))
def test_empty_sequence_gives_empty_matrix(program):
    from attndsl.extraction.features import table_from_spans

    table = table_from_spans("", [], []).with_syntax([], [], [])
    assert evaluate(lower(program), table).shape == (0, 0)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_attn_error(data):
    from attndsl.errors import AttnError

    text = data.decode("utf-8", errors="replace")
    try:
        parse(text)
    except AttnError as error:
        assert error.diagnostics and error.diagnostics[0].line >= 1


@settings(max_examples=300)
@given(modules(valid=True), st.data())
def test_truncated_programs_raise_only_attn_error(module, data):
    from attndsl.errors import AttnError

    text = format_module(module)
    cut = data.draw(st.integers(0, len(text)))
    try:
        parse(text[:cut])
    except AttnError as error:
        assert error.diagnostics[0].render().count(":") >= 3
