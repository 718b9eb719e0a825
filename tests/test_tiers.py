"""Two tiers per head (short and full programs) and held-out IoU per length bucket."""
from __future__ import annotations

import numpy as np
import pytest

from attndsl.synthesis import library
from attndsl.synthesis.scoring import LENGTH_BUCKET_EDGES, length_bucket, length_buckets
from attndsl.language.validate import compile_program
from tests.test_library import SOURCES, _source_from, _tables

LONG = ("program long { 0.25 * [k == q - 1] + 0.25 * [k == q] + 0.25 * [k == 0] + 0.25 * [k == q - 2] }")
BIG_SET = ('program big_set { 1 * [k == 0] + 1 * [lower(k) in {"a", "b", "c", "d", "e", "f", "g", "h", "i"}] }')
EIGHT = ('program eight { 1 * [k == 0] + 1 * [lower(k) in {"a", "b", "c", "d", "e", "f", "g", "h"}] }')
BIG_LEXICON = ('program big_lex {\n combine softmax\n lexicon w { "a": 1, "b": 1, "c": 1, "d": 1, "e": 1, '
               '"f": 1, "g": 1, "h": 1, "i": 1 }\n 1 * w(k)\n}')


def _lib(name, source, origin="search", layer=None, head=None, iou=None, tier=None):
    from attndsl.language.parser import parse
    from attndsl.language.printer import format_module

    return library.LibraryProgram(name, format_module(parse(source)), origin, layer, head, iou, tier=tier)


def test_is_short_bounds_terms_sets_and_lexicons():
    assert library.is_short(compile_program(SOURCES["punct"]))
    assert library.is_short(compile_program(EIGHT))
    assert not library.is_short(compile_program(LONG))  # four terms
    assert not library.is_short(compile_program(BIG_SET))  # nine entries
    assert not library.is_short(compile_program(BIG_LEXICON))


def _choose(cands, heads, n=12):
    tables = _tables(n)
    source = _source_from(heads, tables)
    synth, held = list(range(0, n, 2)), list(range(1, n, 2))
    lib = library.build_library(cands, source, [tables[i] for i in synth], synth, screen_sequences=len(synth))
    choices = library.choose_best(lib, source, [tables[i] for i in synth], synth, [tables[i] for i in held], held)
    return lib, {(c.layer, c.head): c for c in choices}, tables, held


def test_each_head_gets_a_short_program_no_better_than_its_full_one():
    SOURCES["long"] = LONG
    try:
        cands = [_lib("long", LONG, layer=0, head=0, iou=0.9), _lib("previous", SOURCES["previous"], iou=0.5),
                 _lib("current", SOURCES["current"], iou=0.4)]
        lib, by_head, tables, held = _choose(cands, ["long", "current"])
    finally:
        del SOURCES["long"]
    programs = {p.name: p.program() for p in lib.programs}
    head0, head1 = by_head[(0, 0)], by_head[(0, 1)]
    assert head0.program_name == "long" and head0.heldout_iou == pytest.approx(1.0, abs=1e-6)
    assert head0.short_program_name in ("previous", "current") and head0.short_heldout_iou < head0.heldout_iou
    assert head1.program_name == head1.short_program_name == "current"  # the best is short: both tiers agree
    for c in by_head.values():
        assert library.is_short(programs[c.short_program_name])
        assert c.short_synthesis_iou <= c.synthesis_iou
        assert len(c.heldout_sequence_iou) == len(held)
        assert float(np.mean(c.heldout_sequence_iou)) == pytest.approx(c.heldout_iou, abs=1e-6)
        assert float(np.mean(c.short_heldout_sequence_iou)) == pytest.approx(c.short_heldout_iou, abs=1e-6)


