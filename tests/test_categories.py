"""Head categories from programs: term analysis, shares, and constructed heads end to end.

The constructed heads are synthetic attention matrices with a known pattern
(mixtures of the sink, the previous token, induction …) on sentences with
repeated words; the standard library is scored against them through the
library's own choice (`build_library` + `choose_best`), and each head's chosen
program must put it in the category it was built as.
"""
from __future__ import annotations

import numpy as np
import pytest

from attndsl.explanations.anatomy import describe_term
from attndsl.extraction.batch import TokenBatch
from attndsl.explanations.categories import CATEGORIES, categorise, measure_shares
from attndsl.extraction.features import table_from_words
from attndsl.language.validate import compile_source

SENTENCES = [
    "the cat saw the dog and the cat ran to the dog .",
    "Tom had a red ball , Tom gave the red ball to Sue .",
    "a bird sang . a bird flew , and the bird sang again !",
    "she said hello , he said hello , they said hello .",
    "the sun is hot and the sun is big and the sun is bright .",
    "Ben ate an apple . Ben ate a pear . Ben was full .",
]


def tables():
    return [table_from_words(s.split()) for s in SENTENCES]


def one(source: str):
    return compile_source(source)[0]


@pytest.mark.parametrize("source, kind", [
    ("program p { 1 * [k == 0] }", "sink"),
    ("program p { 1 * [seq_start(k)] }", "sink"),
    ("program p { 1 * [k == q] }", "self"),
    ("program p { 1 * [d == 0] }", "self"),
    ("program p { 1 * [k == q - 1] }", "previous"),
    ("program p { 1 * [q - 1 == k] }", "previous"),
    ("program p { 1 * nearest(k < q) }", "previous"),
    ("program p { 1 * [k == q - 3] }", "offset"),
    ("program p { 1 * [d <= 4] }", "local"),
    ("program p { 1 * exp(-0.5 * d) }", "local"),
    ("program p { 1 * nearest(tok(k - 1) == tok(q) and k < q) }", "induction"),
    ("program p { 1 * nearest(same_tok(q, k - 1)) }", "induction"),
    ("program p { 1 * nearest(same_tok(q, k) and k < q) }", "duplicate"),
    ("program p { 1 * spread(lower(k) == lower(q) and k < q) }", "duplicate"),
    ("program p { 1 * first(same_sent(q, k)) }", "sentence"),
    ("program p { 1 * [sent_pos(k) == 0] }", "sentence"),
    ("program p { 1 * nearest(punct(k) and k < q) }", "punctuation"),
    ("program p { 1 * [tok(k) in {\".\", \",\"}] }", "punctuation"),
    ("program p { 1 * [lower(k) in {\"he\", \"she\"}] }", "lexical"),
    ("program p { 1 * spread(same_word(q, k)) }", "word"),
    ("program p { uses syntax\n 1 * nearest(dep(k) == \"nsubj\") }", "syntactic"),
    ("program p { 1 }", "uniform"),
    ("program p { 1 * [k > 0] }", "uniform"),
    ("program p { 1 * [punct(q)] }", "uniform"),
    ("program p { 1 * len(k) }", "other"),
])
def test_term_kinds(source, kind):
    assert describe_term(one(source).terms[0]).kind == kind


def test_query_conditions_qualify_rather_than_decide():
    term = one("program p { 1 * [punct(q)] * [k == q - 1] }").terms[0]
    kind = describe_term(term)
    assert kind.kind == "previous"
    assert kind.query_conditions == ("the current token is punctuation",)


def test_shares_split_the_row_mass_between_terms():
    batch = TokenBatch.from_tables(tables())
    shares = measure_shares(one("program p { 0.7 * [k == 0] + 0.3 * [k == q - 1] }"), batch)
    by = shares.by_category()
    # rows q >= 2: 0.7 / 0.3 exactly; row q = 1: k = 0 is both, split 0.7 / 0.3 as well
    assert by["sink"] == pytest.approx(0.7) and by["previous"] == pytest.approx(0.3)
    assert sum(by.values()) == pytest.approx(1.0)
    category = categorise(shares)
    assert category.key == "previous" and category.purity == pytest.approx(0.3)


