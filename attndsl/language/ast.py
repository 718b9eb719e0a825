"""Syntax tree of attention programs, exactly as written.

The parser builds these nodes; the validator resolves names and checks types;
the printer turns them back into canonical source.  Every node is a frozen
dataclass.  Source positions are kept for error messages but excluded from
equality, so that ``parse(print(p)) == p`` compares meaning-bearing structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Span:
    """Where a node starts in its source file (1-based line and column)."""

    line: int = 0
    column: int = 0


def _span() -> Span:
    return field(default=Span(), compare=False, repr=False)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Number:
    value: float
    span: Span = _span()


@dataclass(frozen=True)
class String:
    value: str
    span: Span = _span()


@dataclass(frozen=True)
class Name:
    """A bare name: ``q``, ``k``, ``d``, ``true``, ``false`` (others are errors)."""

    id: str
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    """``name(args)``: a token feature, a cross feature, a function or a selection."""

    name: str
    args: tuple["Expr", ...]
    span: Span = _span()


@dataclass(frozen=True)
class Indicator:
    """``[condition]``: 1 where the condition holds, else 0."""

    condition: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Binary:
    """Arithmetic ``+ - * /`` (left-associative)."""

    op: str
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Compare:
    """``== != < <= > >=``; not chainable."""

    op: str
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class InSet:
    """``x in {a, b}`` or, with ``negated``, ``x not in {a, b}``."""

    operand: "Expr"
    items: tuple[Union[Number, String], ...]
    negated: bool = False
    span: Span = _span()


@dataclass(frozen=True)
class And:
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Or:
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    span: Span = _span()


Expr = Union[Number, String, Name, Call, Indicator, Neg, Binary, Compare, InSet, And, Or, Not]

# ------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Term:
    """``weight * factor * factor ...``; no factors means the constant ``weight``."""

    weight: float
    factors: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True)
class LexiconEntry:
    """``"word": weight`` inside a lexicon."""

    key: str
    weight: float
    span: Span = _span()


@dataclass(frozen=True)
class Lexicon:
    """``lexicon name { "word": weight, ... }``: a weighted word table, read as ``name(k)``."""

    name: str
    entries: tuple[LexiconEntry, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Program:
    """A program as written.  ``form`` is its ``combine`` declaration
    (``linear`` when absent); ``masks`` are the ``mask`` declarations in order,
    each an `Indicator` (``mask [c]``) or a `Call` (``mask nearest(c)``)."""

    name: str
    terms: tuple[Term, ...]
    fallback: str = "first"
    uses_syntax: bool = False
    span: Span = _span()
    fallback_span: Span = _span()
    form: str = "linear"
    masks: tuple[Expr, ...] = ()
    lexicons: tuple[Lexicon, ...] = ()
    form_span: Span = _span()


@dataclass(frozen=True)
class Module:
    """A parsed ``.attn`` file: its programs in source order."""

    programs: tuple[Program, ...]
    path: str = field(default="<string>", compare=False)

    def __getitem__(self, name: str) -> Program:
        for program in self.programs:
            if program.name == name:
                return program
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.programs]
