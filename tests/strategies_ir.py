"""Hypothesis strategies for random valid IR programs and random token tables.

Built directly on `attndsl.language.ir` (not via the parser), so they reach IR shapes
the surface syntax only reaches indirectly (negative constants, empty sets,
literal-vs-literal comparisons).  Coverage: every IR node type, every
feature (syntax ones when ``syntax=True``), q/k positions with offsets that
run off both ends of the sequence, number and text sets (negated and not),
all selections and all fallbacks, both combination forms (linear, softmax),
masks (indicators and selections) and lexicon reads.  Constants include values that overflow
``exp``/``pow`` and zeros that divide, so the non-finite → 0 rule is exercised.

`token_tables` makes tables from a small vocabulary with repeats (so copies,
shared words and sentences occur), including "" tokens, newlines, digits and
optional syntax annotations; `token_batches` makes ragged lists of them.
"""
from __future__ import annotations

from functools import lru_cache

from hypothesis import strategies as st

from attndsl.language import ir
from attndsl.language import ops
from attndsl.extraction.features import TokenTable, table_from_spans

WORDS = ["the", "The", "cat", "sat", "on", "mat", ".", ",", "!", "?", "\n", "Lily", "dog", "7", "42", "’s",
         "don't", "a", "_x", "  ", "é", ""]
LITERALS = WORDS + ["missing", "NOUN", "VERB", "nsubj"]
UPOS = ["NOUN", "VERB", "DET", "PUNCT", "PROPN"]
DEPS = ["nsubj", "obj", "det", "punct", "ROOT"]

constants = st.one_of(
    st.integers(-4, 4).map(float),
    st.sampled_from([0.5, -0.5, 0.1, 2.5, 1e-3, 800.0, -800.0, 1e300]),
    st.floats(-50, 50, allow_nan=False, allow_infinity=False),
)
weights = st.one_of(st.sampled_from([1.0, 0.5, 2.0, -1.0, -0.25, 0.0, 3.0]), st.floats(-10, 10, allow_nan=False))


@lru_cache(maxsize=None)
def positions():
    return st.builds(ir.At, st.sampled_from(["q", "k"]), st.one_of(st.just(0), st.integers(-3, 3)))


@lru_cache(maxsize=None)
def texts(syntax: bool):
    names = list(ir.STRING_FEATURES) + (list(ir.SYNTAX_STRING_FEATURES) if syntax else [])
    literal = st.sampled_from(LITERALS + (UPOS + DEPS if syntax else [])).map(ir.StrLit)
    return st.one_of(literal, st.builds(ir.StrFeature, st.sampled_from(names), positions()))


#: lexicon keys: lower-cased words of the tables (so reads hit) and text no table holds
LEXICON_KEYS = sorted({w.lower() for w in WORDS if w} | {"missing", "nsubj"})
lexicon_tables = st.builds(
    ir.Lexicon,
    st.sampled_from(["lex", "key_words"]),
    st.lists(st.tuples(st.sampled_from(LEXICON_KEYS), st.floats(-10, 10, allow_nan=False)),
             max_size=8, unique_by=lambda e: e[0]).map(tuple),
)


@lru_cache(maxsize=None)
def nums(syntax: bool, depth: int = 3):
    names = list(ir.NUMBER_FEATURES) + (list(ir.SYNTAX_NUMBER_FEATURES) if syntax else [])
    leaves = st.one_of(
        st.builds(ir.Const, constants),
        st.just(ir.Dist()),
        st.builds(ir.Position, st.sampled_from(["q", "k"])),
        st.builds(ir.NumFeature, st.sampled_from(names), positions()),
        st.builds(ir.Similarity, positions(), positions()),
        st.builds(ir.LexiconRead, lexicon_tables, positions()),
    )
    if depth <= 0:
        return leaves
    sub = st.deferred(lambda: nums(syntax, depth - 1))
    unary = st.sampled_from([f for f, a in ir.FUNCTIONS.items() if a == 1])
    binary = st.sampled_from([f for f, a in ir.FUNCTIONS.items() if a == 2])
    return st.one_of(
        leaves,
        st.builds(ir.Arith, st.sampled_from(list(ops.ARITH)), sub, sub),
        st.builds(ir.Negate, sub),
        st.builds(lambda f, x: ir.Func(f, (x,)), unary, sub),
        st.builds(lambda f, x, y: ir.Func(f, (x, y)), binary, sub, sub),
        st.builds(ir.Indicator, st.deferred(lambda: conds(syntax, depth - 1))),
    )


