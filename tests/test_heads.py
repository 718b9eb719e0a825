"""`attndsl heads`, `attndsl score --library` output, and the `attndsl.open_run` API on a fake run."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from attndsl.cli import main


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    from tests.test_report import make_fake_run

    return make_fake_run(tmp_path_factory.mktemp("heads") / "run", with_replacement=False)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_heads_csv_matches_best_csv_and_is_stable(fake_run, capsys):
    from attndsl.synthesis.library import read_best_csv

    code, out, _ = _run(capsys, "heads", str(fake_run), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["layer", "head", "category", "share", "purity", "heldout_iou", "heldout_iou_no_sink",
                             "program", "gloss"]
    best = {(r.layer, r.head): r for r in read_best_csv(fake_run / "library" / "best.csv")}
    assert [(int(r["layer"]), int(r["head"])) for r in rows] == sorted(best)
    expected = {"sink": ("sink", "All attention on the first token."),
                "previous": ("previous", "All attention on the previous token."),
                "current": ("self", "All attention on the token itself."),
                "uniform": ("uniform", "All attention on every token evenly.")}
    for r in rows:
        b = best[(int(r["layer"]), int(r["head"]))]
        assert r["program"] == b.program_name
        assert (r["category"], r["gloss"]) == expected[b.program_name]
        assert float(r["heldout_iou"]) == pytest.approx(b.heldout_iou, abs=1e-4)
        assert float(r["purity"]) == 1.0
    assert _run(capsys, "heads", str(fake_run), "--format", "csv")[1] == out  # same output every time


def test_heads_filters_and_formats(fake_run, capsys):
    code, out, _ = _run(capsys, "heads", str(fake_run), "--category", "previous", "--layer", "1", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["layer"], r["head"], r["category"]) for r in rows] == [(1, 1, "previous")]
    code, out, _ = _run(capsys, "heads", str(fake_run), "--min-iou", "0.5")
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "head", "category", "purity", "IoU", "program", "gloss"]
    assert all(" uniform " in line for line in lines[1:-1])  # only the uniform heads fit the tiny random model
    assert lines[-1] == "3 of 12 heads: uniform 3"
    # the table is aligned: every row's gloss starts in the same column
    starts = {line.index("All attention") for line in lines[1:-1]}
    assert len(starts) == 1


@pytest.mark.parametrize("argv, message", [
    (["--category", "nonsense"], "unknown category 'nonsense'"),
    (["--layer", "7"], "--layer 7"),
    (["--min-iou", "2"], "--min-iou"),
])
def test_heads_bad_arguments_exit_2(fake_run, capsys, argv, message):
    code, out, err = _run(capsys, "heads", str(fake_run), *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_heads_without_a_library_says_what_to_run(tmp_path, capsys):
    code, _, err = _run(capsys, "heads", str(tmp_path))
    assert code == 2 and "attndsl synthesize" in err


def test_score_says_which_heads_each_user_program_explains(fake_run, tmp_path, capsys):
    mine = tmp_path / "mine.attn"
    mine.write_text("program my_uniform { 1 }\nprogram my_prev { fallback self\n 1 * [k == q - 1] }\n")
    code, out, _ = _run(capsys, "score", str(fake_run), "--library", str(mine), "--no-progress")
    assert code == 0
    assert "my_uniform: Every token evenly." in out and "my_prev: The previous token" in out
    saved = json.loads((fake_run / "scores" / "mine.hypotheses.json").read_text())
    uniform = next(p for p in saved["programs"] if p["name"] == "my_uniform")
    from attndsl.synthesis.library import read_best_csv

    best = {(r.layer, r.head): r for r in read_best_csv(fake_run / "library" / "best.csv")}
    values = [h["heldout_iou"] for h in uniform["heads"]]
    assert len(values) == 5 and values == sorted(values, reverse=True)
    for h in uniform["heads"]:  # the same program on the same held-out text scores what best.csv says
        assert h["run_heldout_iou"] == pytest.approx(best[(h["layer"], h["head"])].heldout_iou)
        if best[(h["layer"], h["head"])].program_name == "uniform":
            assert h["heldout_iou"] == pytest.approx(h["run_heldout_iou"], abs=1e-4)
    # the tiny random model's heads are near uniform: the uniform program beats every other there
    assert min(values) > 0.9 and uniform["n_chosen"] == 12
    for h in uniform["heads"][:3]:
        assert f"L{h['layer']}H{h['head']}: held-out IoU {h['heldout_iou']:.3f}" in out
    # and the report shows them
    from attndsl.reporting.report import build_report
    from tests.test_report import page_data

    data = page_data(build_report(fake_run).read_text(encoding="utf-8"))
    assert {p["name"] for p in data["hypotheses"]} == {"my_uniform", "my_prev"}


def test_open_run_exposes_heads_and_renders_html(fake_run):
    import attndsl

    run = attndsl.open_run(fake_run)
    assert len(run) == 12
    head = run[0, 1]
    assert head.category.key == "previous" and head.gloss == "All attention on the previous token."
    assert set(head.programs) == {"full"} and head.short is head.full
    assert head.full.source.startswith("program previous")
    assert [h.head for h in run.filter(category="uniform")] == [3, 3, 3]
    page = run._repr_html_()
    assert page.count("<tr>") == 13 and "previous token" in page
    one = head._repr_html_()
    assert one.count("<svg") == 2 and "real attention" in one and "program previous" in one


def test_open_run_with_a_short_tier(tmp_path):
    from tests.test_report import SHORT_LAYER, make_fake_run
    import attndsl

    run = attndsl.open_run(make_fake_run(tmp_path / "run", with_replacement=False, with_short=True))
    head = run[SHORT_LAYER, 1]
    assert set(head.programs) == {"short", "full"}
    assert head.short.name == "sink" and head.full.name == "previous"
    assert head.category.key == "previous"  # the category comes from the full program ...
    assert head.gloss == head.short.gloss and "first token" in head.gloss  # ... the gloss from the short one
    assert run[0, 1].category.key == "previous"
