"""The library's IR cache (`attndsl.pipeline.ircache`): read instead of parsing only while it matches the
text and the front end, equal to what parsing gives, and ignored — never an error — when it does not."""
from __future__ import annotations

import json

import pytest

from attndsl.language import parser
from attndsl.language.printer import format_program
from attndsl.pipeline import attnfile, ircache
from attndsl.pipeline.attnfile import read_attn
from attndsl.synthesis.library import LibraryProgram, write_library

SOFTMAX = """program soft {
    combine softmax
    uses syntax
    mask [k <= q]
    lexicon after_words {
        "the": 1.5,
        "a": -0.25,
        "don't": 2e-3
    }
    lexicon pron_reads {
        "he": 0.93,
        "\\u00e9t\\u00e9": -0.5
    }
    2.5 * [k == q - 1]
    - 0.75 * exp(-0.5 * d)
    + 1 * [k > 0] * after_words(k - 1)
    + 1.1 * [k > 0] * [k < q] * [upos(q) == "PRON"] * pron_reads(k)
    + 0.5 * nearest(tok(k) in {".", "!"} and k < q)
}
"""
LINEAR = """program lin {
    fallback self
    0.7 * [k == q - 1] + 0.3 * [k == 0]
}
"""


def _canonical(source: str) -> str:
    """A library program's source is canonical (`LibraryProgram.source`), as every writer makes it."""
    return format_program(parser.parse(source).programs[0]) + "\n"


def _library(tmp_path):
    programs = [LibraryProgram("soft", _canonical(SOFTMAX), "search", 3, 4, 0.8),
                LibraryProgram("lin", _canonical(LINEAR), "user")]
    write_library(tmp_path, programs, None)
    return tmp_path / "library.attn"


def _parsed_fresh(path):
    """What reading the file without a cache gives."""
    attnfile._parsed.cache_clear()
    module = parser.parse(path.read_text(encoding="utf-8"), str(path))
    from attndsl.language.validate import check

    programs, problems = check(module, path.read_text(encoding="utf-8"))
    assert not problems
    return {p.name: p for p in programs}, {p.name: format_program(p) for p in module.programs}


def test_a_written_library_is_read_from_its_cache_without_parsing_and_equals_the_parse(tmp_path, monkeypatch):
    path = _library(tmp_path)
    assert ircache.cache_path(path).is_file()
    by_name, sources = _parsed_fresh(path)
    attnfile._parsed.cache_clear()

    def no_parsing(*args, **kwargs):
        raise AssertionError("the library was parsed although its cache matches")

    monkeypatch.setattr(parser, "parse", no_parsing)
    attn = read_attn(path)
    assert attn.by_name() == by_name and attn.sources() == sources
    assert [p.name for p in attn.compiled()] == ["soft", "lin"]
    lexicon_reads = [f for t in attn.by_name()["soft"].terms for f in t.factors if type(f).__name__ == "LexiconRead"]
    assert lexicon_reads  # word tables come back with their entries, by value
    monkeypatch.undo()
    assert [p.name for p in attn.module.programs] == ["soft", "lin"]  # the syntax tree, parsed on demand


@pytest.mark.parametrize("spoil", ["edit the text", "other front end", "truncate", "unknown node", "not json",
                                   "wrong types", "missing field", "dangling reference", "extra field"])
def test_a_cache_that_does_not_match_or_is_damaged_is_ignored(tmp_path, spoil):
    path = _library(tmp_path)
    cache = ircache.cache_path(path)
    payload = json.loads(cache.read_text(encoding="utf-8"))
    if spoil == "edit the text":
        path.write_text(path.read_text(encoding="utf-8").replace("0.7 *", "0.6 *"), encoding="utf-8")
    elif spoil == "other front end":
        payload["front_end"] = "0" * 64
        cache.write_text(json.dumps(payload), encoding="utf-8")
    elif spoil == "truncate":
        cache.write_text(cache.read_text(encoding="utf-8")[:100], encoding="utf-8")
    elif spoil == "unknown node":
        payload["nodes"][0][0] = "system"
        cache.write_text(json.dumps(payload), encoding="utf-8")
    elif spoil == "not json":
        cache.write_bytes(b"\xff\xfe garbage")
    elif spoil == "wrong types":
        payload["programs"] = {"a": 1}
        cache.write_text(json.dumps(payload), encoding="utf-8")
    elif spoil == "dangling reference":
        payload["programs"][0] = len(payload["nodes"]) + 5
        cache.write_text(json.dumps(payload), encoding="utf-8")
    elif spoil == "extra field":
        payload["nodes"][-1].append(1)
        cache.write_text(json.dumps(payload), encoding="utf-8")
    elif spoil == "missing field":
        del payload["nodes"]
        cache.write_text(json.dumps(payload), encoding="utf-8")
    assert ircache.load(path, path.read_text(encoding="utf-8")) is None
    by_name, sources = _parsed_fresh(path)
    attnfile._parsed.cache_clear()
    attn = read_attn(path)
    assert attn.by_name() == by_name and attn.sources() == sources
    if spoil == "edit the text":
        assert by_name["lin"].terms[0].weight == pytest.approx(0.6)


def test_a_library_rewritten_without_its_programs_changing_keeps_a_valid_cache(tmp_path):
    """The cache follows the text: rewriting the library with other programs rewrites it."""
    path = _library(tmp_path)
    write_library(tmp_path, [LibraryProgram("lin", _canonical(LINEAR), "user")], None)
    text = path.read_text(encoding="utf-8")
    programs, sources = ircache.load(path, text)
    assert [p.name for p in programs] == ["lin"] and sources == {"lin": _canonical(LINEAR).strip()}
