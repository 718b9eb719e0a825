"""The Numba kernels equal the reference interpreter on every program and batch."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attndsl.language import interpreter, ir
from attndsl.extraction.batch import TokenBatch, causal_entries, causal_layout
from attndsl.extraction.features import table_from_words
from attndsl.kernels import (
    combine,
    dense_blocks,
    evaluate_programs,
    evaluate_sparse,
    evaluate_terms,
)

from .strategies_ir import programs, token_batches

TOL = 1e-6


def _assert_matches_interpreter(progs, tables):
    batch = TokenBatch.from_tables(tables)
    out = evaluate_programs(progs, batch)
    for p, program in enumerate(progs):
        blocks = dense_blocks(out[p], batch)
        for s, table in enumerate(tables):
            expected = interpreter.evaluate(program, table)
            assert blocks[s].shape == expected.shape
            if expected.size:
                diff = np.abs(blocks[s] - expected).max()
                assert diff <= TOL, f"program {p} sequence {s}: max abs diff {diff}"


@settings(max_examples=500)
@given(st.data())
def test_kernels_equal_interpreter(data):
    syntax = data.draw(st.booleans(), "syntax")
    tables = data.draw(token_batches(syntax=syntax), "tables")
    progs = data.draw(st.lists(programs(syntax=False) if not syntax else programs(), min_size=1, max_size=3), "programs")
    _assert_matches_interpreter(progs, tables)


@settings(max_examples=60)
@given(programs(syntax=False), st.integers(1, 3))
def test_batches_of_one_and_length_one(program, n):
    _assert_matches_interpreter([program], [token_tables_fixed(n)])
    _assert_matches_interpreter([program], [token_tables_fixed(1)])


def token_tables_fixed(n: int):
    return table_from_words(["The", "cat", "."][:n])


@settings(max_examples=8)
@given(st.lists(programs(syntax=False, max_terms=2), min_size=1, max_size=2), st.integers(513, 560))
def test_long_sequences(progs, n):
    words = (["Lily", "saw", "a", "dog", ".", "The", "dog", "ran", "!", "\n", "7"] * 60)[:n]
    _assert_matches_interpreter(progs, [table_from_words(words), table_from_words(words[:5])])


def test_empty_rows_take_each_fallback():
    never = ir.Term(1.0, (ir.Indicator(ir.BoolConst(False)),))
    tables = [table_from_words("a b c d".split()), table_from_words(["x"])]
    progs = [ir.Program(f"p_{f}", (never,), f) for f in ir.FALLBACKS]
    _assert_matches_interpreter(progs, tables)
    out = evaluate_programs(progs, TokenBatch.from_tables(tables))
    first, self_, previous, uniform = (dense_blocks(out[i], TokenBatch.from_tables(tables))[0] for i in range(4))
    assert np.array_equal(first[:, 0], np.ones(4))
    assert np.array_equal(np.diag(self_), np.ones(4))
    assert previous[0, 0] == 1 and previous[3, 2] == 1
    assert np.allclose(uniform[3], 0.25)


def test_nonfinite_values_become_zero():
    # exp(800) overflows, 1/d divides by zero on the diagonal, log(0) is -inf
    terms = (
        ir.Term(1.0, (ir.Func("exp", (ir.Const(800.0),)),)),
        ir.Term(1.0, (ir.Arith("/", ir.Const(1.0), ir.Dist()),)),
        ir.Term(1.0, (ir.Func("log", (ir.Arith("*", ir.Const(0.0), ir.Dist()),)),)),
    )
    program = ir.Program("weird", terms, "self")
    _assert_matches_interpreter([program], [table_from_words("a b c d e".split())])


def test_literals_absent_from_batch_match_nothing_but_themselves():
    table = table_from_words("the cat sat".split())
    absent = ir.StrEquals(ir.StrFeature("tok", ir.At("k")), ir.StrLit("zebra"))
    itself = ir.StrEquals(ir.StrLit("zebra"), ir.StrLit("zebra"))
    empty = ir.StrEquals(ir.StrFeature("tok", ir.At("k", -1)), ir.StrLit(""))  # padding == ""
    progs = [ir.Program(f"p{i}", (ir.Term(1.0, (ir.Indicator(c),)),), "self") for i, c in enumerate((absent, itself, empty))]
    _assert_matches_interpreter(progs, [table])
    batch = TokenBatch.from_tables([table])
    out = evaluate_programs(progs, batch)
    assert np.allclose(dense_blocks(out[0], batch)[0], np.eye(3))  # nothing matched: fallback self
    assert np.allclose(dense_blocks(out[2], batch)[0][:, 0], 1.0)  # only k = 0 reads the padding


def test_syntax_programs_need_a_syntax_batch():
    program = ir.Program("s", (ir.Term(1.0, (ir.NumFeature("head", ir.At("q")),)),), "first", True)
    with pytest.raises(ValueError, match="syntax"):
        evaluate_programs([program], TokenBatch.from_tables([table_from_words(["a"])]))


def test_causal_layout_indexes_entries():
    lengths = [3, 0, 1, 4]
    tri = causal_layout(lengths)
    assert tri.tolist() == [0, 6, 6, 7, 17]
    seq, q, k = causal_entries(lengths)
    for e in range(int(tri[-1])):
        s, qq, kk = int(seq[e]), int(q[e]), int(k[e])
        assert kk <= qq and tri[s] + qq * (qq + 1) // 2 + kk == e


def test_term_level_api_combines_like_programs():
    tables = [table_from_words("Lily saw a dog . The dog ran .".split()), table_from_words(["Hi", "!"])]
    batch = TokenBatch.from_tables(tables)
    t_prev = ir.Term(1.0, (ir.Indicator(ir.NumCompare("==", ir.Position("k"), ir.Arith("-", ir.Position("q"), ir.Const(1.0)))),))
    t_dup = ir.Term(1.0, (ir.Select("nearest", ir.AndB(ir.Same("same_tok", ir.At("q"), ir.At("k")),
                                                        ir.NumCompare("<", ir.Position("k"), ir.Position("q")))),))
    values = evaluate_terms([t_prev, t_dup], batch)
    assert values.values.shape == (2, batch.n_entries)
    mixed = combine([0.25, 2.0], values, "uniform")
    program = ir.Program("mixed", (ir.Term(0.25, t_prev.factors), ir.Term(2.0, t_dup.factors)), "uniform")
    expected = evaluate_programs([program], batch)[0]
    assert np.abs(mixed - expected).max() <= 1e-12
    many = combine(np.array([[1.0, 0.0], [0.0, 1.0]]), values, ["first", "self"])
    assert many.shape == (2, batch.n_entries)
    with pytest.raises(ValueError):
        combine([1.0], values)


def test_sparse_rows_hold_the_same_matrices():
    tables = [table_from_words("Lily saw a dog . The dog ran .".split()), table_from_words(["Hi"])]
    batch = TokenBatch.from_tables(tables)
    program = ir.Program("d", (ir.Term(1.0, (ir.Func("exp", (ir.Negate(ir.Dist()),)),)),
                               ir.Term(1.0, (ir.Select("first", ir.BoolFeature("punct", ir.At("k"))),))), "first")
    (rows,) = evaluate_sparse([program], batch, dtype=np.float32)
    assert rows.row_ptr.shape == (batch.n_tokens + 1,)
    assert rows.weights.dtype == np.float32
    for s, table in enumerate(tables):
        assert np.allclose(rows.dense(s), interpreter.evaluate(program, table), atol=1e-6)
