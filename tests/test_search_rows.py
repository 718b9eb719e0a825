"""The search's entries budget: whole rows kept, exact values, unchanged under budget."""
from __future__ import annotations

import numpy as np
import pytest

from attndsl.synthesis import search
from attndsl.synthesis.search.data import attention_block, row_subsample
from attndsl.extraction.layout import causal_layout
from tests.test_search import SMALL, _known_heads, _tables


def test_row_subsample_keeps_whole_rows_within_budget():
    lengths = np.array([5, 9, 3, 12])
    assert row_subsample(lengths, int(causal_layout(lengths)[-1]), seed=0) is None
    assert row_subsample(lengths, None, seed=0) is None
    keep = row_subsample(lengths, 40, seed=1)
    assert keep is not None and len(keep.entries) <= 40
    tri = causal_layout(lengths)
    # the entries are exactly the kept rows' k = 0..q, in layout order
    expected = np.concatenate([tri[s] + q * (q + 1) // 2 + np.arange(q + 1) for s, q in zip(keep.row_seq, keep.row_q)])
    assert np.array_equal(keep.entries, expected)
    assert np.all(np.diff(keep.entries) > 0)
    again = row_subsample(lengths, 40, seed=1)
    assert np.array_equal(again.entries, keep.entries)


def test_prepare_under_budget_is_unchanged():
    tables = _tables(6, seed=3)
    specs = search.term_pool(tables, n_words=2)
    plain = search.prepare(tables, np.arange(6), specs)
    budget = search.prepare(tables, np.arange(6), specs, max_entries=plain.n_entries)
    assert budget.entries is None
    for name in ("values", "scales", "rows_ptr", "rows", "gates", "row_start", "row_len", "row_seq", "two_n"):
        assert np.array_equal(getattr(plain, name), getattr(budget, name)), name


def test_prepare_over_budget_holds_the_kept_rows_exactly():
    tables = _tables(6, seed=3)
    specs = search.term_pool(tables, n_words=2)
    plain = search.prepare(tables, np.arange(6), specs)
    # the full set's scales, so values compare directly
    sub = search.prepare(tables, np.arange(6), plain.specs, scales=plain.scales, max_entries=plain.n_entries // 3,
                         seed=5)
    assert sub.entries is not None and sub.n_entries <= plain.n_entries // 3
    assert np.array_equal(sub.values, plain.values[:, sub.entries])
    assert np.array_equal(sub.gates, plain.gates[:, sub.entries])
    # rows are whole: each kept row starts at k = 0 and ends at k = q
    q, k, _, _ = sub.entry_tokens()
    assert np.all(k[sub.row_start] == 0)
    assert np.all(k[sub.row_start + sub.row_len - 1] == q[sub.row_start])
    # the IoU denominator counts only kept rows
    assert np.array_equal(sub.two_n, 2.0 * np.bincount(sub.row_seq))
    source = _known_heads(tables, seed=3)
    block = attention_block(source, sub, tables, chunk_entries=300)
    assert np.array_equal(block, source.causal_block(range(6))[sub.entries])
    rows = source.causal_block(range(6))[sub.entries][:, 0]
    assert np.allclose(np.add.reduceat(rows.astype(np.float64), sub.row_start), 1.0, atol=1e-5)


def test_search_under_budget_is_identical_and_over_budget_runs():
    tables = _tables(24)
    source = _known_heads(tables)
    heads = [(0, 0), (0, 1)]
    base = search.search_heads(source, tables, list(range(24)), heads, SMALL, progress=False)
    big = search.SearchSettings(max_terms=4, screen_sequences=12, seed=0, max_screen_entries=10 ** 6,
                                max_full_entries=10 ** 6)
    same = search.search_heads(source, tables, list(range(24)), heads, big, progress=False)
    assert [r.source for r in same] == [r.source for r in base]
    assert [r.fit_iou for r in same] == [r.fit_iou for r in base]
    small = search.SearchSettings(max_terms=4, screen_sequences=12, seed=0, max_screen_entries=1500,
                                  max_full_entries=2500)
    sub = search.search_heads(source, tables, list(range(24)), heads, small, progress=False)
    assert "[k == q - 1]" in sub[0].source
    assert sub[0].fit_iou > 0.5


def test_budgets_stay_out_of_default_manifests():
    assert "max_screen_entries" not in search.SearchSettings().as_dict()
    assert search.SearchSettings(max_screen_entries=5).as_dict()["max_screen_entries"] == 5


def test_default_budgets_leave_short_runs_untouched_and_scale_for_long_sequences():
    from attndsl.synthesis.search.greedy import FULL_ENTRIES, SCREEN_ENTRIES, entries_budget

    # every sequence ≤ 64 tokens: the budgets that 96 / 352 such sequences always fit
    assert entries_budget(None, SCREEN_ENTRIES, [12, 64, 40]) == SCREEN_ENTRIES == 96 * 2080
    assert entries_budget(None, FULL_ENTRIES, [64] * 352) == FULL_ENTRIES
    assert int(causal_layout(np.full(96, 64))[-1]) <= SCREEN_ENTRIES
    # longer: scaled by 64 / longest, so a 256-token screen keeps a quarter of the entries
    assert entries_budget(None, SCREEN_ENTRIES, [100, 256]) == SCREEN_ENTRIES // 4
    assert entries_budget(None, SCREEN_ENTRIES, [1024]) == SCREEN_ENTRIES // 16
    # an explicit budget is taken as given
    assert entries_budget(40000, SCREEN_ENTRIES, [256]) == 40000
    # the screen: three quarters of that beyond 64 tokens (`LONG_SCREEN_ENTRIES`), as given when given
    from attndsl.synthesis.search.greedy import LONG_SCREEN_ENTRIES, screen_budget

    assert screen_budget(None, [12, 64]) == SCREEN_ENTRIES and LONG_SCREEN_ENTRIES == SCREEN_ENTRIES * 3 // 4
    assert screen_budget(None, [100, 256]) == 37440 and screen_budget(40000, [256]) == 40000
    assert search.SearchSettings().max_screen_entries is None

