"""The one table of the language's features and operations.

Every backend reads its vocabulary from here instead of keeping its own copy:

- `attndsl.language.ir` derives its name tuples (``STRING_FEATURES`` …,
  ``FUNCTIONS``, ``SELECTIONS``, ``FALLBACKS``, ``FORMS``) from the rows, so the
  validator knows every name and type the table lists;
- the reference interpreter reads token features through each row's
  ``column`` (an attribute of `attndsl.extraction.features.TokenTable`) and
  applies ``reference`` callables for arithmetic, functions and comparisons;
- `TokenTable.records` (the input of emitted Python) and the ragged
  `attndsl.extraction.batch.TokenBatch` lay out one entry / one row per
  feature, in table order;
- the emitter writes each operation's ``emit`` template;
- the kernel encoder (`attndsl.kernels.encoding`) writes each row's
  ``opcode`` and code, and the Numba evaluator imports the same integer
  constants from this module (Numba cannot read a dict; module-level ints
  are frozen into the compiled kernels);
- the DSL reference's feature list and the prompt card's glosses are
  generated from ``doc`` / ``gloss``.

A new token feature is therefore one `Feature` row here plus the
attribute that computes it in `attndsl.extraction.features`.

Opcodes and codes are fixed for ever: the kernels are cached on disk
(``cache=True``) and Numba's cache does not notice a change in this module,
so renumbering would run stale kernels.  New operations get new numbers.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

# ------------------------------------------------------------------ types

TEXT, NUMBER, BOOL = "text", "number", "condition"


# ------------------------------------------------------------------ opcodes
# One instruction per row of the bytecode (see attndsl.kernels.encoding).  The
# evaluator's dispatch relies on the ranges: binary arithmetic OP_ADD..OP_DIV,
# binary functions OP_POW..OP_MAX, comparisons OP_EQ..OP_GE.

OP_CONST, OP_DIST, OP_POS, OP_NUMF, OP_STRF, OP_BOOLF, OP_SAME, OP_SIM = range(8)
OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_NEG = range(8, 13)
OP_EXP, OP_LOG, OP_SQRT, OP_ABS, OP_POW, OP_MIN, OP_MAX = range(13, 20)
OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE = range(20, 26)
OP_IN, OP_AND, OP_OR, OP_NOT, OP_SELECT = range(26, 31)
OP_LEX = 31

#: selection codes (argument 1 of OP_SELECT)
SELECT_NEAREST, SELECT_FIRST, SELECT_SPREAD = 0, 1, 2
#: fallback codes and form codes; a program's combination code is
#: ``fallback + FORM_STRIDE * form`` (one int64 per program)
FALLBACK_FIRST, FALLBACK_SELF, FALLBACK_PREVIOUS, FALLBACK_UNIFORM = 0, 1, 2, 3
FORM_LINEAR, FORM_SOFTMAX = 0, 1
FORM_STRIDE = 8
#: position variables (argument of OP_POS and of every feature read)
VAR_Q, VAR_K = 0, 1


# ------------------------------------------------------------------ features


@dataclass(frozen=True)
class Feature:
    """A feature read at one position (``tok(p)``) or comparing two (``same_tok(a, b)``).

    ``column``: for a token feature, the `TokenTable` attribute holding one
    value per token; for ``same_*``, the token feature whose values are
    compared; for ``sim``, the text feature whose characters are compared.
    ``doc``: the meaning column of the DSL reference (rows in a run with the
    same ``doc`` and type share one line); ``gloss``: the prompt card's few words.
    The kernel opcode follows from the kind and type (`Feature.opcode`); the
    batch row is the feature's index among the features of its column group.
    """

    name: str
    type: str  # TEXT | NUMBER | BOOL
    column: str
    doc: str
    gloss: str = ""
    cross: bool = False
    syntax: bool = False

    @property
    def opcode(self) -> int:
        if self.cross:
            return OP_SAME if self.type == BOOL else OP_SIM
        return {TEXT: OP_STRF, NUMBER: OP_NUMF, BOOL: OP_BOOLF}[self.type]

    @property
    def signature(self) -> str:
        return f"{self.name}(a, b)" if self.cross else f"{self.name}(p)"


FEATURES: tuple[Feature, ...] = (
    Feature("tok", TEXT, "tok", "the token's text without its leading space", "token text (no leading space)"),
    Feature("lower", TEXT, "lower", "`tok` lower-cased", "lower-cased text"),
    Feature("id", NUMBER, "token_id", "token id", "token id"),
    Feature("pos", NUMBER, "position", "position p", "position"),
    Feature("word", NUMBER, "word", "index of the word / sentence the token is in", "index of its word"),
    Feature("sent", NUMBER, "sent", "index of the word / sentence the token is in", "index of its sentence"),
    Feature("word_pos", NUMBER, "word_pos", "index of the token inside its word / sentence", "index inside its word"),
    Feature("sent_pos", NUMBER, "sent_pos", "index of the token inside its word / sentence",
            "index inside its sentence"),
    Feature("len", NUMBER, "length", "characters in `tok`", "characters"),
    Feature("word_start", BOOL, "word_start", "a word begins in this token", "a word starts here"),
    Feature("punct", BOOL, "punct", "all punctuation / letters / digits", "all punctuation"),
    Feature("alpha", BOOL, "alpha", "all punctuation / letters / digits", "all letters"),
    Feature("digit", BOOL, "digit", "all punctuation / letters / digits", "all digits"),
    Feature("cap", BOOL, "cap", "first letter is upper-case", "capitalised"),
    Feature("newline", BOOL, "newline", "contains a newline / is all whitespace", "contains a newline"),
    Feature("space", BOOL, "space", "contains a newline / is all whitespace", "all whitespace"),
    Feature("seq_start", BOOL, "seq_start", "first token of the sequence", "first token"),
    Feature("stopword", BOOL, "stopword", "`lower` is an English stop word (`the`, `of`, `and` …)", "a stop word"),
    Feature("upos", TEXT, "upos", "part of speech (`\"NOUN\"`, `\"VERB\"` …), dependency label (`\"nsubj\"` …)",
            "part of speech", syntax=True),
    Feature("dep", TEXT, "dep", "part of speech (`\"NOUN\"`, `\"VERB\"` …), dependency label (`\"nsubj\"` …)",
            "dependency label", syntax=True),
    Feature("head", NUMBER, "head", "position of the token's syntactic head", "position of the syntactic head",
            syntax=True),
    Feature("same_tok", BOOL, "id", "same token id / same lower-cased text", "same token id", cross=True),
    Feature("same_lower", BOOL, "lower", "same token id / same lower-cased text", "same lower-cased text",
            cross=True),
    Feature("same_word", BOOL, "word", "in the same word / sentence", "same word", cross=True),
    Feature("same_sent", BOOL, "sent", "in the same word / sentence", "same sentence", cross=True),
    Feature("sim", NUMBER, "lower", "character overlap of the two tokens, 0 to 1", "character overlap 0..1",
            cross=True),
)

FEATURE: dict[str, Feature] = {f.name: f for f in FEATURES}
assert len(FEATURE) == len(FEATURES), "feature names must be distinct"


def features(type: str, *, cross: bool = False, syntax: bool = False) -> tuple[str, ...]:
    """Names of the features of one kind, in table order."""
    return tuple(f.name for f in FEATURES if f.type == type and f.cross == cross and f.syntax == syntax)


def token_features(type: str) -> tuple[str, ...]:
    """Token features of one type, syntax ones included (the batch's row order)."""
    return tuple(f.name for f in FEATURES if f.type == type and not f.cross)


def feature_reference() -> str:
    """The DSL reference's feature table (markdown), generated from the rows."""
    lines = ["| feature | type | meaning |", "|---|---|---|"]
    group: list[Feature] = []

    def flush():
        if group:
            names = ", ".join(f"`{f.signature}`" for f in group)
            lines.append(f"| {names} | {group[0].type} | {group[0].doc} |")
            group.clear()

    for f in FEATURES:
        if group and (group[-1].doc != f.doc or group[-1].type != f.type):
            flush()
        group.append(f)
    flush()
    return "\n".join(lines)


#: the DSL reference (``attndsl/data/dsl_reference.md``) holds the generated
#: feature table between these lines; `with_feature_reference` refreshes it
REFERENCE_BEGIN = "<!-- feature table: generated from attndsl/language/ops.py (python -m attndsl.language.ops) -->"
REFERENCE_END = "<!-- end of feature table -->"


def with_feature_reference(text: str) -> str:
    """``text`` (the DSL reference) with its feature table regenerated from the rows."""
    start, end = text.index(REFERENCE_BEGIN) + len(REFERENCE_BEGIN), text.index(REFERENCE_END)
    return text[:start] + "\n" + feature_reference() + "\n" + text[end:]


# ------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Operation:
    """An arithmetic operator, numeric function or comparison.

    ``reference``: the NumPy meaning the interpreter applies to whole grids
    (results made finite afterwards where the semantics say so);
    ``emit``: the emitted-Python template (``{0}``, ``{1}``: the operands).
    """

    name: str
    kind: str  # "arith" | "function" | "compare"
    arity: int
    reference: Callable
    emit: str
    opcode: int
    doc: str


OPERATIONS: tuple[Operation, ...] = (
    Operation("+", "arith", 2, operator.add, "_add({0}, {1})", OP_ADD, "sum"),
    Operation("-", "arith", 2, operator.sub, "_add({0}, -{1})", OP_SUB, "difference"),
    Operation("*", "arith", 2, operator.mul, "_mul({0}, {1})", OP_MUL, "product"),
    Operation("/", "arith", 2, operator.truediv, "_div({0}, {1})", OP_DIV, "quotient (x/0 counts as 0)"),
    Operation("exp", "function", 1, np.exp, "_call(np.exp, {0})", OP_EXP, "e to the x"),
    Operation("log", "function", 1, np.log, "_call(np.log, {0})", OP_LOG, "natural logarithm"),
    Operation("sqrt", "function", 1, np.sqrt, "_call(np.sqrt, {0})", OP_SQRT, "square root"),
    Operation("abs", "function", 1, np.abs, "_call(np.abs, {0})", OP_ABS, "absolute value"),
    Operation("pow", "function", 2, np.power, "_call(np.power, {0}, {1})", OP_POW, "x to the y"),
    Operation("min", "function", 2, np.minimum, "_call(np.minimum, {0}, {1})", OP_MIN, "smaller of two"),
    Operation("max", "function", 2, np.maximum, "_call(np.maximum, {0}, {1})", OP_MAX, "larger of two"),
    Operation("==", "compare", 2, operator.eq, "({0} == {1})", OP_EQ, "equal"),
    Operation("!=", "compare", 2, operator.ne, "({0} != {1})", OP_NE, "not equal"),
    Operation("<", "compare", 2, operator.lt, "({0} < {1})", OP_LT, "less"),
    Operation("<=", "compare", 2, operator.le, "({0} <= {1})", OP_LE, "less or equal"),
    Operation(">", "compare", 2, operator.gt, "({0} > {1})", OP_GT, "greater"),
    Operation(">=", "compare", 2, operator.ge, "({0} >= {1})", OP_GE, "greater or equal"),
)


def _by_kind(kind: str) -> dict[str, Operation]:
    return {o.name: o for o in OPERATIONS if o.kind == kind}


ARITH = _by_kind("arith")
FUNCTION = _by_kind("function")
COMPARE = _by_kind("compare")


# ------------------------------------------------------------------ selections, fallbacks, forms


def _row_filler(statement: str) -> Callable:
    """``fill(out, q)`` running ``statement`` on one row ``out`` (length q+1): the
    same text the emitted Python carries, so both mean the same by construction."""
    namespace: dict = {}
    exec(f"def fill(out, q):\n    {statement}\n", namespace)
    return namespace["fill"]


@dataclass(frozen=True)
class Selection:
    """``kind(c)`` over the keys k ≤ q where c holds (``keys``, ascending).

    ``emit``: the emitted factor, ``{0}`` the list of matching keys."""

    name: str
    code: int
    emit: str
    doc: str


SELECTIONS: tuple[Selection, ...] = (
    Selection("nearest", SELECT_NEAREST, "(1.0 if {0} and k == {0}[-1] else 0.0)",
              "1 at the largest k ≤ q where the condition holds (the most recent match), else 0"),
    Selection("first", SELECT_FIRST, "(1.0 if {0} and k == {0}[0] else 0.0)",
              "1 at the smallest such k (the earliest match), else 0"),
    Selection("spread", SELECT_SPREAD, "(1.0 / len({0}) if k in {0} else 0.0)",
              "1/m at each of the m keys k ≤ q where the condition holds"),
)
SELECTION = {s.name: s for s in SELECTIONS}


@dataclass(frozen=True)
class Fallback:
    """Where an empty row puts its mass: ``statement`` fills ``out`` (the row's
    q+1 entries, zero on entry); `fill` is the same statement as a function."""

    name: str
    code: int
    statement: str
    doc: str

    @property
    def fill(self) -> Callable:
        return _FILLERS[self.name]


FALLBACKS: tuple[Fallback, ...] = (
    Fallback("first", FALLBACK_FIRST, "out[0] = 1.0", "all weight on k = 0"),
    Fallback("self", FALLBACK_SELF, "out[q] = 1.0", "all weight on k = q"),
    Fallback("previous", FALLBACK_PREVIOUS, "out[max(q - 1, 0)] = 1.0", "all weight on k = q − 1 (k = 0 for q = 0)"),
    Fallback("uniform", FALLBACK_UNIFORM, "out[:] = 1.0 / (q + 1)", "evenly on every k ≤ q"),
)
FALLBACK = {f.name: f for f in FALLBACKS}
_FILLERS = {f.name: _row_filler(f.statement) for f in FALLBACKS}


@dataclass(frozen=True)
class Form:
    """How a program combines its scores (``combine``)."""

    name: str
    code: int
    doc: str


FORMS: tuple[Form, ...] = (
    Form("linear", FORM_LINEAR, "clip below 0, divide each row by its sum"),
    Form("softmax", FORM_SOFTMAX, "softmax of the clamped scores over the admissible keys"),
)
FORM = {f.name: f for f in FORMS}


def _check() -> None:
    codes = [o.opcode for o in OPERATIONS]
    assert len(set(codes)) == len(codes), "opcodes must be distinct"
    for group in (SELECTIONS, FALLBACKS, FORMS):
        assert [g.code for g in group] == list(range(len(group))), "codes are 0, 1, 2 … in table order"
    assert max(f.code for f in FALLBACKS) < FORM_STRIDE


_check()


if __name__ == "__main__":  # refresh the checked-in copy of the DSL reference's feature table
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "dsl_reference.md"
    path.write_text(with_feature_reference(path.read_text(encoding="utf-8")), encoding="utf-8")
