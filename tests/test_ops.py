"""The table of features and operations (`attndsl.language.ops`) drives every backend."""
import inspect
import re

import numpy as np

from attndsl.language import emit, ir, ops
from attndsl.extraction import batch as batch_mod
from attndsl.extraction.features import table_from_words
from attndsl.kernels import encoding, evaluator


def test_ir_vocabulary_is_the_table():
    assert set(ir.ALL_FEATURES) == set(ops.FEATURE)
    assert ir.FUNCTIONS == {o.name: o.arity for o in ops.OPERATIONS if o.kind == "function"}
    assert ir.SELECTIONS == tuple(ops.SELECTION) and ir.FALLBACKS == tuple(ops.FALLBACK) and ir.FORMS == tuple(ops.FORM)


def test_batch_rows_follow_the_table():
    for columns, type_ in ((batch_mod.TEXT_COLUMNS, ops.TEXT), (batch_mod.NUMBER_COLUMNS, ops.NUMBER),
                           (batch_mod.FLAG_COLUMNS, ops.BOOL)):
        assert columns == tuple(f.name for f in ops.FEATURES if f.type == type_ and not f.cross)
    assert batch_mod.SAME_COLUMNS == ir.CROSS_BOOL_FEATURES


def test_opcodes_have_one_definition():
    """The evaluator and the encoder use the table's constants; neither defines its own."""
    for module in (encoding, evaluator):
        source = inspect.getsource(module)
        assert not re.search(r"^OP_\w+(, OP_\w+)* = ", source, re.M), module.__name__
        for name in dir(ops):
            if name.startswith("OP_") and hasattr(module, name):
                assert getattr(module, name) == getattr(ops, name)
    assert encoding.FALLBACK_CODES == {f.name: f.code for f in ops.FALLBACKS}
    assert encoding.SELECT_KINDS == {s.name: s.code for s in ops.SELECTIONS}
    assert evaluator.FORM_STRIDE == ops.FORM_STRIDE
    # no bare selection / fallback codes left in the dispatch
    assert not re.search(r"a1 == \d|fallback == \d|form == \d", inspect.getsource(evaluator))


def test_every_operation_is_encoded_emitted_and_interpreted():
    table = table_from_words("The cat , the Cat 12".split())
    from attndsl.language.interpreter import evaluate
    from attndsl.language.validate import compile_program
    from attndsl.extraction.batch import TokenBatch
    from attndsl.kernels import evaluate_programs

    exprs = [f"{name}(pos(k) + 1, 2)" if o.arity == 2 else f"{name}(pos(k) + 1)" for name, o in ops.FUNCTION.items()]
    exprs += [f"(pos(k) {op} 2)" for op in ops.ARITH]
    exprs += [f"[pos(k) {op} 2]" for op in ops.COMPARE]
    batch = TokenBatch.from_tables([table])
    for e in exprs:
        program = compile_program(f"program p {{ 1 * {e} }}")
        want = evaluate(program, table)
        got = emit.load_function(program)(table.records())
        np.testing.assert_array_equal(got, want)
        dense = np.zeros_like(want)
        dense[np.tril_indices(len(table))] = evaluate_programs([program], batch)[0]
        np.testing.assert_array_equal(dense, want)


def test_fallback_rows_match_the_statement():
    for fb in ops.FALLBACKS:
        for q in range(4):
            out = np.zeros(q + 1)
            fb.fill(out, q)
            assert out.sum() == 1.0 or np.isclose(out.sum(), 1.0)
    assert 'if fallback == "first":' in emit._HEADER and "else:\n        out[:] = 1.0 / (q + 1)" in emit._HEADER


def test_reference_lists_every_feature():
    from attndsl.synthesis.prompts import dsl_reference

    text = dsl_reference()
    for f in ops.FEATURES:
        assert f"`{f.signature}`" in text, f.name
    assert ops.feature_reference() in text


def test_records_hold_every_token_feature():
    table = table_from_words(["a", "b"])
    rec = table.records()[0]
    assert [k for k in rec if k != "charset"] == [f.name for f in ops.FEATURES if not f.cross and not f.syntax]
