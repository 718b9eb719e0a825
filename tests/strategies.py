"""Hypothesis strategies: random programs (as syntax trees) and token tables.

`programs(valid=True)` builds well-typed programs over the whole language
(every feature, function, selection, offset, set and fallback), in the
canonical shape the parser produces, so they can be printed, parsed,
validated and evaluated.  `programs(valid=False)` also mixes in ill-typed
nodes, for the printer/parser round trip.
"""
from __future__ import annotations

from functools import lru_cache

from hypothesis import strategies as st

from attndsl.language import ast, ir
from attndsl.language import ops
from attndsl.extraction.features import TokenTable, table_from_spans

VOCAB = ["the", "The", "cat", "sat", "on", "mat", ".", ",", "!", "?", "\n", "Lily", "dog", "7", "42", "’s", "“", "don't", "a", "_x"]
STRINGS = VOCAB + ["", "missing", "é", "\"quoted\"", "back\\slash"]
NAMES = ["p", "prog", "head_7", "induction", "x1", "_private"]
UPOS = ["NOUN", "VERB", "DET", "PUNCT", "PROPN"]
DEPS = ["nsubj", "obj", "det", "punct", "ROOT"]

numbers = st.one_of(
    st.integers(-5, 5).map(float),
    st.sampled_from([0.5, -0.5, 0.25, 1.5, 1e-3, 1e6, -2.75]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
weights = st.one_of(st.sampled_from([1.0, 0.5, 2.0, -1.0, -0.25, 0.0]), st.floats(-10, 10, allow_nan=False))


@lru_cache(maxsize=None)
def positions():
    var = st.sampled_from(["q", "k"]).map(ast.Name)
    offset = st.builds(
        lambda v, op, n: ast.Binary(op, ast.Name(v), ast.Number(float(n))),
        st.sampled_from(["q", "k"]),
        st.sampled_from(["+", "-"]),
        st.integers(1, 3),
    )
    return st.one_of(var, var, offset)


def _feature(names):
    return st.builds(lambda name, p: ast.Call(name, (p,)), st.sampled_from(names), positions())


def _cross(names):
    return st.builds(lambda name, a, b: ast.Call(name, (a, b)), st.sampled_from(names), positions(), positions())


@lru_cache(maxsize=None)
def texts(syntax: bool):
    names = list(ir.STRING_FEATURES) + (list(ir.SYNTAX_STRING_FEATURES) if syntax else [])
    literal = st.one_of(st.sampled_from(STRINGS).map(ast.String), st.sampled_from(UPOS + DEPS).map(ast.String))
    return st.one_of(literal, _feature(names))


def _not_number(node):
    return not isinstance(node, ast.Number)


@lru_cache(maxsize=None)
def nums(syntax: bool, depth: int = 3):
    names = list(ir.NUMBER_FEATURES) + (list(ir.SYNTAX_NUMBER_FEATURES) if syntax else [])
    leaves = st.one_of(
        numbers.map(ast.Number),
        st.sampled_from(["q", "k", "d"]).map(ast.Name),
        _feature(names),
        _cross(ir.CROSS_NUMBER_FEATURES),
    )
    if depth <= 0:
        return leaves
    sub = nums(syntax, depth - 1)
    return st.one_of(
        leaves,
        st.builds(ast.Binary, st.sampled_from(list(ops.ARITH)), sub, sub),
        st.builds(ast.Neg, sub.filter(_not_number)),
        st.builds(lambda f, x: ast.Call(f, (x,)), st.sampled_from(["exp", "log", "sqrt", "abs"]), sub),
        st.builds(lambda f, x, y: ast.Call(f, (x, y)), st.sampled_from(["pow", "min", "max"]), sub, sub),
        st.builds(ast.Indicator, conds(syntax, depth - 1)),
    )


@lru_cache(maxsize=None)
def conds(syntax: bool, depth: int = 3):
    leaves = st.one_of(
        st.sampled_from(["true", "false"]).map(ast.Name),
        _feature(ir.BOOL_FEATURES),
        _cross(ir.CROSS_BOOL_FEATURES),
    )
    if depth <= 0:
        return leaves
    num = nums(syntax, depth - 1)
    text = texts(syntax)
    sub = conds(syntax, depth - 1)
    return st.one_of(
        leaves,
        st.builds(ast.Compare, st.sampled_from(list(ops.COMPARE)), num, num),
        st.builds(ast.Compare, st.sampled_from(["==", "!="]), text, text),
        st.builds(ast.Compare, st.sampled_from(["==", "!="]), sub, sub),
        st.builds(ast.InSet, num, st.lists(numbers.map(ast.Number), max_size=4).map(tuple), st.booleans()),
        st.builds(ast.InSet, text, st.lists(st.sampled_from(STRINGS).map(ast.String), max_size=4).map(tuple), st.booleans()),
        st.builds(ast.And, sub, sub),
        st.builds(ast.Or, sub, sub),
        st.builds(ast.Not, sub),
    )


@lru_cache(maxsize=None)
def factors(syntax: bool, depth: int = 2):
    selection = st.builds(lambda kind, c: ast.Call(kind, (c,)), st.sampled_from(ir.SELECTIONS), conds(syntax, depth))
    return st.one_of(nums(syntax, depth), st.builds(ast.Indicator, conds(syntax, depth)), selection)


@lru_cache(maxsize=None)
def _bad_exprs():
    """Ill-typed or unknown constructs (still printable)."""
    return st.one_of(
        st.sampled_from(["zz", "tok", "q2"]).map(ast.Name),
        st.builds(lambda a: ast.Call("unknown_fn", (a,)), st.sampled_from(["q", "k"]).map(ast.Name)),
        st.sampled_from(STRINGS).map(ast.String),
        st.builds(lambda c: ast.Call("nearest", (c, c)), conds(False, 1)),
    )


LEXICON_NAMES = ["key_words", "lex"]
LEXICON_KEYS = sorted({w.lower() for w in VOCAB if w} | {"missing", "é"})
finite_weights = st.floats(-10, 10, allow_nan=False)


@st.composite
def lexicons(draw, name: str, valid: bool = True):
    """``lexicon name {...}``; valid ones have distinct, lower-cased, non-empty keys."""
    keys = st.sampled_from(LEXICON_KEYS) if valid else st.sampled_from(STRINGS)
    entries = draw(st.lists(st.tuples(keys, finite_weights), max_size=5,
                            unique_by=(lambda e: e[0]) if valid else None))
    return ast.Lexicon(name, tuple(ast.LexiconEntry(k, w) for k, w in entries))


def _lexicon_reads(names):
    """Factors reading the declared lexicons, alone or inside an expression."""
    read = st.builds(lambda name, p: ast.Call(name, (p,)), st.sampled_from(names), positions())
    return st.one_of(
        read,
        st.builds(lambda r: ast.Call("exp", (r,)), read),
        st.builds(lambda r, n: ast.Indicator(ast.Compare(">", r, ast.Number(n))), read, st.sampled_from([0.0, 1.0])),
    )


def masks(syntax: bool, depth: int = 2):
    selection = st.builds(lambda kind, c: ast.Call(kind, (c,)), st.sampled_from(ir.SELECTIONS), conds(syntax, depth))
    return st.one_of(st.builds(ast.Indicator, conds(syntax, depth)), selection)


@st.composite
def programs(draw, valid: bool = True, max_terms: int = 4, depth: int = 2):
    """Linear and softmax programs, with masks and lexicons (each drawn independently)."""
    syntax = draw(st.booleans())
    declared = draw(st.lists(st.sampled_from(LEXICON_NAMES), unique=True, max_size=2))
    lexicon_nodes = tuple(draw(lexicons(name, valid)) for name in declared)
    factor = factors(syntax, depth) if valid else st.one_of(factors(syntax, depth), _bad_exprs())
    if declared:
        factor = st.one_of(factor, _lexicon_reads(declared))
    terms = draw(
        st.lists(
            st.builds(ast.Term, weights, st.lists(factor, max_size=3).map(tuple)),
            min_size=1 if valid else 0,
            max_size=max_terms,
        )
    )
    fallback = draw(st.sampled_from(ir.FALLBACKS))
    name = draw(st.sampled_from(NAMES))
    form = draw(st.sampled_from(ir.FORMS))
    mask_nodes = tuple(draw(st.lists(masks(syntax, depth), max_size=2)))
    return ast.Program(name, tuple(terms), fallback, syntax, form=form, masks=mask_nodes, lexicons=lexicon_nodes)


@st.composite
def modules(draw, valid: bool = True):
    from dataclasses import replace

    progs = draw(st.lists(programs(valid=valid), min_size=0 if not valid else 1, max_size=3))
    if valid:  # unique names
        progs = [replace(p, name=f"{p.name}_{i}") for i, p in enumerate(progs)]
    return ast.Module(tuple(progs))


@st.composite
def token_tables(draw, min_size: int = 1, max_size: int = 24, syntax: bool = True) -> TokenTable:
    """Random token sequences: words, pieces of words, punctuation, newlines."""
    words = draw(st.lists(st.sampled_from(VOCAB), min_size=min_size, max_size=max_size))
    text, spans = "", []
    vocab: dict[str, int] = {}
    ids = []
    for i, word in enumerate(words):
        glue = "" if word in (".", ",", "!", "?", "’s") or i == 0 or word == "\n" else " "
        piece_split = draw(st.booleans()) if len(word) > 2 else False
        pieces = [glue + word[:2], word[2:]] if piece_split else [glue + word]
        for piece in pieces:
            if len(spans) >= max_size:
                break
            spans.append((len(text), len(text) + len(piece)))
            text += piece
            ids.append(vocab.setdefault(piece.strip() or piece, len(vocab)))
    table = table_from_spans(text, ids, spans)
    if syntax:
        n = len(table)
        upos = draw(st.lists(st.sampled_from(UPOS), min_size=n, max_size=n))
        dep = draw(st.lists(st.sampled_from(DEPS), min_size=n, max_size=n))
        head = draw(st.lists(st.integers(-1, max(n - 1, 0)), min_size=n, max_size=n))
        table = table.with_syntax(upos, dep, head)
    return table
