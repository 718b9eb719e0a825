"""Program outputs as dense torch tensors equal the interpreter, zero padded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attndsl.language import interpreter, ir
from attndsl.extraction.batch import TokenBatch
from attndsl.extraction.features import table_from_words
from attndsl.kernels import combine, evaluate_terms
from attndsl.surrogates.torch_bridge import attention_tensors, values_to_tensor

PREV = ir.Program("prev", (ir.Term(1.0, (ir.Indicator(ir.NumCompare(
    "==", ir.Position("k"), ir.Arith("-", ir.Position("q"), ir.Const(1.0)))),)),), "self")
DECAY = ir.Program("decay", (ir.Term(1.0, (ir.Func("exp", (ir.Negate(ir.Dist()),)),)),
                             ir.Term(0.5, (ir.Select("nearest", ir.BoolFeature("punct", ir.At("k"))),))), "first")
TABLES = [table_from_words("Lily saw a dog . It ran !".split()), table_from_words(["Hi"]), table_from_words("a b c".split())]


def test_one_program_is_b_n_n_and_zero_padded():
    batch = TokenBatch.from_tables(TABLES)
    out = attention_tensors(DECAY, batch, dtype=torch.float64)
    assert out.shape == (3, 8, 8) and out.dtype == torch.float64 and out.device.type == "cpu"
    for s, table in enumerate(TABLES):
        n = len(table)
        np.testing.assert_allclose(out[s, :n, :n].numpy(), interpreter.evaluate(DECAY, table), atol=1e-12)
        assert out[s, n:].abs().sum() == 0 and out[s, :, n:].abs().sum() == 0


def test_many_programs_are_b_p_n_n():
    batch = TokenBatch.from_tables(TABLES)
    out = attention_tensors([PREV, DECAY], batch, dtype=torch.float32, n_max=10)
    assert out.shape == (3, 2, 10, 10) and out.dtype == torch.float32
    for p, program in enumerate((PREV, DECAY)):
        for s, table in enumerate(TABLES):
            n = len(table)
            np.testing.assert_allclose(out[s, p, :n, :n].numpy(), interpreter.evaluate(program, table), atol=1e-6)
    # rows of real tokens sum to 1
    assert torch.allclose(out[0, :, :8].sum(-1), torch.ones(2, 8))
    with pytest.raises(ValueError, match="n_max"):
        attention_tensors(PREV, batch, n_max=3)


def test_values_to_tensor_takes_combined_terms():
    batch = TokenBatch.from_tables(TABLES)
    values = evaluate_terms([t for t in DECAY.terms], batch)
    mixed = combine([1.0, 1.0], values, "first")
    out = values_to_tensor(mixed, batch, dtype=torch.float64)
    np.testing.assert_allclose(out.numpy(), attention_tensors(DECAY, batch, dtype=torch.float64).numpy(), atol=1e-12)
