"""``attndsl synthesize`` / ``attndsl score`` end to end on a tiny random model's run."""
from __future__ import annotations

import csv
import shutil

import pytest

from attndsl import cli
from attndsl.language.validate import compile_file

FAST = ["--no-progress", "--screen-sequences", "6", "--max-terms", "3"]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    from attndsl.extraction.extract import extract
    from tests.tiny import tiny_loaded

    path = tmp_path_factory.mktemp("synth") / "run"
    extract(path, tiny_loaded("llama"), "builtin", max_sequences=16, max_tokens=24, batch_size=8, progress=False)
    return path


@pytest.fixture
def run_dir(extracted, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(extracted, path)
    return path


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_synthesize_writes_programs_library_and_scores(run_dir, capsys, monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ATTNDSL_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["synthesize", str(run_dir), *FAST]) == 0
    out = capsys.readouterr().out
    assert "mean held-out IoU" in out and "per layer" in out
    rows = _rows(run_dir / "library" / "best.csv")
    assert len(rows) == 3 * 4  # tiny llama: 3 layers x 4 heads
    assert list(rows[0]) == ["layer", "head", "program_name", "synthesis_iou", "heldout_iou", "heldout_iou_no_sink",
                             "n_heldout_sequences", "n_heldout_tokens",
                             "short_program_name", "short_synthesis_iou", "short_heldout_iou"]
    library = {p.name for p in compile_file(str(run_dir / "library" / "library.attn"))}
    assert {r["program_name"] for r in rows} <= library
    for r in rows:
        assert 0.0 <= float(r["heldout_iou"]) <= 1.0 and int(r["n_heldout_sequences"]) > 0
    for layer in range(3):
        for head in range(4):
            assert compile_file(str(run_dir / "programs" / f"L{layer}_H{head}.attn"))
    # random heads are close to uniform: the search must beat the sink by far
    assert sum(float(r["heldout_iou"]) for r in rows) / len(rows) > 0.8
    # two tiers: every head has a short program within the bounds, no better than its full one on synthesis
    from attndsl.synthesis.library import is_short

    programs = {p.name: p for p in compile_file(str(run_dir / "library" / "library.attn"))}
    for r in rows:
        assert is_short(programs[r["short_program_name"]])
        assert float(r["short_synthesis_iou"]) <= float(r["synthesis_iou"])
        assert 0.0 <= float(r["short_heldout_iou"]) <= 1.0
    assert "short programs (<= 3 terms" in out and "held-out IoU by length" in out
    buckets = _rows(run_dir / "library" / "buckets.csv")
    assert sum(int(b["sequences"]) for b in buckets) == int(rows[0]["n_heldout_sequences"])
    assert sum(int(b["tokens"]) for b in buckets) == int(rows[0]["n_heldout_tokens"])
    # the explanation (open_run, the report) reads both tiers from best.csv
    import attndsl

    run = attndsl.open_run(run_dir)
    for r in rows:
        head = run[int(r["layer"]), int(r["head"])]
        assert head.short.name == r["short_program_name"] and head.full.name == r["program_name"]
        assert head.short.heldout_iou == pytest.approx(float(r["short_heldout_iou"]))
    # per head and tier, the bucket means weighted by their sequences give back the head's held-out IoU
    per_head = _rows(run_dir / "library" / "head_buckets.csv")
    for r in rows:
        for tier, column in (("full", "heldout_iou"), ("short", "short_heldout_iou")):
            mine = [b for b in per_head if (b["layer"], b["head"], b["tier"]) == (r["layer"], r["head"], tier)]
            assert sum(int(b["sequences"]) for b in mine) == int(r["n_heldout_sequences"])
            weighted = sum(int(b["sequences"]) * float(b["heldout_iou"]) for b in mine) / int(r["n_heldout_sequences"])
            assert weighted == pytest.approx(float(r[column]), abs=1e-5)
        head = run[int(r["layer"]), int(r["head"])]
        assert head.full.buckets == {b["bucket"]: pytest.approx(float(b["heldout_iou"]))
                                     for b in per_head if (b["layer"], b["head"], b["tier"]) == (r["layer"], r["head"], "full")}


def test_resume_redoes_only_missing_heads_and_refuses_other_settings(run_dir, capsys):
    from attndsl.synthesis.search import SearchSettings
    from attndsl.synthesis.synthesize import synthesize

    settings = SearchSettings(max_terms=3, screen_sequences=6)
    first = synthesize(run_dir, search=settings, use_search=True, progress=False)
    assert first.heads_written == 12
    before = (run_dir / "programs" / "L1_H2.attn").read_text()
    (run_dir / "synthesis" / "heads" / "L1_H2.json").unlink()
    (run_dir / "programs" / "L1_H2.attn").unlink()
    again = synthesize(run_dir, search=settings, use_search=True, progress=False)
    assert again.heads_written == 1 and again.heads_done == 12
    assert (run_dir / "programs" / "L1_H2.attn").read_text() == before  # deterministic
    assert [c.program_name for c in again.choices] == [c.program_name for c in first.choices]
    # other settings are refused with a clear message (exit 2, no traceback)
    assert cli.main(["synthesize", str(run_dir), "--no-progress", "--screen-sequences", "6", "--max-terms", "2"]) == 2
    assert "max_terms" in capsys.readouterr().err


def test_heads_subset_and_bad_heads(run_dir, capsys):
    assert cli.main(["synthesize", str(run_dir), *FAST, "--heads", "2.1,0.*"]) == 0
    done = sorted(p.stem for p in (run_dir / "synthesis" / "heads").glob("*.json"))
    assert done == ["L0_H0", "L0_H1", "L0_H2", "L0_H3", "L2_H1"]
    assert cli.main(["synthesize", str(run_dir), *FAST, "--heads", "9.0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["synthesize", str(run_dir), *FAST, "--heads", "x"]) == 2


def test_score_default_and_user_library(run_dir, capsys, tmp_path):
    assert cli.main(["score", str(run_dir), "--no-progress"]) == 2  # no library yet
    assert "no library yet" in capsys.readouterr().err
    mine = tmp_path / "mine.attn"
    mine.write_text("program uniform { 1 }\nprogram sink { 1 * [k == 0] }\n")
    assert cli.main(["score", str(run_dir), "--library", str(mine), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mean held-out IoU" in out and "library: 2 programs" in out
    rows = _rows(run_dir / "scores" / "mine.best.csv")
    assert len(rows) == 12 and {r["program_name"] for r in rows} <= {"uniform", "sink"}
    bad = tmp_path / "bad.attn"
    bad.write_text("program oops { 1 * [k == ] }\n")
    assert cli.main(["score", str(run_dir), "--library", str(bad), "--no-progress"]) == 2


def test_synthesize_needs_an_extracted_run(tmp_path, capsys):
    assert cli.main(["synthesize", str(tmp_path / "nothing"), *FAST]) == 2
    assert "extract" in capsys.readouterr().err


def test_llm_writer_and_search_are_pooled(run_dir, monkeypatch):
    """With an endpoint and --search enumerative both writers run; their programs share one library."""
    from tests.fake_llm_server import FakeLLMServer

    with FakeLLMServer() as server:
        code = cli.main(["synthesize", str(run_dir), *FAST, "--heads", "0.0,0.1", "--search", "enumerative",
                         "--llm-url", server.base_url, "--llm-model", "fake", "--llm-api-key", "x",
                         "--llm-repair-rounds", "0"])
    assert code == 0
    text = (run_dir / "programs" / "L0_H0.attn").read_text()
    assert "# llm" in text and "# search" in text
    import json

    meta = json.loads((run_dir / "library" / "library.json").read_text())
    assert {"llm", "search"} <= {p["origin"] for p in meta["programs"]}
