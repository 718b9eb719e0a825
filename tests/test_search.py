"""The enumerative search: its objective kernel, its term pool, and that it finds known structure."""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from attndsl.synthesis import search
from attndsl.extraction.batch import TokenBatch
from attndsl.extraction.features import table_from_words
from attndsl.language.interpreter import evaluate
from attndsl.language.parser import parse
from attndsl.language.printer import format_module
from attndsl.synthesis.scoring import DenseAttention, iou_dense, score
from attndsl.language.validate import compile_program, compile_source

SENTENCES = [
    "Once upon a time , there was a little dog named Max .",
    "Max loved to run in the park , and he was happy .",
    "One day , Max saw a big red ball !",
    "\" Can I play ? \" he asked .",
    "The girl said yes , and they played all day .",
    "Mom called them home for dinner at six .",
    "Tom and Sue went to the sea , and they found a shell .",
    "The sun was warm and the birds sang .",
]


def _tables(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picks = rng.choice(len(SENTENCES), size=3, replace=False)
        words = " ".join(SENTENCES[i] for i in picks).split()
        out.append(table_from_words(words[: 16 + int(rng.integers(0, 16))]))
    return out


def _noisy(matrix: np.ndarray, rng, noise: float) -> np.ndarray:
    """Row-stochastic, causal: the matrix times positive noise, renormalised."""
    mixed = np.tril(matrix * rng.uniform(1 - noise, 1 + noise, size=matrix.shape) + 1e-3)
    return mixed / mixed.sum(axis=1, keepdims=True)


def _known_heads(tables, seed: int = 0):
    """Head 0: 0.7 previous token + 0.3 sink.  Head 1: 0.6 most recent punctuation + 0.4 sink."""
    prev = compile_program("program p { 0.7 * [k == q - 1] + 0.3 * [k == 0] }")
    punct = compile_program("program p { 0.6 * nearest(punct(k) and k < q) + 0.4 * [k == 0] }")
    rng = np.random.default_rng(seed)
    mats = []
    for t in tables:
        heads = [_noisy(evaluate(p, t), rng, 0.3) for p in (prev, punct)]
        mats.append(np.stack(heads)[None].astype(np.float32))  # [1 layer, 2 heads, n, n]
    return DenseAttention(mats)


SMALL = search.SearchSettings(max_terms=4, screen_sequences=12, seed=0)


@pytest.fixture(scope="module")
def synthetic():
    tables = _tables(24)
    source = _known_heads(tables)
    results = search.search_heads(source, tables, list(range(len(tables))), [(0, 0), (0, 1)], SMALL, progress=False)
    return tables, source, results


def test_pool_terms_all_compile_and_print_canonically():
    specs = search.term_pool(_tables(4), n_words=4)
    terms = search.compile_terms(specs)
    assert len(terms) == len(specs) > 100
    assert len(set(terms)) == len(terms), "the pool must not hold the same term twice"
    for gate in search.GATES:
        search.compile_terms([search.gated(specs[0], gate)])


def test_search_recovers_previous_token_plus_sink(synthetic):
    tables, source, results = synthetic
    result = results[0]
    program = compile_program(result.source)
    # terms are printed by decreasing share of the row mass: the first is the main term
    assert program.terms[0].factors == compile_program("program p { 1 * [k == q - 1] }").terms[0].factors
    sink = compile_program("program p { 1 * [k == 0] }").terms[0].factors
    assert sink in [t.factors for t in program.terms]
    iou = score([program], source, TokenBatch.from_tables(tables)).iou[0, 0, 0]
    assert iou > 0.85
    assert abs(iou - result.fit_iou) < 0.01  # the printed program scores what the fit said


def test_search_recovers_nearest_punctuation(synthetic):
    _, _, results = synthetic
    program = compile_program(results[1].source)
    expected = compile_program("program p { 1 * nearest(punct(k) and k < q) }").terms[0].factors
    sink = compile_program("program p { 1 * [k == 0] }").terms[0].factors
    # rows with no punctuation before them are all sink, so the sink may well be the main term here
    assert {t.factors for t in program.terms[:2]} == {expected, sink}
    assert results[1].fit_iou > 0.8


def test_result_source_round_trips_through_the_parser(synthetic):
    _, _, results = synthetic
    for result in results:
        assert format_module(parse(result.source)) == result.source
        assert len(compile_program(result.source).terms) <= SMALL.max_terms
        assert result.path_iou == tuple(sorted(result.path_iou))  # greedy steps never lose IoU


def test_search_is_deterministic_for_a_seed(synthetic):
    tables, source, results = synthetic
    again = search.search_heads(source, tables, list(range(len(tables))), [(0, 0), (0, 1)], SMALL, progress=False)
    assert [r.source for r in again] == [r.source for r in results]


def test_screen_kernel_matches_direct_iou():
    """The screening objective equals mean soft IoU of the normalised program, computed densely."""
    tables = _tables(6, seed=3)
    source = _known_heads(tables, seed=3)
    specs = search.term_pool(tables, n_words=2)
    data = search.prepare(tables, np.arange(len(tables)), specs)
    column = source.causal_block(range(len(tables)))[:, 1].astype(np.float64)
    fit = search._HeadFit(data, column, SMALL)
    sink = search._sink_index(data)
    fit.comps, fit.weights = [search.Component(sink)], [1.0]
    fit._rebuild()
    cands = [search.Component(t) for t in range(0, len(data.specs), 7)]
    cs = np.array([[0.25, 1.0, 4.0]] * len(cands))
    got = fit.screen(cands, cs)
    for i, comp in enumerate(cands):
        for j, c in enumerate(cs[i]):
            values = fit.score + c * fit.value(comp)
            ious = []
            for s, table in enumerate(tables):
                n = len(table)
                lo = data.batch.tri_offsets[s]
                m = np.zeros((n, n))
                m[np.tril_indices(n)] = values[lo:lo + n * (n + 1) // 2]
                m = np.clip(m, 0, None)
                sums = m.sum(axis=1, keepdims=True)
                m = np.where(sums > 0, m / np.where(sums > 0, sums, 1), 0)
                m[sums[:, 0] == 0, 0] = 1.0
                ious.append(iou_dense(source.matrices[s][0, 1], m))
            assert got[i, j] == pytest.approx(np.mean(ious), abs=1e-5)


def test_head_gates_find_the_tokens_a_head_prefers():
    tables = _tables(12, seed=5)
    # a head that attends to the sink after "," and to itself elsewhere
    program = compile_program('program p { 1 * [tok(q) == ","] * [k == 0] + 1 * [not tok(q) == ","] * [k == q] }')
    mats = [evaluate(program, t)[None, None].astype(np.float32) for t in tables]
    data = search.prepare(tables, np.arange(len(tables)), search.term_pool(tables, 2))
    column = DenseAttention(mats).causal_block(range(len(tables)))[:, 0]
    gates = search.head_gates(data, column)
    sink_gates = [g for g in gates if g.side == "q" and g.pairs == ("[k == 0]",)]
    assert sink_gates and "," in sink_gates[0].words
    compile_source(f"program g {{ 1 * [{sink_gates[0].text}] }}")


@pytest.mark.slow
def test_smollm2_previous_token_and_sink_heads_are_explained(tmp_path):
    """On real SmolLM2 attention, the strongest previous-token head's program has the
    previous-token term as its main term, and the strongest sink head's the first-token term."""
    from pathlib import Path

    from attndsl.extraction.extract import extract

    corpus = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories" / "train-sample.txt"
    if not corpus.exists():
        pytest.skip("TinyStories sample not available")
    try:
        store = extract(tmp_path / "run", "smollm2", str(corpus), max_sequences=64, progress=False)
    except Exception as error:  # the embedded model is missing
        pytest.skip(f"SmolLM2 not available: {error}")
    synth = store.synthesis_indices
    tables = store.tables(synth)
    block = store.causal_block(synth)
    batch = TokenBatch.from_tables(tables)
    _, q, k = batch.entry_index()
    rows = q >= 1
    previous_mass = block[rows & (k == q - 1)].mean(axis=0)
    sink_mass = block[rows & (k == 0)].mean(axis=0)
    prev_head = divmod(int(np.argmax(previous_mass)), store.n_heads)
    sink_head = divmod(int(np.argmax(sink_mass)), store.n_heads)
    results = search.search_heads(store, tables, synth, [prev_head, sink_head],
                                  search.SearchSettings(screen_sequences=24), progress=False)
    prev_main = compile_program(results[0].source).terms[0].factors
    sink_main = compile_program(results[1].source).terms[0].factors
    assert prev_main == compile_program("program p { 1 * [k == q - 1] }").terms[0].factors
    assert sink_main == compile_program("program p { 1 * [k == 0] }").terms[0].factors


def _search_one(truth, tables, settings):
    """The search's result for one head whose attention is exactly ``truth`` on ``tables``, and that head."""
    mats = [np.stack([evaluate(truth, t)])[None].astype(np.float32) for t in tables]
    source = DenseAttention(mats)
    (result,) = search.search_heads(source, tables, list(range(len(tables))), [(0, 0)], settings, progress=False)
    return result, source


def _printed_iou(source_text, source, tables):
    """Held-in IoU of the printed program ``source_text`` against the head of ``source`` on ``tables``."""
    return score([compile_program(source_text)], source, TokenBatch.from_tables(tables)).iou[0, 0, 0]


def _learned_tables(source_text):
    """The lexicons of a printed program: name → {word: weight}, in printed order."""
    return {lex.name: {e.key: e.weight for e in lex.entries} for lex in parse(source_text).programs[0].lexicons}


def test_softmax_fit_recovers_a_softmax_head():
    """A head that *is* a softmax program: the softmax fit finds its terms and scores what it says."""
    tables = _tables(24, seed=1)
    truth = compile_program("program p {\n combine softmax\n 4 * [k == q - 1] + 3 * [k == 0]\n}")
    settings = search.SearchSettings(max_terms=2, screen_sequences=12, seed=0, softmax_terms=4)
    result, source = _search_one(truth, tables, settings)
    program = compile_program(result.softmax_source)
    assert program.form == "softmax" and len(program.terms) <= 4
    assert format_module(parse(result.softmax_source)) == result.softmax_source
    iou = _printed_iou(result.softmax_source, source, tables)
    assert iou > 0.95
    assert abs(iou - result.softmax_fit_iou) < 0.01  # rounded weights score what the fit said
    assert iou > _printed_iou(result.source, source, tables)
    again = search.SearchResult.from_dict(result.as_dict())
    assert again == result


def test_word_tables_stay_only_where_they_help_sequences_they_were_not_fitted_on(monkeypatch):
    """A head that reads no words: hundreds of word weights still raise its synthesis IoU a little by
    memorising the sequences, so tables are checked on sequences set aside while they are fitted."""
    from attndsl.synthesis import softmax_fit

    tables = _tables(24, seed=1)
    truth = compile_program("program p {\n combine softmax\n 4 * [k == q - 1] + 3 * [k == 0]\n}")
    settings = search.SearchSettings(max_terms=2, screen_sequences=12, seed=0, softmax_terms=4)
    checked, _ = _search_one(truth, tables, settings)
    assert not parse(checked.softmax_source).programs[0].lexicons
    monkeypatch.setattr(softmax_fit, "TABLE_CHECK_EVERY", 10 ** 9)  # nothing set aside: the check is off
    unchecked, _ = _search_one(truth, tables, settings)
    assert "key_words" in _learned_tables(unchecked.softmax_source)


def test_rows_split_sets_whole_sequences_aside():
    from attndsl.synthesis.softmax_fit import _Rows

    lens = [1, 2, 3, 1, 2, 1, 2, 3, 4, 1]  # rows of 4 sequences: [1 2 3] [1 2] [1 2 3 4] [1]
    seq = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    rows = _Rows(starts, lens, seq, np.array([6.0, 4.0, 8.0, 2.0]))
    rng = np.random.default_rng(0)
    A, P = rows.softmax(rng.normal(size=sum(lens))), rows.softmax(rng.normal(size=sum(lens)))
    kept, kept_rows, aside, aside_rows = rows.split(2)  # sequences 1 and 3 aside
    assert np.array_equal(kept, ~aside) and kept.sum() == 1 + 2 + 3 + 1 + 2 + 3 + 4
    assert list(kept_rows.seq) == [0, 0, 0, 1, 1, 1, 1] and list(aside_rows.seq) == [0, 0, 1]
    whole = rows.row_sum(np.minimum(A, P))
    per = np.bincount(rows.seq, weights=whole) / (rows.two_n - np.bincount(rows.seq, weights=whole))
    assert np.isclose(kept_rows.iou(A[kept], P[kept]), per[[0, 2]].mean())
    assert np.isclose(aside_rows.iou(A[aside], P[aside]), per[[1, 3]].mean())
    assert rows.split(4) is None  # one sequence aside is too few to judge by


def test_lexicon_conditions_mean_what_their_source_says():
    """Each condition a word table may use (`LEXICON_CONDITIONS`): the fit's NumPy mask holds on
    exactly the entries where the DSL source, compiled and evaluated by the kernels, is non-zero."""
    from attndsl.synthesis.search.greedy import word_data
    from attndsl.synthesis.search.pool import TermSpec
    from attndsl.synthesis.softmax_fit import CONTEXT_LEXICONS, LEXICON_CONDITIONS, LEXICONS, PAIRS

    tables = _tables(6, seed=2)
    used = {spec.where for spec in LEXICONS + CONTEXT_LEXICONS} | {spec.where for spec in PAIRS}
    assert used <= set(LEXICON_CONDITIONS)
    for where in LEXICON_CONDITIONS:
        data = search.prepare(tables, np.arange(len(tables)), [TermSpec(where, "test")])
        mask = word_data(data).mask(where)
        assert mask.dtype == bool and len(mask) == data.n_entries
        np.testing.assert_array_equal(mask, data.values[0] != 0, err_msg=where)
        factor, value = word_data(data).factor(where), data.values[0].astype(np.float64)
        np.testing.assert_allclose(factor / factor.max(), value / value.max(), rtol=1e-6, err_msg=where)


def test_softmax_fit_learns_a_far_key_word_table():
    """A head that reads a key word only when it is far back: the fit learns it as ``far_words``,
    not as a word it prefers at every distance."""
    tables = _tables(64, seed=4)
    truth = compile_program(
        'program p {\n combine softmax\n lexicon fav {\n "dog": 3,\n "max": 3\n }\n'
        ' 2 * [k == q - 1] + 1 * [k > 0] * [d >= 8] * fav(k)\n}'
    )
    settings = search.SearchSettings(max_terms=2, screen_sequences=48, seed=0, softmax_terms=3)
    result, source = _search_one(truth, tables, settings)
    tables_by_name = _learned_tables(result.softmax_source)
    assert "[k > 0] * [d >= 8] * far_words(k)" in result.softmax_source
    far = tables_by_name["far_words"]
    assert far.get("dog", 0) > 1 and far.get("max", 0) > 1
    assert abs(tables_by_name.get("key_words", {}).get("dog", 0)) < 0.5 * far["dog"]
    assert _printed_iou(result.softmax_source, source, tables) > 0.97


def test_softmax_fit_gates_a_base_term_by_the_query():
    """A softmax head that looks at the previous token only from a capitalised word: the fit picks the
    gated term ``[cap(q)] * [k == q - 1]`` (a product no single pool term holds)."""
    tables = _tables(32, seed=5)
    truth = compile_program("program p {\n combine softmax\n 5 * [cap(q)] * [k == q - 1] + 2 * [k == 0]\n}")
    common = dict(max_terms=2, screen_sequences=16, seed=0, softmax_terms=4, softmax_lexicons=False)
    ious = {}
    for gates in (True, False):
        result, source = _search_one(truth, tables, search.SearchSettings(softmax_gates=gates, **common))
        ious[gates] = _printed_iou(result.softmax_source, source, tables)
        if gates:
            assert "[cap(q)] * [k == q - 1]" in result.softmax_source
            assert format_module(parse(result.softmax_source)) == result.softmax_source
            assert abs(ious[gates] - result.softmax_fit_iou) < 0.01
    assert ious[True] > 0.97 and ious[True] > ious[False] + 0.02


def _with_fake_syntax(table):
    """Every token a NOUN whose head is the previous token (the first heads itself)."""
    n = len(table)
    return table.with_syntax(["NOUN"] * n, ["nsubj"] * n, [max(i - 1, 0) for i in range(n)])


def test_syntax_terms_join_the_pool_only_when_every_sequence_has_syntax():
    plain = _tables(4)
    parsed = [_with_fake_syntax(t) for t in plain]
    assert not [s for s in search.term_pool(plain) if s.family == "syntax"]
    syntax_specs = [s for s in search.term_pool(parsed) if s.family == "syntax"]
    assert "[k == head(q)]" in [s.factors for s in syntax_specs]
    assert any("upos(k)" in s.factors for s in syntax_specs) and any("dep(k)" in s.factors for s in syntax_specs)
    assert not [s for s in search.term_pool(plain[:2] + parsed[2:]) if s.family == "syntax"]
    terms = search.compile_terms(syntax_specs)  # each compiles (with `uses syntax` added)
    assert len(terms) == len(syntax_specs)
    assert set(search.pool.SYNTAX_GATES) <= set(search.pool.gate_conditions(parsed))
    assert search.pool.gate_conditions(plain) == search.GATES


def test_search_finds_a_syntactic_head_and_prints_uses_syntax():
    """A head that attends to each token's syntactic head (here: a random earlier word)."""
    rng = np.random.default_rng(3)
    tables = []
    for t in _tables(24, seed=2):
        n = len(t)
        heads = [0] + [int(rng.integers(0, i)) for i in range(1, n)]
        tables.append(t.with_syntax(["NOUN"] * n, ["dep"] * n, heads))
    truth = compile_program("program p { uses syntax\n 0.8 * [k == head(q)] + 0.2 * [k == 0] }")
    settings = search.SearchSettings(max_terms=3, screen_sequences=12, seed=0, softmax_terms=0)
    result, _ = _search_one(truth, tables, settings)
    program = compile_program(result.source)
    assert program.uses_syntax and "head(q)" in result.source
    assert result.fit_iou > 0.95


def test_softmax_fit_learns_a_key_word_table():
    """A softmax head that prefers a few key words: the fit learns them as a lexicon, printed readably."""
    tables = _tables(64, seed=4)
    truth = compile_program(
        'program p {\n combine softmax\n lexicon fav {\n "dog": 3,\n "ball": 3,\n "park": 2.5\n }\n'
        ' 2 * [k == q - 1] + 1 * fav(k)\n}'
    )
    common = dict(max_terms=2, screen_sequences=48, seed=0, softmax_terms=3)
    ious = {}
    for lexicons in (True, False):
        settings = search.SearchSettings(softmax_lexicons=lexicons, **common)
        result, source = _search_one(truth, tables, settings)
        ious[lexicons] = _printed_iou(result.softmax_source, source, tables)
        if lexicons:
            assert format_module(parse(result.softmax_source)) == result.softmax_source
            (table,) = [lex for lex in parse(result.softmax_source).programs[0].lexicons if lex.name == "key_words"]
            learned = {e.key: e.weight for e in table.entries}
            assert learned.get("dog", 0) > 1 and learned.get("ball", 0) > 1 and learned.get("park", 0) > 1
            assert len(table.entries) <= settings.lexicon_entries
            keys = [e.key for e in table.entries]
            # the three come first (the context table `after_words` may take part of "dog" and "ball",
            # which follow "little" and "red" in these sentences, so their order is not pinned)
            assert set(keys[:3]) == {"ball", "dog", "park"}
            assert [abs(e.weight) for e in table.entries] == sorted((abs(e.weight) for e in table.entries), reverse=True)
            assert "key_words(k)" in result.softmax_source
    assert ious[True] > 0.97 and ious[True] > ious[False] + 0.02


def test_softmax_fit_learns_a_word_pair_table():
    """A head whose preferred keys depend on the query word ('he' reads names, '.' reads 'and'):
    key-only tables cannot say it; the fit learns a query table times a key table, printed as
    ``[k > 0] * [k < q] * asks(q) * offers(k)``, and it scores above the same fit without pairs."""
    tables = _tables(64, seed=4)
    truth = compile_program(
        'program p {\n combine softmax\n lexicon who {\n "he": 1,\n "they": 1\n }\n'
        ' lexicon names {\n "max": 4,\n "tom": 4,\n "sue": 4\n }\n'
        ' 1.5 * [k == q - 1] + 1 * [k > 0] * [k < q] * who(q) * names(k)\n}'
    )
    common = dict(max_terms=2, screen_sequences=48, seed=0, softmax_terms=3)
    ious = {}
    for pairs in (2, 0):
        result, source = _search_one(truth, tables, search.SearchSettings(word_pairs=pairs, **common))
        ious[pairs] = _printed_iou(result.softmax_source, source, tables)
        if pairs:
            assert "[k > 0] * [k < q] * asks(q) * offers(k)" in result.softmax_source
            assert format_module(parse(result.softmax_source)) == result.softmax_source
            assert abs(ious[pairs] - result.softmax_fit_iou) < 0.01  # rounded tables score what the fit said
            lexicons = _learned_tables(result.softmax_source)
            assert all(len(table) <= 64 for table in lexicons.values())
            # what the head reads is the sum over pair terms of weight × query word × key word
            import re
            terms = re.findall(r"([\d.]+) \* \[k > 0\] \* \[k < q\] \* (\w+)\(q\) \* (\w+)\(k\)", result.softmax_source)

            def logit(a, b):
                return sum(float(c) * lexicons[qt].get(a, 0) * lexicons[kt].get(b, 0) for c, qt, kt in terms)

            named = {(a, b): logit(a, b) for a in ("he", "they") for b in ("max", "tom", "sue")}
            assert min(named.values()) > 1, named
            assert abs(logit("he", "the")) < 0.5 and abs(logit("the", "max")) < 0.5
    assert ious[2] > 0.99 and ious[2] > ious[0] + 0.01, ious  # 0.995 against 0.977 without pairs


def _random_syntax(tables, seed: int):
    """``tables`` with random parts of speech, dependency labels and heads (enough of each pair)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in tables:
        n = len(t)
        upos = [str(x) for x in rng.choice(["NOUN", "VERB", "DET", "ADJ", "PRON"], size=n)]
        dep = [str(x) for x in rng.choice(["nsubj", "obj", "det", "amod", "ROOT"], size=n)]
        out.append(t.with_syntax(upos, dep, [0] + [int(rng.integers(0, i)) for i in range(1, n)]))
    return out


def test_tag_pair_columns_mean_what_their_printed_terms_say():
    """Each (query tag, key tag) pair's column in the fit (`WordData.tag_pair_columns`) equals its
    printed term, compiled and evaluated by the kernels, on every causal entry."""
    from attndsl.synthesis.search.greedy import word_data
    from attndsl.synthesis.search.pool import TermSpec
    from attndsl.synthesis.softmax_fit import SENTENCE_TAG_PAIRS, TAG_PAIRS, SoftmaxSettings, tag_pair_factors

    tables = _random_syntax(_tables(6, seed=2), seed=5)
    assert all(t.sent.max() > 0 for t in tables)  # several sentences: the same-sentence condition matters
    for spec in TAG_PAIRS + SENTENCE_TAG_PAIRS:
        probe = search.prepare(tables, np.arange(len(tables)), [TermSpec("[k == 0]", "test")])
        pairs = word_data(probe).tag_pair_candidates(spec, SoftmaxSettings(lexicon_min_count=1))
        assert len(pairs) >= 10 and len(set(pairs)) == len(pairs)
        columns = word_data(probe).tag_pair_columns(spec, pairs).toarray()
        data = search.prepare(tables, np.arange(len(tables)), [TermSpec(tag_pair_factors(spec, a, b), "test")
                                                               for a, b in pairs])
        assert set(np.unique(columns)) <= {0.0, 1.0}  # indicators, as the printed 0/1 conditions
        np.testing.assert_array_equal(columns != 0, data.values != 0)
        assert (columns.sum(axis=0) <= 1).all()  # an entry has one pair


def test_tag_tables_beyond_the_lexicon_limit_print_as_terms():
    """More tags than a program may declare lexicons: the first tags get word tables, the rest
    one term per (tag, word) pair, so the printed program still compiles and says every pair."""
    from attndsl.language import ir
    from attndsl.synthesis.softmax_fit import (
        PAIRS, TAG_PAIRS, LearnedLexicon, LearnedPair, softmax_source,
    )

    reads, readers = TAG_PAIRS[2], TAG_PAIRS[3]
    many = [(f"T{i}", w) for i in range(30) for w in ("dog", "cat")]
    lexicons = (LearnedLexicon(reads, tuple(((tag, word), 1.0 + i / 100) for i, (tag, word) in enumerate(many))),
                LearnedLexicon(readers, tuple(((word, tag), -0.5) for tag, word in many)))
    pair = LearnedPair(PAIRS[0], (("he", 1.0),), (("max", 2.0),), 1.5)
    source = softmax_source("p", ["[k == 0]"], [1.0], [1.0], lexicons, (pair,))
    compile_program(source)  # valid
    program = parse(source).programs[0]
    assert len(program.lexicons) == ir.MAX_LEXICONS
    assert source.startswith("program p {")
    assert '[k > 0] * [k < q] * [lower(q) == "dog"] * [upos(k) == "T9"]' in source  # the last tags
    assert "asks(q) * offers(k)" in source  # the word pair keeps its two tables
    declared = sum(len(lex.entries) for lex in program.lexicons if lex.name.endswith(("_reads", "_readers")))
    as_terms = source.count("[lower(")
    assert declared + as_terms == 2 * len(many)


def test_softmax_fit_learns_a_tag_pair_table():
    """A head whose verbs read nouns (and nothing else reads them more): neither a query tag nor
    a key tag alone says it; the tag-pair table does, printed as one readable term per pair,
    and it scores above the same fit without tag pairs."""
    tables = _random_syntax(_tables(48, seed=4), seed=6)
    truth = compile_program(
        'program p {\n uses syntax\n combine softmax\n 1.5 * [k == q - 1]'
        ' + 3 * [k > 0] * [k < q] * [upos(q) == "VERB"] * [upos(k) == "NOUN"]\n}'
    )
    common = dict(max_terms=2, screen_sequences=24, seed=0, softmax_terms=3, word_pairs=0)
    ious = {}
    for entries in (48, 0):
        result, source = _search_one(truth, tables, search.SearchSettings(tag_pair_entries=entries, **common))
        ious[entries] = _printed_iou(result.softmax_source, source, tables)
        pair = '[k > 0] * [k < q] * [upos(q) == "VERB"] * [upos(k) == "NOUN"]'
        assert (pair in result.softmax_source) == bool(entries)
        if entries:
            assert parse(result.softmax_source).programs[0].name == "L0_H0_softmax"
            assert format_module(parse(result.softmax_source)) == result.softmax_source
            assert abs(ious[entries] - result.softmax_fit_iou) < 0.01  # rounded weights score what the fit said
            # the IR the fit handed to the library is what compiling the printed source gives
            from attndsl.synthesis.library import _CACHE, _compiled

            assert any(program.terms == compile_program(result.softmax_source).terms for program in _CACHE.values())
            assert _compiled(result.softmax_source, "x") == compile_source(result.softmax_source)[0]
    assert ious[48] > 0.97 and ious[48] > ious[0] + 0.01, ious


def test_softmax_fit_learns_which_words_the_preferred_keys_follow():
    """A head that reads the word after 'the' or 'a' (the noun of a noun phrase, whatever the noun
    is): the fit learns the table of the key's *previous* word, ``[k > 0] * after_words(k - 1)``,
    which no table of key words can say for nouns it has not seen."""
    tables = _tables(64, seed=4)
    truth = compile_program(
        'program p {\n combine softmax\n lexicon det {\n "the": 3,\n "a": 3\n }\n'
        ' 1.5 * [k == q - 1] + 1 * [k > 0] * det(k - 1)\n}'
    )
    common = dict(max_terms=2, screen_sequences=48, seed=0, softmax_terms=3, word_pairs=0)
    result, source = _search_one(truth, tables, search.SearchSettings(**common))
    assert "[k > 0] * after_words(k - 1)" in result.softmax_source
    assert format_module(parse(result.softmax_source)) == result.softmax_source
    after = _learned_tables(result.softmax_source)["after_words"]
    assert after.get("the", 0) > 1.5 and after.get("a", 0) > 1.5, after
    assert list(after)[:2] in (["the", "a"], ["a", "the"])  # the largest weights come first
    iou = _printed_iou(result.softmax_source, source, tables)
    assert iou > 0.97 and abs(iou - result.softmax_fit_iou) < 0.01


def test_softmax_fits_in_worker_processes_equal_the_fits_on_one_thread(synthetic):
    """`search_heads` fits softmax programs beside the next head's search, in forked worker
    processes (`fit_workers`) or on threads; each head's result is the same whichever and however
    many, results come back (and are saved) in head order, and the parent learns each program's IR
    (the library does not parse it again)."""
    from attndsl.synthesis import library
    from attndsl.synthesis.prompts import rename_program
    from attndsl.synthesis.search.fit_workers import can_fork

    tables, source, _ = synthetic
    settings = search.SearchSettings(max_terms=3, screen_sequences=12, seed=0, softmax_terms=4, softmax_workers=2)
    heads = [(0, 0), (0, 1), (0, 0)]
    seen = []
    library._CACHE.clear()
    spread = search.search_heads(source, tables, list(range(len(tables))), heads, settings,
                                 on_result=seen.append, progress=False)
    assert [(r.layer, r.head) for r in spread] == heads and seen == spread
    for r in spread:
        assert rename_program(r.softmax_source, library._ANONYMOUS) in library._CACHE
    one = search.search_heads(source, tables, list(range(len(tables))), heads,
                              replace(settings, softmax_workers=1, fit_processes=False), progress=False)
    for a, b in zip(spread, one):
        assert a.softmax_source and a.softmax_source == b.softmax_source and a.source == b.source
        assert a.softmax_fit_iou == b.softmax_fit_iou
    assert "softmax_workers" not in settings.as_dict()  # how the work is spread is not a run setting
    assert "fit_processes" not in settings.as_dict()
    assert can_fork() == sys.platform.startswith("linux")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fits run in forked processes on Linux only")
def test_a_fit_worker_that_dies_is_a_clear_error_and_the_heads_before_it_are_kept(synthetic, monkeypatch):
    """A worker process killed mid-fit (the out-of-memory killer, say) ends the search with a
    `UserError` that says what happened and how to resume; the heads whose fits had come back
    were saved before it."""
    import os

    from attndsl.errors import UserError
    from attndsl.synthesis.search import fit_workers

    tables, source, _ = synthetic
    settings = search.SearchSettings(max_terms=2, screen_sequences=12, seed=0, softmax_terms=3, softmax_workers=1)
    real_fit = fit_workers.FitJob.fit

    def fit_or_die(job, result, col):  # forked workers inherit this: the second head's fit kills its process
        if result.head == 1:
            os._exit(9)
        return real_fit(job, result, col)

    monkeypatch.setattr(fit_workers.FitJob, "fit", fit_or_die)
    saved = []
    with pytest.raises(UserError, match="worker process ended abruptly.*rerun the same command to resume"):
        search.search_heads(source, tables, list(range(len(tables))), [(0, 0), (0, 1), (0, 0)], settings,
                            on_result=saved.append, progress=False)
    assert [(r.layer, r.head) for r in saved] == [(0, 0)] and saved[0].softmax_source


def test_long_sequences_get_the_smaller_search_unless_asked_otherwise():
    """The automatic choices (`SearchSettings.resolved_for`): word pairs (unless the sequences carry
    syntax), tag-pair tables and context tables on and eight scale steps while every sequence has
    at most `BUDGET_TOKENS` tokens, off and four beyond; a value asked for is kept either way, and
    the manifest records the choice made."""
    from attndsl.synthesis.search.greedy import BUDGET_TOKENS, FRACTIONS, LONG_FRACTIONS

    auto = search.SearchSettings()
    short, long = auto.resolved_for([5, BUDGET_TOKENS]), auto.resolved_for([5, BUDGET_TOKENS + 1])
    assert (short.word_pairs, short.context_tables, short.fractions) == (2, True, FRACTIONS)
    assert (long.word_pairs, long.context_tables, long.fractions) == (0, False, LONG_FRACTIONS)
    asked = search.SearchSettings(word_pairs=1, context_tables=True, fractions=(0.5,)).resolved_for([4 * BUDGET_TOKENS])
    assert (asked.word_pairs, asked.context_tables, asked.fractions) == (1, True, (0.5,))
    assert long.resolved_for([5]) == long  # resolving twice changes nothing
    assert short.as_dict()["word_pairs"] == 2 and "context_tables" not in short.as_dict()
    assert long.as_dict()["word_pairs"] == 0 and long.as_dict()["context_tables"] is False
    # tag-pair tables while short; with syntax they take the word pairs' place
    parsed = auto.resolved_for([5, BUDGET_TOKENS], syntax=True)
    assert (parsed.word_pairs, parsed.tag_pair_entries, short.tag_pair_entries, long.tag_pair_entries) == (0, 48, 48, 0)
    assert search.SearchSettings(word_pairs=2).resolved_for([5], syntax=True).word_pairs == 2
    # on running text (several sentences a sequence) larger tag tables and the same-sentence tables
    running = auto.resolved_for([5, BUDGET_TOKENS], syntax=True, running=True)
    assert (running.tag_pair_entries, running.sentence_tables, parsed.sentence_tables) == (96, True, False)
    assert running.as_dict()["sentence_tables"] is True and "sentence_tables" not in parsed.as_dict()
    assert auto.resolved_for([BUDGET_TOKENS + 1], syntax=True, running=True).sentence_tables is False
    assert auto.resolved_for([5], syntax=False, running=True).sentence_tables is False  # no tags to pair
    assert search.SearchSettings(sentence_tables=False).resolved_for([5], syntax=True, running=True).sentence_tables is False


def test_running_text_means_most_sequences_hold_several_sentences():
    from attndsl.synthesis.search import running_text

    single = [s for s in SENTENCES if "?" not in s]  # a question inside quotes ends a sentence of its own
    one = [table_from_words(s.split()) for s in single[:5]]
    packed = [table_from_words(" ".join(single[i:i + 2]).split()) for i in range(5)]
    assert all(t.sent.max() == 0 for t in one) and all(t.sent.max() > 0 for t in packed)
    assert not running_text(one) and running_text(packed)
    assert not running_text(one[:3] + packed[:2]) and running_text(one[:2] + packed[:3])
    assert not running_text([])
