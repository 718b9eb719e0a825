"""The soft-IoU scorer equals the formula computed directly with NumPy."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attndsl.language import interpreter, ir
from attndsl.extraction.batch import TokenBatch, causal_layout
from attndsl.extraction.features import table_from_words
from attndsl.kernels import evaluate_programs
from attndsl.synthesis.scoring import AttentionSource, DenseAttention, PackedAttention, iou_dense, iou_dense_ignore_sink, score, score_values

from .strategies_ir import programs, token_tables

WORDS = "Once upon a time , Lily saw a dog . The dog ran to Lily and the cat ! She smiled .".split()


def random_attention(rng, n_layers, n_heads, n, sink=0.0):
    """Random causal row-stochastic [L, H, n, n] (some rows peaked, some sparse)."""
    logits = rng.normal(size=(n_layers, n_heads, n, n)) * rng.uniform(0.1, 4.0, size=(n_layers, n_heads, 1, 1))
    logits = np.where(np.tril(np.ones((n, n), bool)), logits, -np.inf)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a[..., 0] += sink
    a = np.where(rng.random(a.shape) < 0.2, 0.0, a)  # exact zeros
    a[..., np.arange(n), np.arange(n)] += 1e-3  # keep every row non-empty
    a = np.tril(a)
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


def reference_scores(progs, tables, mats):
    """Direct formula per (program, layer, head, sequence) from interpreter outputs."""
    L, H = mats[0].shape[:2]
    main = np.zeros((len(progs), L, H, len(tables)))
    sink = np.zeros_like(main)
    for p, program in enumerate(progs):
        for s, table in enumerate(tables):
            ahat = interpreter.evaluate(program, table)
            for l in range(L):
                for h in range(H):
                    main[p, l, h, s] = iou_dense(mats[s][l, h], ahat)
                    sink[p, l, h, s] = iou_dense_ignore_sink(mats[s][l, h], ahat)
    return main, sink


@settings(max_examples=40)
@given(st.lists(programs(syntax=False), min_size=1, max_size=3),
       st.lists(token_tables(min_size=1, max_size=10, syntax=False), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_scorer_equals_direct_formula(progs, tables, seed):
    rng = np.random.default_rng(seed)
    mats = [random_attention(rng, 2, 3, len(t), sink=rng.choice([0.0, 5.0])) for t in tables]
    batch = TokenBatch.from_tables(tables)
    result = score(progs, DenseAttention(mats), batch, per_sequence=True, ignore_sink=True)
    main, sink = reference_scores(progs, tables, mats)
    assert result.iou.shape == (len(progs), 2, 3)
    assert result.per_sequence.shape == main.shape
    np.testing.assert_allclose(result.per_sequence, main, atol=1e-6)
    np.testing.assert_allclose(result.iou, main.mean(-1), atol=1e-6)
    np.testing.assert_allclose(result.per_sequence_ignore_sink, sink, atol=1e-6)
    np.testing.assert_allclose(result.iou_ignore_sink, sink.mean(-1), atol=1e-6)


def test_chunking_does_not_change_scores():
    rng = np.random.default_rng(1)
    tables = [table_from_words(WORDS[: n]) for n in (3, 12, 1, 20, 7)]
    mats = [random_attention(rng, 3, 2, len(t)) for t in tables]
    progs = _some_programs()
    batch = TokenBatch.from_tables(tables)
    whole = score(progs, DenseAttention(mats), batch, per_sequence=True, ignore_sink=True)
    parts = score(progs, DenseAttention(mats), batch, per_sequence=True, ignore_sink=True, program_chunk=2, entry_budget=10)
    np.testing.assert_allclose(whole.per_sequence, parts.per_sequence, atol=1e-12)
    np.testing.assert_allclose(whole.iou_ignore_sink, parts.iou_ignore_sink, atol=1e-12)


def _some_programs():
    prev = ir.Indicator(ir.NumCompare("==", ir.Position("k"), ir.Arith("-", ir.Position("q"), ir.Const(1.0))))
    sink = ir.Indicator(ir.NumCompare("==", ir.Position("k"), ir.Const(0.0)))
    decay = ir.Func("exp", (ir.Negate(ir.Dist()),))
    return [
        ir.Program("prev", (ir.Term(1.0, (prev,)),), "self"),
        ir.Program("sink", (ir.Term(1.0, (sink,)),)),
        ir.Program("decay", (ir.Term(1.0, (decay,)), ir.Term(0.5, (sink,))), "uniform"),
        ir.Program("punct", (ir.Term(1.0, (ir.Select("nearest", ir.BoolFeature("punct", ir.At("k"))),)),), "first"),
    ]


def test_iou_of_a_matrix_with_itself_is_one_and_iou_is_symmetric():
    rng = np.random.default_rng(0)
    tables = [table_from_words(WORDS[:n]) for n in (1, 5, 17)]
    batch = TokenBatch.from_tables(tables)
    progs = _some_programs()
    values = evaluate_programs(progs, batch)
    # the programs' own outputs as the "heads": IoU(A, A) = 1 on the diagonal
    mats = []
    for s, t in enumerate(tables):
        n = len(t)
        heads = np.stack([interpreter.evaluate(p, t) for p in progs])[None].astype(np.float32)
        mats.append(heads)
    result = score(progs, DenseAttention(mats), batch, ignore_sink=True)
    np.testing.assert_allclose(np.diag(result.iou[:, 0, :]), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.diag(result.iou_ignore_sink[:, 0, :]), 1.0, atol=1e-6)
    # symmetric: IoU(program i as head, program j) == IoU(program j as head, program i)
    np.testing.assert_allclose(result.iou[:, 0, :], result.iou[:, 0, :].T, atol=1e-6)
    a, b = random_attention(rng, 1, 1, 9)[0, 0], random_attention(rng, 1, 1, 9)[0, 0]
    assert iou_dense(a, b) == pytest.approx(iou_dense(b, a))
    assert iou_dense(a, a) == pytest.approx(1.0)
    # score_values on precomputed outputs agrees with score
    again = score_values(values, DenseAttention(mats), batch, names=[p.name for p in progs], ignore_sink=True)
    np.testing.assert_allclose(again.iou, result.iou, atol=1e-12)


def test_length_one_sequences_score_one_when_ignoring_the_sink():
    tables = [table_from_words(["Hi"])]
    mats = [np.ones((1, 2, 1, 1), dtype=np.float32)]
    result = score(_some_programs(), DenseAttention(mats), TokenBatch.from_tables(tables), ignore_sink=True)
    np.testing.assert_allclose(result.iou, 1.0)
    np.testing.assert_allclose(result.iou_ignore_sink, 1.0)


def test_sources_and_indices():
    rng = np.random.default_rng(3)
    tables = [table_from_words(WORDS[:n]) for n in (4, 9, 6)]
    mats = [random_attention(rng, 2, 2, len(t)) for t in tables]
    dense = DenseAttention(mats)
    assert isinstance(dense, AttentionSource)
    packed = PackedAttention(dense.lengths, dense.causal_block([0, 1, 2]), 2, 2)
    assert packed.causal_block([2, 0]).shape == (causal_layout([6, 4])[-1], 4)
    progs = _some_programs()
    # score sequences 2 and 0 of the source, in that order
    batch = TokenBatch.from_tables([tables[2], tables[0]])
    a = score(progs, dense, batch, seq_indices=[2, 0], per_sequence=True)
    b = score(progs, packed, batch, seq_indices=[2, 0], per_sequence=True)
    np.testing.assert_allclose(a.per_sequence, b.per_sequence, atol=1e-12)
    assert a.n_sequences == 2 and a.n_tokens == 10
    with pytest.raises(ValueError, match="tokens"):
        score(progs, dense, batch, seq_indices=[0, 2])
    with pytest.raises(ValueError):
        score(progs, dense, batch, seq_indices=[0])


@pytest.mark.parametrize("program_chunk,entry_budget", [(64, 1 << 19), (2, 40)])
def test_pair_scores_are_bit_identical_to_the_full_matrix(program_chunk, entry_budget):
    from attndsl.synthesis.scoring import score_pairs

    rng = np.random.default_rng(7)
    # enough sequences that NumPy would sum one column pairwise (score_pairs must not)
    tables = [table_from_words(WORDS[: int(n)]) for n in rng.integers(1, len(WORDS), size=30)]
    mats = [random_attention(rng, 3, 4, len(t), sink=float(rng.choice([0.0, 3.0]))) for t in tables]
    progs = _some_programs()
    batch = TokenBatch.from_tables(tables)
    source = DenseAttention(mats)
    full = score(progs, source, batch, per_sequence=True, ignore_sink=True, program_chunk=program_chunk,
                 entry_budget=entry_budget)
    heads = [[0, 5, 11], [3], [], list(range(12))]
    pairs = score_pairs(progs, heads, source, batch, per_sequence=True, ignore_sink=True,
                        program_chunk=program_chunk, entry_budget=entry_budget)
    for p, columns in enumerate(heads):
        asked = np.zeros(12, bool)
        asked[columns] = True
        for name in ("iou", "iou_ignore_sink", "per_sequence"):
            got = getattr(pairs, name)[p].reshape(12, -1)
            want = getattr(full, name)[p].reshape(12, -1)
            assert np.array_equal(got[asked], want[asked]), (name, p)  # bit for bit
            assert np.isnan(got[~asked]).all()
    with pytest.raises(ValueError, match="distinct"):
        score_pairs(progs[:1], [[1, 1]], source, batch)
