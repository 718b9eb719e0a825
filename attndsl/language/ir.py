"""Resolved, typed program representation shared by every evaluator.

The validator turns a syntax tree into these nodes once every name is known
and every type checks.  The reference interpreter, the emitted Python, the
Numba lowering and the torch path all consume this IR, never the syntax tree,
so they cannot disagree about what a name means.

The vocabulary of the language (names and types) comes from `attndsl.language.ops`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from attndsl.language import ops

# --------------------------------------------------------------- vocabulary

# Every tuple below is derived from the table in `attndsl.language.ops` (one
# row per feature / operation); the orders are the table's.
#: token features read at one position, by result type
STRING_FEATURES = ops.features(ops.TEXT)
NUMBER_FEATURES = ops.features(ops.NUMBER)
BOOL_FEATURES = ops.features(ops.BOOL)
#: features that need a syntax provider (``uses syntax``)
SYNTAX_STRING_FEATURES = ops.features(ops.TEXT, syntax=True)
SYNTAX_NUMBER_FEATURES = ops.features(ops.NUMBER, syntax=True)
#: features comparing two positions
CROSS_BOOL_FEATURES = ops.features(ops.BOOL, cross=True)
CROSS_NUMBER_FEATURES = ops.features(ops.NUMBER, cross=True)
#: numeric functions and their arities
FUNCTIONS = {name: op.arity for name, op in ops.FUNCTION.items()}
#: selections over the keys k <= q
SELECTIONS = tuple(s.name for s in ops.SELECTIONS)
#: what an empty row becomes
FALLBACKS = tuple(f.name for f in ops.FALLBACKS)
#: how a program combines its terms (``combine``; linear when not declared)
FORMS = tuple(f.name for f in ops.FORMS)
#: softmax logits are clamped to [-LOGIT_BOUND, LOGIT_BOUND] before the softmax
#: (see `attndsl.language.interpreter`): beyond ±745 exp already saturates, and a bound
#: keeps one-ulp differences between math libraries (NumPy vs Numba's libm)
#: below 1e-11 of the attention instead of amplifying them without limit
LOGIT_BOUND = 1e4
#: bounds on lexicons: entries per lexicon, lexicons per program, characters per key
MAX_LEXICON_ENTRIES = 256
MAX_LEXICONS = 48
MAX_LEXICON_KEY = 64

ALL_FEATURES = (
    STRING_FEATURES
    + NUMBER_FEATURES
    + BOOL_FEATURES
    + SYNTAX_STRING_FEATURES
    + SYNTAX_NUMBER_FEATURES
    + CROSS_BOOL_FEATURES
    + CROSS_NUMBER_FEATURES
)
SYNTAX_FEATURES = SYNTAX_STRING_FEATURES + SYNTAX_NUMBER_FEATURES

#: value read at a position outside the sequence
PAD_NUMBER = -1.0
PAD_STRING = ""


# --------------------------------------------------------------- positions


@dataclass(frozen=True)
class At:
    """A token position: ``q`` or ``k`` plus a whole-number offset."""

    var: str  # "q" | "k"
    offset: int = 0


# --------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Dist:
    """q − k."""


@dataclass(frozen=True)
class Position:
    var: str  # "q" | "k"


@dataclass(frozen=True)
class NumFeature:
    name: str
    at: At


@dataclass(frozen=True)
class Similarity:
    a: At
    b: At


@dataclass(frozen=True)
class Arith:
    op: str  # + - * /
    left: "Num"
    right: "Num"


@dataclass(frozen=True)
class Negate:
    operand: "Num"


@dataclass(frozen=True)
class Func:
    name: str
    args: tuple["Num", ...]


@dataclass(frozen=True)
class Indicator:
    condition: "Bool"


@dataclass(frozen=True)
class Lexicon:
    """A named word table: lower-cased text → weight (keys distinct, non-empty,
    at most `MAX_LEXICON_ENTRIES`).  Carried by value in every read, so a term
    means the same wherever it is evaluated and identical terms share work."""

    name: str
    entries: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class LexiconRead:
    """``name(p)``: the lexicon's weight of ``lower(p)``; 0 for text it does not
    hold and outside the sequence."""

    lexicon: Lexicon
    at: At


Num = Union[Const, Dist, Position, NumFeature, Similarity, Arith, Negate, Func, Indicator, LexiconRead]

# --------------------------------------------------------------- strings


@dataclass(frozen=True)
class StrLit:
    value: str


@dataclass(frozen=True)
class StrFeature:
    name: str
    at: At


Str = Union[StrLit, StrFeature]

# --------------------------------------------------------------- conditions


@dataclass(frozen=True)
class BoolConst:
    value: bool


@dataclass(frozen=True)
class BoolFeature:
    name: str
    at: At


@dataclass(frozen=True)
class Same:
    name: str  # same_tok | same_lower | same_word | same_sent
    a: At
    b: At


@dataclass(frozen=True)
class NumCompare:
    op: str  # == != < <= > >=
    left: Num
    right: Num


@dataclass(frozen=True)
class StrEquals:
    left: Str
    right: Str
    negated: bool = False


@dataclass(frozen=True)
class BoolEquals:
    left: "Bool"
    right: "Bool"
    negated: bool = False


@dataclass(frozen=True)
class NumIn:
    operand: Num
    values: tuple[float, ...]
    negated: bool = False


@dataclass(frozen=True)
class StrIn:
    operand: Str
    values: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class AndB:
    left: "Bool"
    right: "Bool"


@dataclass(frozen=True)
class OrB:
    left: "Bool"
    right: "Bool"


@dataclass(frozen=True)
class NotB:
    operand: "Bool"


Bool = Union[BoolConst, BoolFeature, Same, NumCompare, StrEquals, BoolEquals, NumIn, StrIn, AndB, OrB, NotB]

# --------------------------------------------------------------- programs


@dataclass(frozen=True)
class Select:
    """``nearest(c)``: 1 at the largest k ≤ q where c holds; ``first(c)``: at the
    smallest; ``spread(c)``: 1/m at each of the m keys where c holds."""

    kind: str  # nearest | first | spread
    condition: Bool


Factor = Union[Num, Select]


@dataclass(frozen=True)
class Term:
    weight: float
    factors: tuple[Factor, ...]


@dataclass(frozen=True)
class Program:
    """A validated program.  ``form``: ``linear`` or ``softmax`` (`FORMS`);
    ``masks``: factors (an `Indicator` or a `Select`) that every admissible key
    must make non-zero — see `attndsl.language.interpreter` for the exact meaning."""

    name: str
    terms: tuple[Term, ...]
    fallback: str = "first"
    uses_syntax: bool = False
    form: str = "linear"
    masks: tuple[Factor, ...] = ()


def walk(node):
    """Every IR node reachable from ``node`` (pre-order)."""
    yield node
    if isinstance(node, Program):
        for term in node.terms:
            yield from walk(term)
        for mask in node.masks:
            yield from walk(mask)
        return
    if isinstance(node, Term):
        for f in node.factors:
            yield from walk(f)
        return
    for name in getattr(node, "__dataclass_fields__", {}):
        value = getattr(node, name)
        if isinstance(value, tuple):
            for item in value:
                if hasattr(item, "__dataclass_fields__"):
                    yield from walk(item)
        elif hasattr(value, "__dataclass_fields__") and not isinstance(value, At):
            yield from walk(value)


def offsets_used(program: Program) -> set[At]:
    """All feature positions the program reads (for feature tables and kernels)."""
    found: set[At] = set()
    for node in walk(program):
        for name in ("at", "a", "b"):
            value = getattr(node, name, None)
            if isinstance(value, At):
                found.add(value)
    return found
