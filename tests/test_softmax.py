"""Softmax programs, masks and lexicons: their meaning, and every evaluator agreeing on it.

The hand-made cases pin the semantics (interpreter docstring, DSL reference);
the properties check them on generated programs and prove interpreter ==
kernels == emitted Python == torch on softmax programs with masks and lexicons.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attndsl.language import interpreter, ir
from attndsl.extraction.batch import TokenBatch
from attndsl.language.emit import emit_python, load_function
from attndsl.extraction.features import table_from_words
from attndsl.kernels import combine, dense_blocks, evaluate_programs, evaluate_terms
from attndsl.language.parser import parse
from attndsl.language.printer import format_module
from attndsl.surrogates.torch_bridge import attention_tensors
from attndsl.language.validate import compile_program

from .strategies_ir import programs, token_batches, token_tables

WORDS = "The cat sat on the mat . A dog ran !".split()


def _all_evaluators(program: ir.Program, tables) -> list[np.ndarray]:
    """The interpreter's matrices, after checking kernels, emitted Python and torch equal them."""
    batch = TokenBatch.from_tables(tables)
    kernel = dense_blocks(evaluate_programs([program], batch)[0], batch)
    function = load_function(program)
    dense = attention_tensors(program, batch, dtype=torch.float64).numpy() if len(batch) else None
    expected = []
    for s, table in enumerate(tables):
        want = interpreter.evaluate(program, table)
        n = len(table)
        np.testing.assert_allclose(kernel[s], want, rtol=0, atol=1e-9)
        np.testing.assert_allclose(function(table.records()), want, rtol=0, atol=1e-9)
        np.testing.assert_allclose(dense[s, :n, :n], want, rtol=0, atol=1e-9)
        expected.append(want)
    return expected


# ---------------------------------------------------------------- meaning, by hand


def test_softmax_rows_are_exponentials_of_the_logits():
    program = compile_program("program p {\n combine softmax\n 1 * [k == q - 1] - 0.5 * d\n}")
    (a,) = _all_evaluators(program, [table_from_words(["a", "b", "c"])])
    logits = np.array([-1.0, 1.0 - 0.5, 0.0])  # row q = 2: k = 0, 1, 2
    np.testing.assert_allclose(a[2], np.exp(logits) / np.exp(logits).sum(), atol=1e-15)
    assert a[0, 0] == 1.0


def test_softmax_without_terms_that_fire_is_uniform_not_the_fallback():
    program = compile_program("program p {\n combine softmax\n fallback self\n 1 * [k == 99]\n}")
    (a,) = _all_evaluators(program, [table_from_words(["a", "b", "c", "d"])])
    np.testing.assert_allclose(a[3], [0.25] * 4)
    assert interpreter.empty_rows(program, table_from_words(["a", "b"])).tolist() == [False, False]


def test_a_mask_removes_keys_and_an_empty_row_takes_the_fallback():
    program = compile_program("program p {\n combine softmax\n fallback self\n mask [punct(k)]\n 1 * d\n}")
    table = table_from_words(["a", ".", "b", "!"])
    (a,) = _all_evaluators(program, [table])
    assert a[0].tolist() == [1.0, 0.0, 0.0, 0.0]  # no punctuation yet: fallback self
    assert a[1].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert a[2].tolist() == [0.0, 1.0, 0.0, 0.0]  # only "." admissible
    np.testing.assert_allclose(a[3, [1, 3]], np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum())
    assert interpreter.empty_rows(program, table).tolist() == [True, False, False, False]


def test_selection_mask_and_several_masks():
    source = "program p {\n combine softmax\n mask nearest(alpha(k) and k < q)\n mask [k > 0]\n 1\n}"
    program = compile_program(source)
    (a,) = _all_evaluators(program, [table_from_words(["x", "y", ".", "z"])])
    assert a[1].tolist() == [1.0, 0.0, 0.0, 0.0]  # nearest is k = 0, which [k > 0] rejects: fallback first
    assert a[3].tolist() == [0.0, 1.0, 0.0, 0.0]  # nearest alphabetic before q = 3 is y


def test_linear_programs_take_masks_too():
    program = compile_program("program p {\n mask [not punct(k)]\n 1 + 1 * [punct(k)]\n}")
    (a,) = _all_evaluators(program, [table_from_words(["a", ".", "b"])])
    np.testing.assert_allclose(a[2], [0.5, 0.0, 0.5])


