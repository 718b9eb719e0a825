"""Glosses: one plain-English sentence per program, generated from the IR (no LLM)."""
from __future__ import annotations

import pytest

from attndsl import stdlib
from attndsl.extraction.batch import TokenBatch
from attndsl.explanations.categories import measure_shares
from attndsl.extraction.features import table_from_words
from attndsl.explanations.gloss import gloss
from attndsl.language.validate import compile_source

#: every standard-library program and the sentence its IR reads as
STDLIB_GLOSSES = {
    "induction": "The token after the previous copy of the current token; where nothing matches, the first token.",
    "duplicate": "The previous copy of the current token; where nothing matches, the token itself.",
    "same_text": "Earlier copies of the current token (ignoring case); where nothing matches, the token itself.",
    "sink_previous": "The first token (weight 0.7) and the previous token (weight 0.3).",
    "induction_sink": "The token after the previous copy of the current token (weight 0.8) and the first token "
                      "(weight 0.2).",
    "previous_or_sentence_start": "The previous token when the current token is not punctuation (weight 1) and the "
                                  "start of the current sentence when the current token is punctuation (weight 1); "
                                  "where nothing matches, the token itself.",
    "local_words": "Recent word starts, fading with distance (not the first token) (weight 1) and the token itself "
                   "(weight 0.25).",
    "sink": "The first token.",
    "previous": "The previous token; where nothing matches, the token itself.",
    "current": "The token itself.",
    "uniform": "Every token evenly.",
    "local_decay": "The last 5 tokens, fading with distance.",
    "last_punct": "The most recent punctuation mark; where nothing matches, the first token.",
    "sentence_start": "The start of the current sentence.",
    "same_word": "All pieces of the current word.",
    "word_start": "The start of the current word.",
    "last_sentence_end": "The most recent “.”, “!” or “?”; where nothing matches, the first token.",
    "previous_soft": "A softmax preferring the previous token (logit +4) and recent tokens, fading with distance "
                     "(logit -0.5); where nothing matches, the token itself.",
    "function_words": "A softmax preferring the words “a” or “the” (logit +1) and recent tokens, fading with "
                      "distance (logit -0.25), only over the keys its mask admits.",
}


def test_every_stdlib_program_has_its_expected_gloss():
    programs = {p.name: p for p in stdlib.programs()}
    assert set(programs) == set(STDLIB_GLOSSES)  # a new stdlib program needs its sentence here
    for name, program in programs.items():
        assert gloss(program) == STDLIB_GLOSSES[name], name


def _batch():
    words = ["Once upon a time , the cat saw the dog .", "The dog ran , and the cat ran after it !"]
    return TokenBatch.from_tables([table_from_words(s.split()) for s in words])


def test_gloss_with_shares_leads_with_the_largest_share():
    program = compile_source("program p { 0.25 * [k == q - 1] + 0.75 * [k == 0] }")[0]
    text = gloss(program, measure_shares(program, _batch()))
    assert text == "75 % on the first token; otherwise the previous token (25 %)."


def test_gloss_with_shares_names_the_query_condition_and_the_fallback():
    program = compile_source("program p { 1 * [punct(q)] * nearest(punct(k) and k < q) }")[0]
    text = gloss(program, measure_shares(program, _batch()))
    assert "the first token when nothing matches" in text
    assert "the most recent punctuation mark when the current token is punctuation" in text


def test_a_single_term_program_gets_all_the_attention():
    program = compile_source("program p { fallback self\n 1 * [k == q - 1] }")[0]
    assert gloss(program, measure_shares(program, _batch())) == "All attention on the previous token."


@pytest.mark.parametrize("source, words", [
    ('program p { 1 * nearest(lower(k) in {"he", "she", "it"} and k < q) }', "the most recent of “he”, “she” or “it”"),
    ("program p { 1 * [k == q - 2] }", "the token 2 back"),
    ("program p { uses syntax\n 1 * nearest(dep(k) == \"nsubj\") }", "dependency label is “nsubj”"),
    ("program p { 1 * len(k) }", "a pattern the gloss has no words for"),
])
def test_gloss_words(source, words):
    assert words.lower() in gloss(compile_source(source)[0]).lower()


def test_a_copy_rule_is_glossed_on_the_rows_where_it_fires():
    program = compile_source("program p { 0.5 * [k == 0] + 1 * nearest(same_tok(q, k) and k < q) }")[0]
    batch = TokenBatch.from_tables([table_from_words("the cat saw the dog and the cat ran .".split())])
    text = gloss(program, measure_shares(program, batch))
    # of the 9 rows q >= 1, 3 repeat a token ("the" twice, "cat"); the first "the" copies the first token
    # (all its mass is on the copy), the other two put 1 / 1.5 on theirs: (1 + 2/3 + 2/3) / 3 = 78 %
    assert text.endswith("where the token occurred before (33 % of tokens), 78 % on earlier copies.")
