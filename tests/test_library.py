"""The pooled library: de-duplication by behaviour, the cap, best-over-library, files."""
from __future__ import annotations

import numpy as np
import pytest

from attndsl.synthesis import library
from attndsl.extraction.batch import TokenBatch
from attndsl.errors import UserError
from attndsl.extraction.features import table_from_words
from attndsl.language.interpreter import evaluate
from attndsl.synthesis.scoring import DenseAttention
from attndsl.language.validate import compile_program

TEXT = ("Once upon a time , there was a dog named Max . Max loved the park ! "
        "One day Max saw a red ball , and he ran to it . The girl said : \" Yes ! \" ").split()


def _tables(n=10):
    return [table_from_words(TEXT[i:i + 14 + (i % 5)]) for i in range(n)]


SOURCES = {
    "sink": "program sink { 1 * [k == 0] }",
    "sink_twice": "program sink_twice { 2 * [k == 0] }",  # same behaviour as sink
    "sink_first": "program sink_first { 1 * first(seq_start(k)) }",  # same behaviour, other IR
    "previous": "program previous { fallback self\n 1 * [k == q - 1] }",
    "current": "program current { 1 * [k == q] }",
    "punct": "program punct { 1 * nearest(punct(k) and k < q) + 0.2 * [k == 0] }",
}


def _program(name, origin="search", layer=None, head=None, iou=None):
    from attndsl.language.parser import parse
    from attndsl.language.printer import format_module

    return library.LibraryProgram(name, format_module(parse(SOURCES[name])), origin, layer, head, iou)


def _source_from(names, tables):
    """One layer whose head h attends exactly like program names[h]."""
    programs = [compile_program(SOURCES[n]) for n in names]
    return DenseAttention([np.stack([evaluate(p, t) for p in programs])[None].astype(np.float32) for t in tables])


def test_dedupe_by_behaviour_keeps_the_first():
    tables = _tables()
    batch = TokenBatch.from_tables(tables)
    progs = [_program(n) for n in ("sink", "sink_twice", "previous", "sink_first", "current")]
    kept = library.dedupe(progs, batch)
    assert [p.name for p in kept] == ["sink", "previous", "current"]


def test_dedupe_with_a_probe_keeps_exactly_what_the_whole_batch_keeps():
    tables = [table_from_words(["Once"]), table_from_words(["Max", "ran"])] + _tables()
    batch = TokenBatch.from_tables(tables)
    # on the probe's one 1-token sequence every program behaves alike (and on the 2-token one
    # "sink" and "punct" still do): only the whole batch tells them apart
    probe = TokenBatch.from_tables(tables[:1])
    names = ("sink", "previous", "sink_twice", "current", "punct", "sink_first")
    first, second = [_program(n) for n in names[:4]], [_program(n) for n in names[4:]]
    plain_seen, probe_seen = library.SeenBehaviours(), library.SeenBehaviours()
    plain = library.dedupe(first, batch, seen=plain_seen) + library.dedupe(second, batch, seen=plain_seen)
    probed = (library.dedupe(first, batch, seen=probe_seen, probe=probe)
              + library.dedupe(second, batch, seen=probe_seen, probe=probe))
    assert [p.name for p in probed] == [p.name for p in plain] == ["sink", "previous", "current", "punct"]


def test_build_library_caps_by_heads_won():
    tables = _tables()
    # three heads: two are "previous", one is "current"; "sink" wins none
    source = _source_from(["previous", "previous", "current"], tables)
    cands = [_program(n, iou=0.5) for n in ("sink", "previous", "current", "punct")]
    lib = library.build_library(cands, source, tables, range(len(tables)), cap=2, screen_sequences=len(tables))
    assert {p.name for p in lib.programs} == {"previous", "current"}
    assert lib.screen_iou.shape == (2, 1, 3)
    with pytest.raises(UserError):
        library.build_library(cands, source, tables, range(len(tables)), cap=0)


def test_best_is_chosen_over_the_whole_pool_and_scored_held_out():
    tables = _tables(12)
    source = _source_from(["previous", "punct"], tables)
    # the program written for head 0 is "current"; "previous" was written for head 1
    cands = [_program("current", layer=0, head=0, iou=0.3), _program("previous", layer=0, head=1, iou=0.2),
             _program("punct", layer=0, head=1, iou=0.9)]
    synth, held = list(range(0, 12, 2)), list(range(1, 12, 2))
    lib = library.build_library(cands, source, [tables[i] for i in synth], synth, screen_sequences=3)
    choices = library.choose_best(lib, source, [tables[i] for i in synth], synth, [tables[i] for i in held], held)
    by_head = {(c.layer, c.head): c for c in choices}
    assert by_head[(0, 0)].program_name == "previous"  # written for another head, best here
    assert by_head[(0, 1)].program_name == "punct"
    for c in choices:
        assert c.heldout_iou == pytest.approx(1.0, abs=1e-6)
        assert c.n_heldout_sequences == len(held)
        assert c.n_heldout_tokens == sum(len(tables[i]) for i in held)


def test_files_round_trip(tmp_path):
    progs = [_program("sink", "llm", 0, 1, 0.75), _program("punct", "search", 2, 0, 0.5)]
    choices = [library.HeadChoice(0, 1, "sink", 0.75, 0.7, 0.2, 10, 300)]
    library.write_library(tmp_path, progs, choices)
    back = library.read_library(tmp_path / "library.attn")
    assert back == progs
    assert library.read_best_csv(tmp_path / "best.csv") == [
        library.HeadChoice(0, 1, "sink", 0.75, 0.7, 0.2, 10, 300)]
    header = (tmp_path / "best.csv").read_text().splitlines()[0]
    assert header == ",".join(library.BEST_CSV_COLUMNS)
    # any .attn file is a library, with origin "user"
    own = tmp_path / "mine.attn"
    own.write_text(SOURCES["previous"] + "\n" + SOURCES["current"] + "\n")
    mine = library.read_library(own)
    assert [(p.name, p.origin) for p in mine] == [("previous", "user"), ("current", "user")]


def test_unique_names_renames_source_too():
    progs = [_program("sink"), _program("sink")]
    renamed = library.unique_names(progs)
    assert [p.name for p in renamed] == ["sink", "sink_2"]
    assert renamed[1].program().name == "sink_2"


def test_a_renamed_program_is_the_program_its_source_compiles_to():
    """`LibraryProgram.program` parses a program once whatever it is named (renaming changes only
    the header); the IR is what compiling the renamed source gives, and a broken source still
    gets diagnostics that name it."""
    from dataclasses import replace

    from attndsl.errors import AttnError
    from attndsl.synthesis.prompts import rename_program

    for name in SOURCES:
        p = _program(name)
        renamed = replace(p, name="renamed", source=rename_program(p.source, "renamed"))
        assert renamed.program() == compile_program(renamed.source) and renamed.program().name == "renamed"
        assert p.program() == compile_program(p.source)
    broken = library.LibraryProgram("broken", "program broken { 1 * [k == }", "user")
    with pytest.raises(AttnError, match="<broken>"):
        broken.program()


def test_summary_lines_report_quartiles_layers_and_support():
    choices = [library.HeadChoice(layer, head, "p", 0.5, 0.1 * (head + 1), 0.0, 7, 99)
               for layer in range(2) for head in range(4)]
    text = "\n".join(library.score_lines(choices, 5))
    assert "7 sequences, 99 tokens" in text and "per layer: 0:0.250 1:0.250" in text
    assert "mean held-out IoU 0.2500" in text