def test_fallback_mass_goes_to_the_fallback_category():
    batch = TokenBatch.from_tables(tables())
    shares = measure_shares(one("program p { fallback self\n 1 * nearest(same_tok(q, k) and k < q) }"), batch)
    fallback = [t for t in shares.terms if t.index == -1]
    assert fallback and fallback[0].category == "self"
    assert sum(t.share for t in shares.terms) == pytest.approx(1.0)
    assert categorise(shares).key == "duplicate"  # the rule, not the rows it leaves to the fallback


def test_a_mostly_sink_program_is_a_sink_head():
    batch = TokenBatch.from_tables(tables())
    category = categorise(measure_shares(one("program p { 0.95 * [k == 0] + 0.05 * [k == q - 1] }"), batch))
    assert category.key == "sink" and category.purity > 0.9


def test_an_even_mixture_is_mixed():
    batch = TokenBatch.from_tables(tables())
    category = categorise(measure_shares(
        one("program p { 0.34 * [k == q - 1] + 0.33 * [k == q] + 0.33 * nearest(punct(k) and k < q) }"), batch))
    assert category.key == "mixed"
    assert set(category.shares) <= set(CATEGORIES)


# ------------------------------------------------------- constructed heads


def _pattern(table, kind: str) -> np.ndarray:
    """The n×n attention of a constructed head of one kind on one sentence."""
    n = len(table)
    a = np.zeros((n, n))
    toks = list(table.tok)
    for q in range(n):
        earlier = [k for k in range(q) if toks[k] == toks[q]]
        row = np.zeros(n)
        if kind == "sink":
            row[0] = 1.0
        elif kind == "previous":
            row[max(q - 1, 0)] = 0.8
            row[0] += 0.2
        elif kind == "induction":
            if earlier and earlier[-1] + 1 <= q:
                row[earlier[-1] + 1] = 0.9
                row[0] += 0.1
            else:
                row[0] = 1.0
        elif kind == "duplicate":
            if earlier:
                row[earlier[-1]] = 0.9
                row[q] += 0.1
            else:
                row[q] = 1.0
        elif kind == "self":
            row[q] = 1.0
        elif kind == "uniform":
            row[: q + 1] = 1.0 / (q + 1)
        a[q] = row / row.sum()
    return a


KINDS = ("sink", "previous", "induction", "duplicate", "self", "uniform")


def test_constructed_heads_are_categorised_as_built():
    """Synthetic heads → the library's choice among the standard library → the right category."""
    from attndsl.synthesis.library import LibraryProgram, build_library, choose_best
    from attndsl.synthesis.scoring import DenseAttention
    from attndsl import stdlib
    from attndsl.language.parser import parse
    from attndsl.language.printer import format_program

    ts = tables() * 2
    matrices = [np.stack([_pattern(t, kind) for kind in KINDS])[None] for t in ts]  # [1 layer, heads, n, n]
    source = DenseAttention(matrices)
    candidates = [LibraryProgram(p.name, format_program(p) + "\n", "stdlib")
                  for text in stdlib.sources().values() for p in parse(text).programs]
    synth = list(range(0, len(ts), 2))
    held = list(range(1, len(ts), 2))
    synth_tables = [ts[i] for i in synth]
    library = build_library(candidates, source, synth_tables, synth)
    choices = choose_best(library, source, synth_tables, synth, [ts[i] for i in held], held)
    programs = {p.name: p.program() for p in library.programs}
    batch = TokenBatch.from_tables(synth_tables)
    got = {}
    for c in choices:
        got[KINDS[c.head]] = categorise(measure_shares(programs[c.program_name], batch)).key
    assert got == {k: k for k in KINDS}, {c.head: c.program_name for c in choices}
