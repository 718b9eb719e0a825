"""Perplexity (`attndsl.surrogates.perplexity`) and replacement curves (`attndsl.surrogates.replace`)
on a tiny random GPT-2 / GQA Llama."""
from __future__ import annotations

import math

import pytest
import torch

from attndsl.headnames import heads_text
from attndsl.pipeline import records
from attndsl.surrogates import perplexity as measure
from attndsl.surrogates import replace, surrogate
from attndsl.errors import UserError
from attndsl.pipeline.records import ReplacementRow as Row
from attndsl.surrogates.replace import RankedHead
from attndsl.surrogates.surrogate import Assignment
from attndsl.language.validate import compile_program
from tests import tiny

TEXTS = [
    "Once upon a time, there was a little dog named Max.",
    "Max loved to run in the park.",
    "One day, Max saw a big red ball.",
    '"Can I play?" he asked. The girl said, "Yes, you can!"',
    "They played all day and were very happy.",
]

PREV = compile_program("program prev { fallback self\n 1 * [k == q - 1] }")
FIRST = compile_program("program first { 1 * [k == 0] }")
SELF = compile_program("program self_ { 1 * [k == q] }")


@pytest.fixture(scope="module")
def gpt2():
    tokenizer = tiny.bpe_tokenizer()
    return tiny.tiny_gpt2(), tokenizer, surrogate.tables_for_texts(tokenizer, TEXTS)


def _manual_ppl(model, tables, assignment=None, tokenizer=None):
    """One sequence at a time, no padding: the definition."""
    total, count = 0.0, 0
    for table in tables:
        ids = torch.as_tensor(table.token_id)[None]
        with torch.no_grad():
            if assignment:
                with surrogate.attach(model, assignment, tokenizer) as handle:
                    logits = handle.logits(tables=[table])
            else:
                logits = model(input_ids=ids).logits
        logp = torch.log_softmax(logits[0, :-1].double(), -1)
        total -= float(logp.gather(1, ids[0, 1:, None]).sum())
        count += len(table) - 1
    return math.exp(total / count), count


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_perplexity_matches_per_sequence_definition(gpt2, batch_size):
    model, tokenizer, tables = gpt2
    want, count = _manual_ppl(model, tables)
    got = measure.perplexity(model, tables, tokenizer=tokenizer, batch_size=batch_size)
    assert got.n_tokens == count == sum(len(t) - 1 for t in tables)
    assert got.n_sequences == len(tables)
    assert got.ppl == pytest.approx(want, rel=1e-5)


def test_perplexity_with_programs_matches_definition_and_differs(gpt2):
    model, tokenizer, tables = gpt2
    assignment = Assignment.from_items([(0, 0, PREV), (1, 3, FIRST)])
    want, _ = _manual_ppl(model, tables, assignment, tokenizer)
    got = measure.perplexity(model, tables, assignment, tokenizer, batch_size=3)
    assert got.ppl == pytest.approx(want, rel=1e-5)
    assert got.ppl != pytest.approx(measure.perplexity(model, tables, tokenizer=tokenizer).ppl, rel=1e-4)
    # texts and tables are the same input
    assert measure.perplexity(model, TEXTS, assignment, tokenizer, batch_size=3).ppl == pytest.approx(got.ppl, rel=1e-6)
    assert model.config._attn_implementation == "eager"  # detached afterwards


def test_empty_assignment_perplexity_is_identical(gpt2):
    model, tokenizer, tables = gpt2
    a = measure.perplexity(model, tables, Assignment(), tokenizer)
    b = measure.perplexity(model, tables, None, tokenizer)
    assert a == b


def test_replacement_curve_rows(gpt2):
    model, tokenizer, tables = gpt2
    ranked = [RankedHead(1, 2, PREV, 0.9), (0, 1, FIRST, 0.8), (1, 0, SELF, 0.7), (0, 3, PREV, 0.6)]
    rows = replace.replacement_curve(model, tokenizer, tables, ranked, fractions=(0.25, 0.5), progress=False)
    assert [r.n_target for r in rows] == [2, 4]  # 8 heads in all
    assert [r.n_replaced for r in rows] == [2, 4]
    assert rows[0].heads == "L1H2 L0H1"
    assert rows[1].heads == "L1H2 L0H1 L1H0 L0H3"
    assert rows[0].mean_heldout_iou == pytest.approx(0.85)
    base = measure.perplexity(model, tables, tokenizer=tokenizer).ppl
    uniform = measure.perplexity(model, tables, Assignment.uniform([(1, 2), (0, 1)]), tokenizer).ppl
    programs = measure.perplexity(model, tables, Assignment.from_items([(1, 2, PREV), (0, 1, FIRST)]), tokenizer).ppl
    row = rows[0]
    assert row.ppl_model == pytest.approx(base)
    assert row.ppl_uniform == pytest.approx(uniform)
    assert row.ppl_programs == pytest.approx(programs)
    assert row.increase_programs_pct == pytest.approx(100 * (programs / base - 1))
    assert row.n_tokens == sum(len(t) - 1 for t in tables)
    # a ranking shorter than the fraction replaces what there is
    short = replace.replacement_curve(model, tokenizer, tables, ranked[:1], fractions=(0.5,), progress=False)
    assert (short[0].n_target, short[0].n_replaced) == (4, 1)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_per_sequence_perplexity_is_each_sequence_alone(gpt2, batch_size):
    model, tokenizer, tables = gpt2
    got = measure.perplexity(model, tables, tokenizer=tokenizer, batch_size=batch_size)
    assert len(got.per_sequence) == len(tables)
    for i, table in enumerate(tables):
        alone, count = _manual_ppl(model, [table])
        assert got.per_sequence[i][1] == count
        assert got.subset([i]).ppl == pytest.approx(alone, rel=1e-5)
    assert got.subset(range(len(tables))).ppl == pytest.approx(got.ppl, rel=1e-9)