def test_short_only_candidates_never_change_the_full_tier_unless_no_short_program_is_worse():
    base = [_lib("punct", SOURCES["punct"], layer=0, head=0, iou=0.9), _lib("sink", SOURCES["sink"], iou=0.1)]
    _, without, _, _ = _choose(base, ["previous", "punct"])
    extra = [_lib("previous", SOURCES["previous"], layer=0, head=0, iou=0.3, tier="short")]
    lib, with_extra, _, _ = _choose(base + extra, ["previous", "punct"])
    assert lib.n_full == 2 and [p.name for p in lib.programs][-1] == "previous"
    for key in without:  # the full tier's columns are exactly as without the short-only candidate
        assert with_extra[key].row()[:len(library.BEST_COLUMNS)] == without[key].row()[:len(library.BEST_COLUMNS)]
    # head 0 attends like "previous", which beats the full program: the short tier takes the best short
    # program that does not beat it
    assert with_extra[(0, 0)].program_name == with_extra[(0, 0)].short_program_name == "punct"
    # when every short program beats the full one, the best of them is both tiers
    SOURCES["long"] = LONG
    try:
        _, only, _, _ = _choose([_lib("long", LONG, layer=0, head=0, iou=0.9)] + extra, ["previous"])
    finally:
        del SOURCES["long"]
    assert only[(0, 0)].program_name == only[(0, 0)].short_program_name == "previous"
    assert only[(0, 0)].synthesis_iou == pytest.approx(1.0, abs=1e-6)


def test_short_only_candidate_behaving_like_a_library_program_is_dropped():
    base = [_lib("sink", SOURCES["sink"], iou=0.5), _lib("current", SOURCES["current"], iou=0.4)]
    extra = [_lib("sink_short", SOURCES["sink_twice"].replace("sink_twice", "sink_short"), iou=0.5, tier="short")]
    tables = _tables()
    lib = library.build_library(base + extra, _source_from(["current"], tables), tables, range(len(tables)))
    assert [p.name for p in lib.programs] == ["sink", "current"]


def test_best_csv_round_trips_both_tiers_and_reads_files_without_them(tmp_path):
    choices = [library.HeadChoice(0, 1, "long", 0.75, 0.7, 0.2, 10, 300, "short", 0.6, 0.55),
               library.HeadChoice(1, 0, "sink", 0.5, 0.4, 0.1, 10, 300)]
    library.write_library(tmp_path, [_lib("sink", SOURCES["sink"])], choices)
    assert library.read_best_csv(tmp_path / "best.csv") == choices
    lines = (tmp_path / "best.csv").read_text().splitlines()
    assert lines[0] == ",".join(library.BEST_CSV_COLUMNS)
    assert lines[1].endswith(",short,0.600000,0.550000") and lines[2].endswith(",,,")
    # a best.csv written before tiers: the first columns only
    old = tmp_path / "old.csv"
    old.write_text("\n".join(",".join(line.split(",")[:len(library.BEST_COLUMNS)]) for line in lines) + "\n")
    back = library.read_best_csv(old)
    assert [c.program_name for c in back] == ["long", "sink"] and not any(c.has_short for c in back)
    assert back[0].heldout_iou == 0.7
    assert not (tmp_path / "buckets.csv").exists()  # no per-sequence scores: no table


def test_tier_marker_round_trips_through_library_json(tmp_path):
    progs = [_lib("sink", SOURCES["sink"]), _lib("current", SOURCES["current"], layer=0, head=1, tier="short")]
    library.write_library(tmp_path, progs, None)
    assert library.read_library(tmp_path / "library.attn") == progs
    assert "tier" not in (tmp_path / "library.json").read_text().split('"current"')[0]


def test_length_buckets_are_defined_once_and_cover_every_length():
    assert length_bucket(1) == (1, 8) and length_bucket(8) == (1, 8) and length_bucket(9) == (9, 16)
    assert length_bucket(64) == (33, 64) and length_bucket(65) == (65, 128)
    assert length_bucket(LENGTH_BUCKET_EDGES[-1] + 1) == (LENGTH_BUCKET_EDGES[-1] + 1, None)
    lengths = [4, 7, 12, 40, 3000]
    full = np.array([[1.0, 0.8, 0.5, 0.2, 0.1], [0.6, 0.6, 0.3, 0.4, 0.3]])
    rows = length_buckets(lengths, {"full": full})
    assert [r.label for r in rows] == ["1-8", "9-16", "33-64", f"{LENGTH_BUCKET_EDGES[-1] + 1}+"]
    assert [r.sequences for r in rows] == [2, 1, 1, 1] and [r.tokens for r in rows] == [11, 12, 40, 3000]
    assert rows[0].means["full"] == pytest.approx((1.0 + 0.8 + 0.6 + 0.6) / 4)
    assert rows[1].means["full"] == pytest.approx(0.4)


