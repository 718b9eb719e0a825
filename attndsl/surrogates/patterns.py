"""Pattern functions: the matrices of an assignment's programs on a batch of token tables.

A `PatternFn` evaluates every distinct program on every table; the reference
one runs the interpreter, the fast one the compiled kernels through the torch
bridge, and `default_pattern_fn` picks the kernels when they are installed.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from attndsl.language import ir
from attndsl.extraction.features import TokenTable

#: pattern_fn(programs, tables) -> array/tensor [B, P, m, m] (m = longest table; shorter
#: tables top-left aligned), row-stochastic causal matrices of each program on each table
PatternFn = Callable[[Sequence[ir.Program], Sequence[TokenTable]], "np.ndarray | torch.Tensor"]


def interpreter_patterns(programs: Sequence[ir.Program], tables: Sequence[TokenTable]) -> np.ndarray:
    """Reference pattern_fn: `attndsl.language.interpreter.evaluate` per program and table."""
    from attndsl.language.interpreter import evaluate

    m = max((len(t) for t in tables), default=0)
    out = np.zeros((len(tables), len(programs), m, m), dtype=np.float32)
    for b, table in enumerate(tables):
        n = len(table)
        for p, program in enumerate(programs):
            out[b, p, :n, :n] = evaluate(program, table)
    return out


def kernel_patterns(programs: Sequence[ir.Program], tables: Sequence[TokenTable]) -> "torch.Tensor":
    """pattern_fn on the compiled kernels (`attndsl.surrogates.torch_bridge.attention_tensors`)."""
    from attndsl.extraction.batch import TokenBatch
    from attndsl.surrogates.torch_bridge import attention_tensors

    return attention_tensors(list(programs), TokenBatch.from_tables(list(tables)))


def default_pattern_fn() -> PatternFn:
    """The kernels' torch bridge when it is installed, else the reference interpreter.

    Imported lazily, so surrogate heads work (slower) without the kernels.
    """
    try:
        from attndsl.surrogates import torch_bridge  # noqa: F401
        from attndsl.kernels import evaluate_programs  # noqa: F401
    except ImportError:
        return interpreter_patterns
    return kernel_patterns
