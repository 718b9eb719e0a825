"""Lowering: IR terms → a compact stack bytecode for the one compiled evaluator.

A new program costs only this encoding (a walk over its IR, microseconds per
term), never a JIT compilation: every program runs on the same precompiled
Numba evaluator (`attndsl.kernels.evaluator`).

Bytecode
--------
One instruction is a row of ``int64[6]``: ``(opcode, a1, a2, a3, a4, a5)``.
Instructions work on a stack of *vectors*: one float64 value per causal entry
of the sequence being evaluated, so the dispatch cost is paid once per
instruction and sequence, not per (q, k) pair.  Conditions are 0.0/1.0,
text is its integer id as a float (exact below 2**53).  Constants, set members
and bound literal ids live in a float64 ``pool`` indexed by the instructions.

A term ``w * f1 * f2`` is encoded as ``CONST w; f1; MUL; f2; MUL`` — the exact
order of the reference interpreter, where every product is made finite
(non-finite → 0) after each multiplication.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from attndsl.language import ir, ops
from attndsl.extraction.batch import FLAG_COLUMNS, NUMBER_COLUMNS, SAME_COLUMNS, TEXT_COLUMNS, TokenBatch
# opcodes and codes: one table, `attndsl.language.ops` (the evaluator imports the same constants)
from attndsl.language.ops import (
    FORM_STRIDE, OP_AND, OP_CONST, OP_DIST, OP_EQ, OP_IN, OP_LEX, OP_MUL, OP_NE, OP_NEG, OP_NOT, OP_OR, OP_POS,
    OP_SELECT, VAR_K, VAR_Q,
)

WIDTH = 6
_ARITH = {name: op.opcode for name, op in ops.ARITH.items()}
_FUNC = {name: op.opcode for name, op in ops.FUNCTION.items()}
_COMPARE = {name: op.opcode for name, op in ops.COMPARE.items()}
SELECT_KINDS = {s.name: s.code for s in ops.SELECTIONS}
FALLBACK_CODES = {f.name: f.code for f in ops.FALLBACKS}
FORM_CODES = {f.name: f.code for f in ops.FORMS}
#: a program's combination code is ``fallback + FORM_STRIDE * form`` (one int64
#: per program, so every kernel signature stays the same for both forms)
_VAR = {"q": VAR_Q, "k": VAR_K}


@dataclass(frozen=True)
class EncodedTerms:
    """Bytecode of T terms for one batch (term t is ``code[term_ptr[t]:term_ptr[t+1]]``)."""

    terms: tuple[ir.Term, ...]
    code: np.ndarray  # int64[I, 6]
    term_ptr: np.ndarray  # int64[T+1]
    pool: np.ndarray  # float64[...]
    depth: int  # stack vectors needed by the deepest term


class _Encoder:
    def __init__(self, batch: TokenBatch):
        self.batch = batch
        self.code: list[tuple[int, ...]] = []
        self.pool: list[float] = []
        self.depth = 0
        self.sp = 0

    # -- emission with stack-depth tracking
    def emit(self, op: int, *args: int, pops: int = 0, pushes: int = 1) -> None:
        self.code.append((op, *args) + (0,) * (WIDTH - 1 - len(args)))
        self.sp += pushes - pops
        self.depth = max(self.depth, self.sp)

    def constant(self, value: float) -> None:
        self.pool.append(float(value))
        self.emit(OP_CONST, len(self.pool) - 1)

    # -- nodes
    def term(self, term: ir.Term) -> None:
        self.sp = 0
        self.constant(term.weight)
        for factor in term.factors:
            if isinstance(factor, ir.Select):
                self.cond(factor.condition)
                self.emit(OP_SELECT, SELECT_KINDS[factor.kind], pops=1)
            else:
                self.num(factor)
            self.emit(OP_MUL, pops=2)
        assert self.sp == 1

    def num(self, node: ir.Num) -> None:
        match node:
            case ir.Const(value=v):
                self.constant(v)
            case ir.Dist():
                self.emit(OP_DIST)
            case ir.Position(var=var):
                self.emit(OP_POS, _VAR[var])
            case ir.NumFeature(name=name, at=at):
                self.syntax_check(name)
                self.emit(ops.FEATURE[name].opcode, NUMBER_COLUMNS.index(name), _VAR[at.var], at.offset)
            case ir.Similarity(a=a, b=b):
                self.emit(ops.FEATURE["sim"].opcode, 0, _VAR[a.var], a.offset, _VAR[b.var], b.offset)
            case ir.Arith(op=op, left=left, right=right):
                self.num(left)
                self.num(right)
                self.emit(_ARITH[op], pops=2)
            case ir.Negate(operand=operand):
                self.num(operand)
                self.emit(OP_NEG, pops=1)
            case ir.Func(name=name, args=args):
                for arg in args:
                    self.num(arg)
                self.emit(_FUNC[name], pops=len(args))
            case ir.Indicator(condition=c):
                self.cond(c)  # conditions already are 0.0 / 1.0
            case ir.LexiconRead(lexicon=lexicon, at=at):
                self.lexicon(lexicon, at)
            case _:
                raise AssertionError(f"unhandled number node {node!r}")

    def text(self, node: ir.Str) -> None:
        match node:
            case ir.StrLit(value=v):
                self.constant(self.batch.literal_id(v))
            case ir.StrFeature(name=name, at=at):
                self.syntax_check(name)
                self.emit(ops.FEATURE[name].opcode, TEXT_COLUMNS.index(name), _VAR[at.var], at.offset)
            case _:
                raise AssertionError(f"unhandled text node {node!r}")

    def cond(self, node: ir.Bool) -> None:
        match node:
            case ir.BoolConst(value=v):
                self.constant(1.0 if v else 0.0)
            case ir.BoolFeature(name=name, at=at):
                self.emit(ops.FEATURE[name].opcode, FLAG_COLUMNS.index(name), _VAR[at.var], at.offset)
            case ir.Same(name=name, a=a, b=b):
                self.emit(ops.FEATURE[name].opcode, SAME_COLUMNS.index(name), _VAR[a.var], a.offset,
                          _VAR[b.var], b.offset)
            case ir.NumCompare(op=op, left=left, right=right):
                self.num(left)
                self.num(right)
                self.emit(_COMPARE[op], pops=2)
            case ir.StrEquals(left=left, right=right, negated=negated):
                self.text(left)
                self.text(right)
                self.emit(OP_NE if negated else OP_EQ, pops=2)
            case ir.BoolEquals(left=left, right=right, negated=negated):
                self.cond(left)
                self.cond(right)
                self.emit(OP_NE if negated else OP_EQ, pops=2)
            case ir.NumIn(operand=operand, values=values, negated=negated):
                self.num(operand)
                self.member(values, negated)
            case ir.StrIn(operand=operand, values=values, negated=negated):
                self.text(operand)
                self.member([self.batch.literal_id(v) for v in values], negated)
            case ir.AndB(left=left, right=right):
                self.cond(left)
                self.cond(right)
                self.emit(OP_AND, pops=2)
            case ir.OrB(left=left, right=right):
                self.cond(left)
                self.cond(right)
                self.emit(OP_OR, pops=2)
            case ir.NotB(operand=operand):
                self.cond(operand)
                self.emit(OP_NOT, pops=1)
            case _:
                raise AssertionError(f"unhandled condition node {node!r}")

    def member(self, values: Iterable[float], negated: bool) -> None:
        values = [float(v) for v in values]
        start = len(self.pool)
        self.pool.extend(values)
        self.emit(OP_IN, start, len(values), pops=1)
        if negated:
            self.emit(OP_NOT, pops=1)

    def lexicon(self, lexicon: ir.Lexicon, at: ir.At) -> None:
        """``OP_LEX start count var offset``: the pool holds the keys' ids bound to
        this batch (sorted, for binary search on the ``lower`` text id) then their
        weights in the same order — run time compares integers only."""
        pairs = sorted((self.batch.literal_id(key), float(w)) for key, w in lexicon.entries)
        start = len(self.pool)
        self.pool.extend(float(i) for i, _ in pairs)
        self.pool.extend(w for _, w in pairs)
        self.emit(OP_LEX, start, len(pairs), _VAR[at.var], at.offset, TEXT_COLUMNS.index("lower"))

    def syntax_check(self, name: str) -> None:
        # a batch without tokens (``attndsl compile`` encodes for one) has nothing to annotate
        if name in ir.SYNTAX_FEATURES and not self.batch.has_syntax and int(self.batch.offsets[-1]) > 0:
            raise ValueError(f"feature '{name}' needs syntax annotations but the token batch has none")


def encode_terms(terms: Sequence[ir.Term], batch: TokenBatch) -> EncodedTerms:
    """Lower terms to bytecode bound to ``batch`` (literals → the batch's ids)."""
    enc = _Encoder(batch)
    ptr = [0]
    for term in terms:
        enc.term(term)
        ptr.append(len(enc.code))
    code = np.array(enc.code, dtype=np.int64).reshape(-1, WIDTH)
    return EncodedTerms(
        terms=tuple(terms),
        code=code,
        term_ptr=np.array(ptr, dtype=np.int64),
        pool=np.array(enc.pool if enc.pool else [0.0], dtype=np.float64),
        depth=max(enc.depth, 1),
    )


@dataclass(frozen=True)
class ProgramTable:
    """Programs as weighted lists of distinct terms.

    Program p sums ``coef[j] * value(term_idx[j])`` for j in
    ``prog_ptr[p]:prog_ptr[p+1]`` in order (for a program's own terms every
    coefficient is 1, which reproduces the interpreter's summation exactly).
    An entry whose coefficient is NaN is one of the program's masks (a term
    ``1 * mask``): keys where its value is 0 are not admissible.  Weights are
    finite (the validator checks), so NaN is free to mark masks.
    ``fallback[p]`` is the combination code ``FALLBACK_CODES[fallback] +
    FORM_STRIDE * FORM_CODES[form]`` (`combination_code`).
    """

    terms: tuple[ir.Term, ...]  # distinct terms, in first-seen order
    prog_ptr: np.ndarray  # int64[P+1]
    term_idx: np.ndarray  # int64[J]
    coef: np.ndarray  # float64[J] (NaN: a mask)
    fallback: np.ndarray  # int64[P] (combination codes)


def combination_code(form: str, fallback: str) -> int:
    """One int64 naming how a program turns scores into attention."""
    return FALLBACK_CODES[fallback] + FORM_STRIDE * FORM_CODES[form]


def mask_term(mask: ir.Factor) -> ir.Term:
    """The term whose value decides a mask (non-zero: admissible)."""
    return ir.Term(1.0, (mask,))


def program_table(programs: Sequence[ir.Program], batch: TokenBatch | None = None) -> ProgramTable:
    """Deduplicate the terms of ``programs`` (identical ``ir.Term``s are evaluated once)."""
    index: dict[ir.Term, int] = {}
    ptr, idx, coef = [0], [], []
    for program in programs:
        if batch is not None and program.uses_syntax and not batch.has_syntax and int(batch.offsets[-1]) > 0:
            raise ValueError(f"program '{program.name}' uses syntax features but the token batch has none")
        for term in program.terms:
            idx.append(index.setdefault(term, len(index)))
            coef.append(1.0)
        for mask in program.masks:
            idx.append(index.setdefault(mask_term(mask), len(index)))
            coef.append(np.nan)
        ptr.append(len(idx))
    return ProgramTable(
        terms=tuple(index),
        prog_ptr=np.array(ptr, dtype=np.int64),
        term_idx=np.array(idx, dtype=np.int64),
        coef=np.array(coef, dtype=np.float64),
        fallback=np.array([combination_code(p.form, p.fallback) for p in programs], dtype=np.int64),
    )