def test_replacement_curve_per_length_bucket(gpt2):
    from attndsl.synthesis.scoring import length_bucket

    model, tokenizer, tables = gpt2
    ranked = [RankedHead(1, 2, PREV, 0.9), (0, 1, FIRST, 0.8)]
    buckets: list = []
    rows = replace.replacement_curve(model, tokenizer, tables, ranked, fractions=(0.25,), progress=False,
                                     buckets=buckets)
    keys = sorted({length_bucket(len(t)) for t in tables})
    assert len(keys) >= 2 and [b.n_sequences for b in buckets] == [
        sum(length_bucket(len(t)) == key for t in tables) for key in keys]
    assert sum(b.n_tokens for b in buckets) == rows[0].n_tokens
    for b, key in zip(buckets, keys):
        members = [t for t in tables if length_bucket(len(t)) == key]
        programs = measure.perplexity(model, members, Assignment.from_items([(1, 2, PREV), (0, 1, FIRST)]), tokenizer)
        assert b.ppl_programs == pytest.approx(programs.ppl, rel=1e-5)
        assert b.ppl_model == pytest.approx(measure.perplexity(model, members, tokenizer=tokenizer).ppl, rel=1e-5)
    text = replace.bucket_csv(buckets)
    assert text.splitlines()[0].split(",") == list(replace.BUCKET_COLUMNS) and len(text.splitlines()) == len(keys) + 1


def test_greedy_skips_heads_with_extreme_marginal_cost(gpt2):
    model, tokenizer, tables = gpt2
    ranked = [RankedHead(l, h, p) for (l, h), p in zip([(0, 0), (0, 1), (1, 1), (1, 2), (1, 3)], [PREV, SELF, FIRST, PREV, SELF])]
    threshold = 0.0
    accepted, skipped = replace.greedy_order(model, tables, ranked, limit=3, max_head_cost=threshold, tokenizer=tokenizer)
    # replay the documented rule
    expect_acc, expect_skip = [], []
    current = measure.perplexity(model, tables, tokenizer=tokenizer).ppl
    for h in ranked:
        if len(expect_acc) == 3:
            break
        trial = Assignment.from_items((x.layer, x.head, x.program) for x in [*expect_acc, h])
        ppl = measure.perplexity(model, tables, trial, tokenizer).ppl
        if ppl > current * (1 + threshold):
            expect_skip.append(h)
        else:
            expect_acc.append(h)
            current = ppl
    assert accepted == expect_acc and skipped == expect_skip
    assert len(accepted) + len(skipped) >= 3
    lenient, none_skipped = replace.greedy_order(model, tables, ranked, limit=3, max_head_cost=1e9, tokenizer=tokenizer)
    assert lenient == ranked[:3] and none_skipped == []
    rows = replace.replacement_curve(
        model, tokenizer, tables, ranked, fractions=(0.25,), greedy=True, max_head_cost=threshold, progress=False
    )
    assert rows[0].variant == "greedy"
    assert rows[0].heads == heads_text(expect_acc[:2])


def test_bad_inputs_are_user_errors(gpt2):
    model, tokenizer, tables = gpt2
    with pytest.raises(UserError, match="does not exist"):
        replace.replacement_curve(model, tokenizer, tables, [(5, 0, PREV)], progress=False)
    with pytest.raises(UserError, match="fraction"):
        replace.replacement_curve(model, tokenizer, tables, [(0, 0, PREV)], fractions=(1.5,), progress=False)
    with pytest.raises(UserError, match="no sequences"):
        measure.perplexity(model, [], tokenizer=tokenizer)


def test_csv_round_trip_and_table(tmp_path):
    rows = [
        Row("ranked", 0.25, 2, 2, 10.0, 11.0, 20.0, 10.0, 100.0, 0.8, 5, 40, "L0H1 L1H2"),
        Row("greedy", 0.5, 4, 3, 10.0, 12.5, 30.0, 25.0, 200.0, float("nan"), 5, 40, "L0H1", "L1H1"),
    ]
    path = records.write_replacement_csv(tmp_path / "out" / "replacement.csv", rows)
    back = records.read_replacement_csv(path)
    assert back[0] == rows[0]
    assert math.isnan(back[1].mean_heldout_iou) and back[1].skipped == "L1H1"
    assert not list((tmp_path / "out").glob("*.tmp"))
    table = replace.format_table(rows)
    assert "+10.0%" in table and "+200.0%" in table and "5 held-out sequences, 40 predicted tokens" in table


