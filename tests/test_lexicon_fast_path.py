"""A lexicon's body read as one token (the grammar's ``LEXICON_BODY``, the fast path) means exactly
what the ``lex_entry`` rule reads from the same text: the same entries, weights and positions, and
a body with a mistake still gets the rule's diagnostic at the mistake."""
from __future__ import annotations

import json
from functools import lru_cache

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lark import Lark

from attndsl.errors import AttnError
from attndsl.language import ast
from attndsl.language.parser import _lark, grammar_text, parse, parse_with
from attndsl.language.printer import format_module


@lru_cache(maxsize=1)
def _rule_only() -> Lark:
    """The parser's grammar without its fast-path lines: every lexicon read entry by entry."""
    text = "\n".join(line for line in grammar_text().splitlines() if "// fast path" not in line)
    assert "LEXICON_BODY" not in text
    return Lark(text, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)


def _entries(module: ast.Module) -> list:
    return [(lex.name, [(e.key, e.weight, e.span) for e in lex.entries], lex.span)
            for program in module.programs for lex in program.lexicons]


def _by_rule(text: str) -> ast.Module:
    return parse_with(_rule_only(), text)


def _diagnostic(text: str, parser) -> tuple | None:
    try:
        parser(text)
    except AttnError as error:
        (d,) = error.diagnostics
        return d.line, d.column, d.message, d.expected
    return None


gaps = st.lists(st.sampled_from([" ", "  ", "\n", "\t", "\r\n", " # a note # with hashes\n", "#\n", "\f"]),
                max_size=3).map("".join)
keys = st.one_of(st.sampled_from(["the", "a", "é", "don't", "#", "{", "}", ":", ",", "\\", "\"", "\n", "\t", "😀"]),
                 st.text(max_size=6)).map(lambda w: json.dumps(w, ensure_ascii=False))
raw_keys = st.sampled_from(['"tab\there"', '"a\\u00e9"', '"\\ud83d\\ude00"', '"\\/"'])
numbers = st.one_of(st.sampled_from(["1", "0", "2.5", ".5", "3.", "1e3", "2.5E-2", "007", "0.000867"]),
                    st.floats(0, 1e6, allow_nan=False).map(repr).filter(lambda s: "e" not in s or "." in s))


@st.composite
def bodies(draw):
    entries = []
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.one_of(keys, raw_keys))
        minus = draw(st.sampled_from(["", "-", "- ", "-\n", "-# c\n"]))
        entries.append(f"{key}{draw(gaps)}:{draw(gaps)}{minus}{draw(numbers)}")
    body = ",".join(f"{draw(gaps)}{e}{draw(gaps)}" for e in entries)
    if entries and draw(st.booleans()):
        body += f",{draw(gaps)}"
    return "{" + draw(gaps) + body + draw(gaps) + "}"


@given(bodies(), gaps)
def test_a_body_read_as_one_token_equals_the_rule(body, before):
    text = f"program p {{\n    combine softmax\n  {before}lexicon w{before} {body}\n    1 * w(k)\n}}\n"
    expected = _diagnostic(text, _by_rule)
    if expected is not None:  # a key the rule refuses (a raw tab): the same diagnostic either way
        assert _diagnostic(text, parse) == expected
        return
    assert _entries(parse(text)) == _entries(_by_rule(text))


@pytest.mark.parametrize("body, at", [
    ('{ "a": 1, "b" 2 }', '2 }'),  # a missing colon
    ('{ "a": 1,, "b": 2 }', ', "b"'),  # two commas
    ('{ "a": 1e, "b": 2 }', 'e, "b"'),  # half an exponent
    ('{\n  "a": 1,\n  "b": -x\n}', 'x\n}'),  # a name for a weight
    ('{ "a": 1 # no newline before the brace }', None),  # the comment swallows the brace
])
def test_a_body_with_a_mistake_gets_the_rules_diagnostic_at_the_mistake(body, at):
    text = f"program p {{ combine softmax lexicon w {body} 1 * w(k) }}"
    got = _diagnostic(text, parse)
    assert got is not None and got == _diagnostic(text, _by_rule)
    if at is not None:  # the diagnostic points at the mistake
        line, column = got[:2]
        assert text.split("\n")[line - 1][column - 1:].startswith(at.split("\n")[0]), got


def test_a_printed_library_reads_its_tables_as_one_token_each():
    """The canonical printer's lexicons take the fast path (what makes a large library quick to read)."""
    words = ", ".join(f'"w{i}": {i / 7:.3g}' for i in range(300))
    module = parse(f'program p {{ combine softmax lexicon w {{ {words} }} lexicon v {{ "a": -1 }} 1 * w(k) + 1 * v(q) }}')
    printed = format_module(module)
    tree = _lark().parse(printed)
    bodies = [t for t in tree.scan_values(lambda v: getattr(v, "type", None) == "LEXICON_BODY")]
    assert len(bodies) == 2
    assert not list(tree.find_data("lex_entry"))
    assert parse(printed) == module and _entries(parse(printed)) == _entries(_by_rule(printed))


@pytest.mark.parametrize("tail", ["x }", "1 }", "- }", '"unterminated }'])
def test_a_long_broken_body_fails_without_backtracking_forever(tail):
    """Every gap and number reads one way, so a body that fails at its end after many entries,
    comments full of ``#`` and long runs of blanks is refused after one pass, not after trying
    exponentially many splits (this test would not finish otherwise)."""
    entries = ",".join(f' "w{i}" :  - {i}.5e1  # {"#" * 40}\n' for i in range(2000))
    text = f"program p {{ combine softmax lexicon w {{ {entries}, {' ' * 5000}{tail} 1 * w(k) }}"
    with pytest.raises(AttnError):
        parse(text)
