"""Program names that say what a program does, unique within a library."""
from __future__ import annotations

from attndsl import stdlib
from attndsl.synthesis.library import LibraryProgram
from attndsl.explanations.naming import keeps_own_name, name_library, program_name
from attndsl.language.validate import compile_source


def test_stdlib_programs_are_named_after_their_terms():
    names = {p.name: program_name(p) for p in stdlib.programs()}
    assert names["sink_previous"] == "sink_prev"
    assert names["induction"] == "induction"
    assert names["previous_or_sentence_start"] == "prev_or_sent_start"
    assert names["local_decay"] == "window5_decay"
    assert names["last_sentence_end"] == "last_sent_end"
    assert all(n.isidentifier() for n in names.values())


def _lib(name, source_body, origin, layer=None, head=None):
    return LibraryProgram(name, f"program {name} {{\n    {source_body}\n}}\n", origin, layer, head, 0.5)


def test_name_library_renames_search_programs_uniquely_and_keeps_metadata():
    programs = [
        _lib("L5_H5", "0.7 * [k == 0] + 0.3 * [k == q - 1]", "search", 5, 5),
        _lib("L6_H1", "0.6 * [k == 0] + 0.4 * [k == q - 1]", "search", 6, 1),
        _lib("L7_H2_step2", "1 * [k == q - 1]", "search", 7, 2),
        _lib("subject_tracker", "1 * [k == q - 1]", "llm", 8, 0),  # an LLM's name is kept
        _lib("L9_H9", "1 * [k == 0]", "llm", 9, 9),  # … unless it is a head name
        _lib("prev", "1 * [k == q]", "user"),  # a user's name is kept and not taken by a derived one
    ]
    renamed = name_library(programs)
    names = [p.name for p in renamed]
    assert names == ["sink_prev", "sink_prev_2", "prev_2", "subject_tracker", "sink", "prev"]
    assert len(set(names)) == len(names)
    assert [(p.layer, p.head) for p in renamed] == [(p.layer, p.head) for p in programs]
    for p in renamed:  # the source agrees with the name and still compiles
        assert compile_source(p.source)[0].name == p.name


def test_keeps_own_name():
    assert keeps_own_name("sentence_beginning_salience", "llm")
    assert not keeps_own_name("L18_H6_step2", "llm")
    assert not keeps_own_name("anything", "search")