def test_llama_gqa_curve_runs():
    tokenizer = tiny.metaspace_tokenizer()
    model = tiny.tiny_llama_gqa()
    ranked = [(0, 0, PREV), (2, 3, FIRST), (1, 1, SELF)]
    rows = replace.replacement_curve(model, tokenizer, TEXTS, ranked, fractions=(0.25,), progress=False)
    assert rows[0].n_target == 3 and rows[0].n_replaced == 3
    assert rows[0].ppl_programs != pytest.approx(rows[0].ppl_model, rel=1e-6)


# --------------------------------------------------------------- the replace command


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run extracted from a saved tiny GPT-2 (4 held-out-ish sequences), plus a library."""
    from attndsl.extraction.extract import extract

    root = tmp_path_factory.mktemp("replace")
    model_dir = tiny.save_tiny("gpt2", root / "model")
    run = root / "run"
    extract(run, model=str(model_dir), corpus="builtin", max_sequences=12, max_tokens=24, progress=False)
    return run


def _write_library(run, rows, source):
    library = run / "library"
    library.mkdir(exist_ok=True)
    (library / "library.attn").write_text(source)
    lines = ["layer,head,program_name,synthesis_iou,heldout_iou"] + [",".join(map(str, r)) for r in rows]
    (library / "best.csv").write_text("\n".join(lines) + "\n")


LIBRARY = """
program prev { fallback self
    1 * [k == q - 1] }
program sink { 1 * [k == 0] }
"""


def test_replace_command_writes_csv_in_iou_order(tiny_run, capsys):
    from attndsl.cli import main

    import shutil

    shutil.rmtree(tiny_run / "library", ignore_errors=True)
    assert main(["replace", str(tiny_run), "--no-progress"]) == 2
    assert "attndsl synthesize" in capsys.readouterr().err

    _write_library(tiny_run, [(0, 0, "sink", 0.5, 0.4), (1, 2, "prev", 0.9, 0.95), (0, 3, "prev", 0.7, 0.6)], LIBRARY)
    assert main(["replace", str(tiny_run), "--fractions", "0.25,0.375", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Δ programs" in out and "held-out sequences" in out
    rows = records.read_replacement_csv(tiny_run / "replace" / "replacement.csv")
    assert [r.heads for r in rows] == ["L1H2 L0H3", "L1H2 L0H3 L0H0"]
    assert rows[0].mean_heldout_iou == pytest.approx((0.95 + 0.6) / 2)
    from attndsl.extraction.store import open_store

    store = open_store(tiny_run)
    assert rows[0].n_sequences == len(store.heldout_indices)
    assert rows[0].n_tokens == sum(store.lengths[i] - 1 for i in store.heldout_indices)


def test_replace_command_rejects_bad_libraries(tiny_run, capsys):
    from attndsl.cli import main

    _write_library(tiny_run, [(0, 0, "nosuch", 0.5, 0.4)], LIBRARY)
    assert main(["replace", str(tiny_run), "--no-progress"]) == 2
    assert "'nosuch' is not in" in capsys.readouterr().err
    _write_library(tiny_run, [(7, 0, "sink", 0.5, 0.4)], LIBRARY)
    assert main(["replace", str(tiny_run), "--no-progress"]) == 2
    assert "L7H0 does not exist" in capsys.readouterr().err
    _write_library(tiny_run, [(0, 0, "sink", 0.5, 0.4)], "program sink { 1 * [nosuch(k)] }")
    assert main(["replace", str(tiny_run), "--no-progress"]) == 2
    assert "does not compile" in capsys.readouterr().err
    _write_library(tiny_run, [(0, 0, "sink", 0.5, 0.4)], LIBRARY)
    assert main(["replace", str(tiny_run), "--fractions", "0,2", "--no-progress"]) == 2
    assert "--fractions" in capsys.readouterr().err


def test_library_from_another_model_is_refused(tiny_run):
    import json

    from attndsl.pipeline.rundir import MANIFEST

    _write_library(tiny_run, [(0, 0, "sink", 0.5, 0.4)], LIBRARY)
    manifest_path = tiny_run / MANIFEST
    original = manifest_path.read_text()
    try:
        manifest = json.loads(original)
        manifest["stages"]["synthesize"] = {"model_hash": "somethingelse"}
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(UserError, match="another model or tokenizer"):
            replace.load_run_model(tiny_run)
        manifest = json.loads(original)
        manifest["stages"]["extract"]["model_hash"] = "0" * 64
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(UserError, match="weights"):
            replace.load_run_model(tiny_run)
    finally:
        manifest_path.write_text(original)
