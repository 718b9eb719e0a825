"""The run directory's owner: typed records written byte for byte as before, paths, head names, options."""
from __future__ import annotations

import math
from dataclasses import fields

from attndsl.headnames import head_file_stem, head_label, head_spec, llm_name_prefix, parse_head_file_stem, parse_head_label
from attndsl.pipeline import options, records
from attndsl.pipeline.layout import RunLayout
from attndsl.pipeline.records import HeadChoice, ReplacementRow

NAN = float("nan")
CHOICES = [HeadChoice(0, 1, "prog_a", 0.123456789, 0.5, NAN, 12, 345),
           HeadChoice(3, 2, 'p,"q"', 1.0, 0.0, 0.25, 0, 0, "short_x", 0.3333333333, 2 / 3)]
ROWS = [ReplacementRow("ranked", 0.25, 3, 3, 12.3456789, 13.0, 20.5, 5.123456, 66.0, 0.7123456, 10, 300, "L0H1 L3H2", ""),
        ReplacementRow("greedy", 0.5, 6, 5, 1e-7, 123456789.0, NAN, -0.5, 1e6, NAN, 1, 2, "L0H1", "L1H1 L2H2")]
#: what the writers before the run-directory refactor wrote for `CHOICES` / `ROWS`
#: (`attndsl.synthesis.library.best_csv` and `attndsl.surrogates.evaluate.rows_to_csv` at 2e7de3d)
OLD_BEST_CSV = (
    "layer,head,program_name,synthesis_iou,heldout_iou,heldout_iou_no_sink,n_heldout_sequences,n_heldout_tokens,"
    "short_program_name,short_synthesis_iou,short_heldout_iou\n"
    "0,1,prog_a,0.123457,0.500000,nan,12,345,,,\n"
    '3,2,"p,""q""",1.000000,0.000000,0.250000,0,0,short_x,0.333333,0.666667\n'
)
OLD_REPLACEMENT_CSV = (
    "variant,fraction,n_target,n_replaced,ppl_model,ppl_programs,ppl_uniform,increase_programs_pct,"
    "increase_uniform_pct,mean_heldout_iou,n_sequences,n_tokens,heads,skipped\n"
    "ranked,0.25,3,3,12.3457,13,20.5,5.12346,66,0.712346,10,300,L0H1 L3H2,\n"
    "greedy,0.5,6,5,1e-07,1.23457e+08,nan,-0.5,1e+06,nan,1,2,L0H1,L1H1 L2H2\n"
)


def test_writers_write_the_old_bytes(tmp_path):
    assert records.best_csv(CHOICES) == OLD_BEST_CSV
    assert records.replacement_csv(ROWS) == OLD_REPLACEMENT_CSV
    records.write_best_csv(tmp_path / "best.csv", CHOICES)
    records.write_replacement_csv(tmp_path / "r.csv", ROWS)
    assert (tmp_path / "best.csv").read_bytes() == OLD_BEST_CSV.encode()
    assert (tmp_path / "r.csv").read_bytes() == OLD_REPLACEMENT_CSV.encode()


def test_readers_give_the_records_back(tmp_path):
    records.write_best_csv(tmp_path / "best.csv", CHOICES)
    back = records.read_best_csv(tmp_path / "best.csv", (4, 4))
    assert back[1] == CHOICES[1].__class__(3, 2, 'p,"q"', 1.0, 0.0, 0.25, 0, 0, "short_x", 0.333333, 0.666667)
    assert back[0].program_name == "prog_a" and math.isnan(back[0].heldout_iou_no_sink) and not back[0].has_short
    records.write_replacement_csv(tmp_path / "r.csv", ROWS)
    rows = records.read_replacement_csv(tmp_path / "r.csv")
    assert rows[0] == ReplacementRow("ranked", 0.25, 3, 3, 12.3457, 13.0, 20.5, 5.12346, 66.0, 0.712346, 10, 300,
                                     "L0H1 L3H2", "")
    assert rows[1].skipped == "L1H1 L2H2" and math.isnan(rows[1].ppl_uniform)
    assert list(records.plotted(rows[0])) == list(records.PLOTTED_COLUMNS)


def test_layout_names_every_file(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.best_csv == tmp_path / "library" / "best.csv"
    assert layout.library_attn == tmp_path / "library" / "library.attn"
    assert layout.head_json(3, 1) == tmp_path / "synthesis" / "heads" / "L3_H1.json"
    assert layout.head_attn(3, 1) == tmp_path / "programs" / "L3_H1.attn"
    assert layout.replacement_csv(True) == tmp_path / "replace" / "replacement-greedy.csv"
    assert layout.scores_best_csv("mine") == tmp_path / "scores" / "mine.best.csv"
    assert layout.report == tmp_path / "report.html" and layout.store_meta == tmp_path / "attention" / "meta.json"


def test_head_names():
    assert (head_spec(3, 1), head_label(3, 1), head_file_stem(3, 1), llm_name_prefix(3, 1)) == ("3.1", "L3H1", "L3_H1", "l3_h1_")
    assert parse_head_label("L12H0") == (12, 0) and parse_head_file_stem("L2_H11") == (2, 11)


def test_every_option_reaches_the_cli_and_the_api():
    from attndsl.cli import build_parser

    args = build_parser().parse_args(["explain"])
    given = options.from_args(args, out="runs/x")
    for f in fields(options.ExplainOptions):
        if f.name in ("llm", "out"):
            continue
        assert f.name in given, f.name
        expected = f.default if f.name != "fractions" else tuple(f.default)
        assert given[f.name] == expected, f.name
    built = options.from_kwargs(**given)
    from pathlib import Path

    assert built == options.ExplainOptions(**{**given, "out": Path("runs/x"), "fractions": tuple(given["fractions"])})
    assert built.stage_kwargs("report") == {"examples": 3}
    from attndsl.synthesis.search import SearchSettings

    assert built.stage_kwargs("synthesize") == {"heads": None, "llm_config": None, "progress": True,
                                                "max_screen_entries": SearchSettings().max_screen_entries,
                                                "softmax_terms": None, "word_pairs": None}
    assert built.stage_kwargs("extract")["syntax"] is True and built.stage_kwargs("extract")["spacy_pipeline"] is None
    off = options.from_args(build_parser().parse_args(["explain", "--no-syntax", "--softmax-terms", "0",
                                                       "--word-pairs", "1"]), out="x")
    assert off["syntax"] is False and off["softmax_terms"] == 0 and off["word_pairs"] == 1
    assert options.from_kwargs(**off).settings()["syntax"] is False
    assert options.from_kwargs(**off).settings()["word_pairs"] == 1 and "word_pairs" not in built.settings()
    (softmax,) = [f for f in fields(options.ExplainOptions) if f.name == "softmax_terms"]
    assert f"default: {SearchSettings().softmax_terms} " in softmax.metadata["help"]  # the help says the real default