def test_bucket_table_and_summary_from_scored_choices(tmp_path):
    SOURCES["long"] = LONG
    try:
        cands = [_lib("long", LONG, layer=0, head=0, iou=0.9), _lib("current", SOURCES["current"], iou=0.4)]
        lib, by_head, tables, held = _choose(cands, ["long", "current"])
    finally:
        del SOURCES["long"]
    choices = list(by_head.values())
    library.write_library(tmp_path, lib.programs, choices)
    text = (tmp_path / "buckets.csv").read_text().splitlines()
    assert text[0] == ("bucket,min_tokens,max_tokens,sequences,tokens,mean_heldout_iou_full,"
                       "mean_heldout_iou_short")
    rows = library.bucket_rows(choices)
    assert sum(r.sequences for r in rows) == len(held)
    assert sum(r.tokens for r in rows) == sum(len(tables[i]) for i in held)
    weighted = sum(r.means["full"] * r.sequences for r in rows) / len(held)
    assert weighted == pytest.approx(np.mean([c.heldout_iou for c in choices]), abs=1e-6)
    summary = "\n".join(library.score_lines(choices, len(lib.programs)))
    assert "short programs (<= 3 terms, sets <= 8 entries): 2/2 heads" in summary
    assert "held-out IoU by length" in summary


def test_head_gate_truncation_keeps_the_most_useful_words():
    from attndsl.synthesis.search import HeadGate

    gate = HeadGate("k", tuple(sorted("abcdefghijkl")), ("[k > 0]",), tuple("lkjihgfedcba"))
    short = gate.truncated(8)
    assert short.words == tuple(sorted("lkjihgfe")) and short.pairs == gate.pairs
    assert gate.truncated(12) is gate


def test_search_writes_a_short_variant_within_the_bounds():
    from attndsl.synthesis import search
    from attndsl.language.interpreter import evaluate
    from attndsl.synthesis.scoring import DenseAttention
    from tests.test_search import _noisy, _tables as sentence_tables

    tables = sentence_tables(20, seed=3)
    # four kinds of mass: the full program needs more terms than the short tier allows
    program = compile_program("program p { 0.3 * [k == q - 1] + 0.25 * [k == q] + 0.2 * [k == 0] "
                              "+ 0.25 * nearest(punct(k) and k < q) }")
    rng = np.random.default_rng(0)
    source = DenseAttention([_noisy(evaluate(program, t), rng, 0.2)[None, None].astype(np.float32) for t in tables])
    settings = search.SearchSettings(max_terms=6, screen_sequences=10, seed=0)
    (result,) = search.search_heads(source, tables, list(range(len(tables))), [(0, 0)], settings, progress=False)
    full, short = compile_program(result.source), compile_program(result.short_source)
    assert len(full.terms) > library.SHORT_MAX_TERMS
    assert short.name == "L0_H0_short" and library.is_short(short)
    assert 0.0 < result.short_fit_iou <= result.fit_iou
    assert search.SearchResult.from_dict(result.as_dict()) == result


def test_mix_lengths_alternates_single_sentences_and_packed_text():
    from attndsl.extraction.corpus import Corpus, load_corpus, make_sequences
    from tests.tiny import bpe_tokenizer

    docs = load_corpus("builtin").documents[:4]
    tokenizer = bpe_tokenizer()

    def texts(documents, **kw):
        return [s.text for s in make_sequences(Corpus("t", list(documents)), tokenizer, max_tokens=40, **kw)]

    mixed = texts(docs, mix_lengths=True)
    expected = []
    for number, doc in enumerate(docs):
        expected += texts([doc], max_sentences=1) if number % 2 == 0 else texts([doc])
    assert mixed == expected
    assert texts(docs[1:2]) != texts(docs[1:2], max_sentences=1)  # the packed half really is longer
    assert texts(docs, mix_lengths=True, max_sentences=2)[:len(texts(docs[:1], max_sentences=2))] == \
        texts(docs[:1], max_sentences=2)
    assert texts(docs) == texts(docs, mix_lengths=False)  # off by default: as before