@lru_cache(maxsize=None)
def conds(syntax: bool, depth: int = 3):
    number = nums(syntax, max(depth - 1, 0))
    leaves = st.one_of(
        st.builds(ir.BoolConst, st.booleans()),
        st.builds(ir.BoolFeature, st.sampled_from(ir.BOOL_FEATURES), positions()),
        st.builds(ir.Same, st.sampled_from(ir.CROSS_BOOL_FEATURES), positions(), positions()),
        st.builds(ir.NumCompare, st.sampled_from(list(ops.COMPARE)), number, number),
        st.builds(ir.StrEquals, texts(syntax), texts(syntax), st.booleans()),
        st.builds(ir.NumIn, number, st.lists(st.integers(-2, 6).map(float), max_size=4).map(tuple), st.booleans()),
        st.builds(ir.StrIn, texts(syntax), st.lists(st.sampled_from(LITERALS), max_size=4).map(tuple), st.booleans()),
    )
    if depth <= 0:
        return leaves
    sub = st.deferred(lambda: conds(syntax, depth - 1))
    return st.one_of(
        leaves,
        st.builds(ir.AndB, sub, sub),
        st.builds(ir.OrB, sub, sub),
        st.builds(ir.NotB, sub),
        st.builds(ir.BoolEquals, sub, sub, st.booleans()),
    )


@lru_cache(maxsize=None)
def factors(syntax: bool, depth: int = 2):
    select = st.builds(ir.Select, st.sampled_from(ir.SELECTIONS), conds(syntax, depth))
    return st.one_of(select, select, nums(syntax, depth))


@lru_cache(maxsize=None)
def _terms(syntax: bool, depth: int):
    return st.builds(ir.Term, weights, st.lists(factors(syntax, depth), max_size=3).map(tuple))


@lru_cache(maxsize=None)
def masks(syntax: bool, depth: int = 2):
    """What a ``mask`` declaration lowers to: an indicator or a selection."""
    return st.one_of(st.builds(ir.Indicator, conds(syntax, depth)),
                     st.builds(ir.Select, st.sampled_from(ir.SELECTIONS), conds(syntax, depth)))


@st.composite
def programs(draw, syntax: bool | None = None, max_terms: int = 4, depth: int = 2,
             form: str | None = None) -> ir.Program:
    """A random valid program; ``syntax=None`` draws whether it uses syntax and
    ``form=None`` whether it is linear or softmax (with up to two masks)."""
    uses_syntax = draw(st.booleans()) if syntax is None else syntax
    terms = draw(st.lists(_terms(uses_syntax, depth), min_size=1, max_size=max_terms))
    fallback = draw(st.sampled_from(ir.FALLBACKS))
    form = draw(st.sampled_from(ir.FORMS)) if form is None else form
    mask_list = tuple(draw(st.lists(masks(uses_syntax, depth), max_size=2)))
    return ir.Program("p", tuple(terms), fallback, uses_syntax, form, mask_list)


def _table(words: list[str], bos: bool, syntax_labels) -> TokenTable:
    """Words joined by spaces; ``bos`` puts a special ``<s>`` token (empty span) in front."""
    text, spans = "", []
    for piece in words:
        if text:
            text += " "
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    ids = [_IDS[w.lower()] for w in words]  # "The" and "the" share an id
    special = None
    if bos:
        ids, spans, special = [0] + ids, [(0, 0)] + spans, ["<s>"] + [None] * len(words)
    table = table_from_spans(text, ids, spans, special)
    if syntax_labels is not None:
        upos, dep, head = syntax_labels
        table = table.with_syntax(upos, dep, head)
    return table


_IDS = {w.lower(): i + 1 for i, w in enumerate(WORDS)}  # 0 is <s>


@st.composite
def token_tables(draw, min_size: int = 0, max_size: int = 12, syntax: bool = True) -> TokenTable:
    """A random table; with ``syntax`` it carries upos/dep/head annotations."""
    words = draw(st.lists(st.sampled_from(WORDS), min_size=min_size, max_size=max_size))
    bos = bool(words) and draw(st.booleans())
    if bos:
        words = words[1:]
    labels = None
    if syntax:
        n = len(words) + bos
        labels = (
            draw(st.lists(st.sampled_from(UPOS), min_size=n, max_size=n)),
            draw(st.lists(st.sampled_from(DEPS), min_size=n, max_size=n)),
            draw(st.lists(st.integers(-1, max(n - 1, 0)), min_size=n, max_size=n)),
        )
    return _table(words, bos, labels)


def token_batches(min_tables: int = 1, max_tables: int = 4, min_size: int = 0, max_size: int = 12, syntax: bool = True):
    """Ragged lists of token tables (all with syntax, or all without)."""
    return st.lists(token_tables(min_size=min_size, max_size=max_size, syntax=syntax),
                    min_size=min_tables, max_size=max_tables)