def test_selections_in_softmax_are_indicator_features():
    near = compile_program("program p {\n combine softmax\n 2 * nearest(punct(k))\n}")
    spread = compile_program("program p {\n combine softmax\n 2 * spread(punct(k))\n}")
    table = table_from_words([".", "a", "!"])
    (a,) = _all_evaluators(near, [table])
    (b,) = _all_evaluators(spread, [table])
    e2 = math.exp(2.0)
    np.testing.assert_allclose(a[2], np.array([1, 1, e2]) / (2 + e2))  # +2 on the selected key only
    np.testing.assert_allclose(b[2], np.array([math.e, 1, math.e]) / (1 + 2 * math.e))  # +2/m on each of m = 2


def test_huge_logits_are_clamped_the_same_everywhere():
    program = compile_program("program p {\n combine softmax\n 1e300 * [k == 0] + 1 * exp(50 * d)\n}")
    (a,) = _all_evaluators(program, [table_from_words(["a", "b", "c"])])
    # both clamp to LOGIT_BOUND on row 2 (k = 0: 1e300 + e^100; k = 1: e^50): an even split
    np.testing.assert_allclose(a[2], [0.5, 0.5, 0.0], atol=1e-12)


def test_kernels_use_the_same_logit_bound():
    from attndsl.kernels import evaluator

    assert evaluator.LOGIT_BOUND == ir.LOGIT_BOUND


def test_lexicons_read_lower_cased_text_at_offsets():
    source = 'program p {\n lexicon w { "the": 2, "cat": -1.5 }\n 1 * w(k) + 1 * w(k - 1) * [k == q]\n}'
    program = compile_program(source)
    table = table_from_words(["The", "cat", "dog"])
    grid = interpreter.scores(program, table)
    assert grid[0, 0] == 2.0 + 0.0  # "The" → "the"; k - 1 is outside the sequence: 0
    assert grid[2, 1] == -1.5 and grid[2, 2] == 0.0 + -1.5  # "dog" is not in the table
    _all_evaluators(program, [table, table_from_words(["THE"]), table_from_words([])])


def test_lexicon_keys_absent_from_the_batch_match_nothing():
    source = 'program p {\n combine softmax\n lexicon w { "zebra": 5, "cat": 1 }\n 1 * w(k)\n}'
    (a,) = _all_evaluators(compile_program(source), [table_from_words(["a", "cat", "zebras"])])
    np.testing.assert_allclose(a[2], np.array([1, math.e, 1]) / (2 + math.e))


def test_printed_lexicon_is_a_readable_table_and_round_trips():
    source = ('program p {\n combine softmax\n fallback self\n lexicon key_words { "the": -1.5, "a": -1, "cat": 2, }\n'
              ' mask [k > 0]\n 2.3 * [k == q - 1] + 1 * key_words(k)\n}\n')
    module = parse(source)
    text = format_module(module)
    assert text == (
        "program p {\n    combine softmax\n    fallback self\n    lexicon key_words {\n"
        '        "the": -1.5,\n        "a": -1,\n        "cat": 2\n    }\n    mask [k > 0]\n'
        "    2.3 * [k == q - 1]\n    + 1 * key_words(k)\n}\n"
    )
    assert parse(text) == module


def test_linear_programs_emit_what_they_did_before():
    program = compile_program("program p {\n fallback self\n 1 * [k == q - 1]\n}")
    source = emit_python(program)
    assert "_softmax" not in source and "allowed" not in source
    assert compile_program("program p {\n combine softmax\n 1\n}").form == "softmax"


def test_combine_softmax_and_nan_masks_equal_programs():
    tables = [table_from_words(WORDS), table_from_words(["Hi", "!"])]
    batch = TokenBatch.from_tables(tables)
    prev = ir.Term(1.0, (ir.Indicator(ir.NumCompare("==", ir.Position("k"), ir.Arith("-", ir.Position("q"), ir.Const(1.0)))),))
    dist = ir.Term(1.0, (ir.Dist(),))
    alpha = ir.Indicator(ir.BoolFeature("alpha", ir.At("k")))
    values = evaluate_terms([prev, dist, ir.Term(1.0, (alpha,))], batch)
    got = combine(np.array([[2.0, -0.3, np.nan], [2.0, -0.3, 0.0]]), values, ["self", "first"], ["softmax", "linear"])
    programs_ = [ir.Program("a", (ir.Term(2.0, prev.factors), ir.Term(-0.3, dist.factors)), "self", False, "softmax", (alpha,)),
                 ir.Program("b", (ir.Term(2.0, prev.factors), ir.Term(-0.3, dist.factors)), "first")]
    np.testing.assert_allclose(got, evaluate_programs(programs_, batch), atol=1e-12)
    with pytest.raises(ValueError, match="form"):
        combine([1.0, 1.0, 1.0], values, "first", "exp")


