"""``stopword(p)``: the token's lower-cased text is an English stop word.

Added as one row of the feature table plus its computation; every evaluator
(interpreter, kernels, emitted Python, torch) agrees on it."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attndsl.language import interpreter, ir
from attndsl.language.emit import load_function
from attndsl.language.validate import compile_program
from attndsl.extraction.batch import TokenBatch
from attndsl.extraction.features import STOPWORDS, table_from_words
from attndsl.kernels import dense_blocks, evaluate_programs
from attndsl.surrogates.torch_bridge import attention_tensors

from .strategies_ir import token_tables

SOURCES = [
    "program function_word { 1 * nearest(stopword(k) and k < q) }",
    "program content { fallback self\n    2 * [not stopword(k)] * exp(-0.5 * d) + 0.5 * [stopword(q - 1) == stopword(k)] }",
    "program soft { combine softmax\n    mask [stopword(k) or k == 0]\n    3 * spread(stopword(k + 1)) - 0.1 * d }",
]
PROGRAMS = [compile_program(s) for s in SOURCES]


def test_stopword_reads_lower_cased_text():
    table = table_from_words(["The", "cat", "sat", "ON", "the", "mat", ".", ""])
    assert table.stopword.tolist() == [True, False, False, True, True, False, False, False]
    assert {"the", "a", "and", "of", "is"} <= STOPWORDS and all(w == w.lower() for w in STOPWORDS)
    assert [r["stopword"] for r in table.records()] == table.stopword.tolist()


def test_stopword_is_in_the_vocabulary_and_the_reference():
    from attndsl.synthesis.prompts import dsl_card, dsl_reference

    assert "stopword" in ir.BOOL_FEATURES
    assert "`stopword(p)`" in dsl_reference() and "stopword(p)" in dsl_card()


def _check_all_evaluators(programs, tables):
    batch = TokenBatch.from_tables(tables)
    kernel = evaluate_programs(programs, batch)
    dense = attention_tensors(programs, batch, dtype=torch.float64).numpy()
    for p, program in enumerate(programs):
        emitted = load_function(program)
        blocks = dense_blocks(kernel[p], batch)
        for s, table in enumerate(tables):
            n = len(table)
            want = interpreter.evaluate(program, table)
            np.testing.assert_allclose(blocks[s], want, rtol=0, atol=1e-9)
            np.testing.assert_allclose(emitted(table.records()), want, rtol=0, atol=1e-9)
            np.testing.assert_allclose(dense[s, p, :n, :n], want, rtol=0, atol=1e-9)


def test_fixed_programs_agree_everywhere():
    tables = [table_from_words("The cat sat on the mat . It was a good day".split()),
              table_from_words(["A"]), table_from_words("and of the".split())]
    _check_all_evaluators(PROGRAMS, tables)


@settings(max_examples=60, deadline=None)
@given(st.lists(token_tables(min_size=1, max_size=12), min_size=1, max_size=3))
def test_random_tables_agree_everywhere(tables):
    _check_all_evaluators(PROGRAMS, tables)
