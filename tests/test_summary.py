"""Head summaries on heads whose behaviour is known (attention made by programs)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from attndsl.extraction.features import table_from_words
from attndsl.language.interpreter import evaluate
from attndsl.synthesis.summary import summarize_head
from attndsl.language.validate import compile_program

SENTENCES = [
    "Once upon a time , there was a little cat . The cat was happy .",
    'Tom saw a big dog . He said : " Hello dog ! " The dog ran away .',
    "Lily liked the sun . The sun was warm and Lily smiled . Lily ran home .",
    "The bird sang a song . The bird sang again , and the bird flew .",
]
TABLES = [table_from_words(s.split()) for s in SENTENCES]


def head(source: str, tables=TABLES):
    program = compile_program(source)
    return [(t, evaluate(program, t)) for t in tables]


def test_previous_token_head():
    s = summarize_head(head("program p { fallback self\n 1 * [k == q - 1] }"), 2, 5)
    assert s.stats["mass_previous"] == pytest.approx(1.0)
    assert s.stats["mass_self"] == pytest.approx(0.0)
    assert s.stats["mean_distance"] == pytest.approx(1.0)
    assert s.stats["entropy"] == pytest.approx(0.0, abs=1e-12)
    assert s.n_rows == sum(len(t) - 1 for t in TABLES)
    # every shown pair is a previous-token pair, all in the top band
    assert [b.low for b in s.bands] == [0.9]
    assert all(ex.query - ex.key == 1 for b in s.bands for ex in b.examples)
    assert s.text.startswith("Layer 2, head 5:")
    assert "mass on k = q-1 (previous token): 1.000" in s.text


def test_sink_head_and_band_counts():
    s = summarize_head(head("program s { 0.6 * [k == 0] + 0.4 * [k == q] }"), 0, 0)
    assert s.stats["mass_first"] == pytest.approx(0.6)
    assert s.stats["mass_self"] == pytest.approx(0.4)
    # top 2.5 % of the causal entries in rows q >= 1
    entries = sum(len(t) * (len(t) + 1) // 2 - 1 for t in TABLES)
    assert s.n_top_pairs == int(np.ceil(0.025 * entries))
    assert sum(b.count for b in s.bands) == s.n_top_pairs
    assert sum(b.count_on_first for b in s.bands) > 0
    # key-0 pairs are all alike: at most two of them are shown per band
    assert all(sum(ex.key == 0 for ex in b.examples) <= 2 for b in s.bands)


def test_induction_and_duplicate_statistics():
    induction = summarize_head(head("program i { fallback first\n 1 * nearest(tok(k - 1) == tok(q)) }"), 1, 1)
    duplicate = summarize_head(head("program d { fallback first\n 1 * nearest(same_tok(q, k) and k < q) }"), 1, 2)
    assert induction.stats["mass_induction"] == pytest.approx(1.0)
    assert induction.stats["rows_with_induction_key"] > 0
    assert duplicate.stats["mass_same_token"] == pytest.approx(1.0)
    assert duplicate.stats["mass_induction"] < 0.5
    assert "[«" not in duplicate.text  # the key is never the query itself here


def test_punctuation_head_ranks_punctuation_keys():
    s = summarize_head(head('program p { 1 * nearest(tok(k) in {".", ",", "!"}) }'), 3, 3)
    assert s.stats["punct_share"] == pytest.approx(1.0)
    assert s.stats["punct_base_rate"] < 0.3
    assert {kt.token for kt in s.top_keys[:2]} <= {".", ",", "!"}
    assert s.top_keys[0].lift > 3


def test_text_stays_compact_on_long_sequences_and_is_deterministic():
    rng = np.random.default_rng(0)
    words = "the cat dog sat on a mat . and then it ran away , happy sun".split()
    tables = [table_from_words(list(rng.choice(words, 120))) for _ in range(40)]
    data = head("program m { 0.5 * [k == 0] + 0.3 * exp(-0.3 * d) + 0.2 * spread(punct(k)) }", tables)
    s = summarize_head(data, 7, 8, max_chars=4000)
    assert len(s.text) <= 4000
    assert s.n_top_pairs > 100  # many pairs, few shown
    assert sum(len(b.examples) for b in s.bands) < s.n_top_pairs
    again = summarize_head(data, 7, 8, max_chars=4000)
    assert again.text == s.text
    json.dumps(s.as_dict())  # JSON-ready


def test_float16_input_and_bad_shapes():
    data = head("program p { fallback self\n 1 * [k == q - 1] }")
    half = [(t, a.astype(np.float16)) for t, a in data]
    assert summarize_head(half, 0, 0).stats["mass_previous"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        summarize_head([(TABLES[0], np.eye(3))], 0, 0)
    with pytest.raises(ValueError, match="top_fraction"):
        summarize_head(data, 0, 0, top_fraction=0)
    empty = summarize_head([(table_from_words(["Hi"]), np.ones((1, 1)))], 0, 0)
    assert empty.n_rows == 0 and empty.n_top_pairs == 0 and "Layer 0, head 0" in empty.text