def test_word_pair_and_context_tables_mean_the_same_in_every_evaluator():
    """The forms the softmax fit prints: a query table times a key table (a word pair) and
    tables read before the key or the query (``after_words(k - 1)``)."""
    source = (
        'program p {\n combine softmax\n'
        ' lexicon asks {\n "dog": 1,\n "the": -0.5\n }\n'
        ' lexicon offers {\n "cat": 2,\n "mat": -1\n }\n'
        ' lexicon after_words {\n "the": 1.5\n }\n'
        ' lexicon sink_after_prev {\n "on": 2\n }\n'
        ' 2 * [k == q - 1] + 1.3 * [k > 0] * [k < q] * asks(q) * offers(k)'
        ' + 1 * [k > 0] * after_words(k - 1) + 1 * [k == 0] * sink_after_prev(q - 1)\n}'
    )
    program = compile_program(source)
    assert format_module(parse(format_module(parse(source)))) == format_module(parse(source))
    tables = [table_from_words(WORDS), table_from_words("The dog saw the cat on the mat .".split()), table_from_words(["Hi"])]
    # "The dog saw the cat on the mat ." — 0 The, 1 dog, 2 saw, 3 the, 4 cat, 5 on, 6 the, 7 mat, 8 .
    logits = interpreter.scores(program, tables[1])
    assert logits[4, 4] == pytest.approx(1.5)  # the key "cat" follows "the"; no pair on the query itself
    assert logits[6, 0] == pytest.approx(2)  # the query "the" follows "on": the sink
    assert logits[6, 4] == pytest.approx(1.3 * -0.5 * 2 + 1.5)  # "the" asks −0.5, "cat" offers 2, after "the"
    assert logits[6, 5] == pytest.approx(2)  # the previous token, after "cat" (not in after_words)
    assert logits[7, 0] == pytest.approx(0)  # the query "mat" follows "the": not in sink_after_prev
    _all_evaluators(program, tables)


# ---------------------------------------------------------------- properties


@settings(max_examples=150)
@given(st.data())
def test_softmax_kernels_emit_and_torch_equal_interpreter(data):
    syntax = data.draw(st.booleans(), "syntax")
    tables = data.draw(token_batches(syntax=syntax, max_size=10), "tables")
    program = data.draw(programs(syntax=syntax, form="softmax", max_terms=3), "program")
    _all_evaluators(program, tables)


@settings(max_examples=200)
@given(programs(form="softmax"), token_tables())
def test_softmax_log_ratios_are_logit_differences(program, table):
    """Â[q,a] / Â[q,b] = exp(s_a − s_b) on admissible keys; no mass outside them."""
    a = interpreter.evaluate(program, table)
    logits = np.clip(interpreter.scores(program, table), -ir.LOGIT_BOUND, ir.LOGIT_BOUND)
    allowed = interpreter.admissible(program, table)
    fell_back = interpreter.empty_rows(program, table)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    for q in np.flatnonzero(~fell_back):
        assert np.all(a[q][~allowed[q]] == 0)
        keys = np.flatnonzero(allowed[q])
        top = keys[np.argmax(logits[q, keys])]
        assert a[q, top] > 0
        for k in keys:
            if a[q, k] > 1e-250 and abs(logits[q, k] - logits[q, top]) < 500:
                assert math.isclose(math.log(a[q, k] / a[q, top]), logits[q, k] - logits[q, top], abs_tol=1e-9)


def test_reference_examples_compile_and_name_the_new_declarations():
    import re

    from attndsl.synthesis.prompts import dsl_reference
    from attndsl.language.validate import compile_source

    reference = dsl_reference()
    blocks = re.findall(r"```attn\n(.*?)```", reference, re.S)
    assert any("combine softmax" in b and "lexicon" in b and "mask" in b for b in blocks)
    for block in blocks:
        compile_source(block)
    for word in ir.FORMS + ("mask", "lexicon", str(ir.MAX_LEXICON_ENTRIES), f"{ir.LOGIT_BOUND:.0f}"):
        assert word in reference, word
