"""``attndsl explain``: the whole pipeline in one call, resumable, ending in a report.

    extract → synthesize → score → replace → report

`explain(...)` runs the stages in order in one run directory and returns an
`ExplainResult` read back from the files the stages wrote (so a result is the
same whether the stages ran now or in an earlier, interrupted call).

**Skipping and resuming.**  The call first records its own settings (what
decides the results: model, corpus, sizes, split, seed, heads, program
writer, fractions) in the run manifest as the ``explain`` stage; a rerun with
other settings is refused by `attndsl.pipeline.rundir.open_run` with the differing
keys named, so a run is never silently mixed.  A stage is skipped when the
run directory's owner says it is complete and intact
(`attndsl.pipeline.layout.stage_complete`); otherwise it runs, and every
stage resumes from what it already wrote (extraction by chunk, synthesis by head) or reruns whole
(scoring, replacement and the report are minutes at most).  So an interrupted
call — Ctrl-C, a crash, a killed machine — is finished by running the same
call again, with the same results as an uninterrupted one.

**Model.**  Loaded at most once per call, and only when a stage that needs it
(extract, replace) has work to do; ``model`` may also be an already loaded
`attndsl.extraction.models.LoadedModel` (tests pass tiny ones).

**Program writer.**  With ``llm`` (an `attndsl.synthesis.llm.LLMConfig`) programs come
from that OpenAI-compatible endpoint; without it, from the offline
enumerative search.  The API key is never recorded.

**Options.**  `attndsl.pipeline.options.ExplainOptions` declares every
option once; `explain` takes its fields as keyword arguments, the CLI's flags
are generated from it, and each stage gets its own share
(`ExplainOptions.stage_kwargs`).  The result is an
`attndsl.pipeline.result.ExplainResult`.

The stage functions (`run_extract`, `run_synthesize`, `run_score`,
`run_replace`, `run_report`) are module attributes looked up at call time,
which is what the interruption tests patch.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from attndsl.pipeline import layout
from attndsl.pipeline.layout import STAGES, refuse_other_extraction, stage_complete
from attndsl.pipeline.options import (  # noqa: F401  (the API's names, kept importable from here)
    DEFAULT_FRACTIONS, DEFAULT_MAX_SEQUENCES, DEFAULT_MAX_TOKENS, EXTRACT_SETTINGS, ExplainOptions, from_kwargs,
    parse_fractions, parse_heads)
from attndsl.pipeline.result import GOOD_IOU, ExplainResult, StageRecord, load_result  # noqa: F401
from attndsl.pipeline.rundir import Run, open_run

STAGE = "explain"


@dataclass
class Context:
    """One call's state shared by the stages (the model is loaded on first use)."""

    options: ExplainOptions
    run: Run
    log: Callable[[str], None]
    _loaded: Any = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        return self.run.path

    def loaded(self):
        """The model (`LoadedModel`), loaded once."""
        if self._loaded is None:
            if isinstance(self.options.model, str):
                from attndsl.extraction.models import load_model

                self.log(f"loading model {self.options.model} …")
                self._loaded = load_model(self.options.model, device=self.options.device, dtype=self.options.dtype)
            else:
                self._loaded = self.options.model
        return self._loaded


# ------------------------------------------------------------------ stages


def run_extract(ctx: Context) -> None:
    from attndsl.extraction.extract import extract

    extract(ctx.run_dir, model=ctx.loaded(), **ctx.options.stage_kwargs("extract"))


def run_synthesize(ctx: Context) -> None:
    """Programs for the heads, the pooled library, each head's best (`attndsl.synthesis.synthesize`).

    `attndsl.synthesis.synthesize.synthesize` also scores the library (it writes
    ``library/best.csv``), so after it the score stage has nothing left to do.
    """
    from attndsl.synthesis.synthesize import synthesize

    synthesize(ctx.run_dir, use_search=ctx.options.llm is None, **ctx.options.stage_kwargs("synthesize"))


def run_score(ctx: Context) -> None:
    """Re-score the run's library against every head (when ``best.csv`` is missing)."""
    from attndsl.synthesis.synthesize import score_library

    score_library(ctx.run_dir, **ctx.options.stage_kwargs("score"))
    ctx.run.mark_complete(layout.SCORE, {"best_csv": f"{layout.LIBRARY_DIR}/{layout.BEST_CSV}"})


def run_replace(ctx: Context) -> None:
    from attndsl.surrogates.replace import run_replacement

    run_replacement(ctx.run_dir, loaded=ctx.loaded(), **ctx.options.stage_kwargs("replace"))


def run_report(ctx: Context) -> None:
    from attndsl.reporting.report import build_report

    build_report(ctx.run_dir, **ctx.options.stage_kwargs("report"))


def stage_done(run: Run, stage: str, options: ExplainOptions) -> bool:
    """Whether ``stage``'s results are in the run, complete and intact (so it can be skipped)."""
    return stage_complete(run, stage, fractions=options.fractions, greedy=options.greedy)


#: a stage whose work another stage does as part of its own (synthesize scores its library)
COVERED_BY = {layout.SCORE: layout.SYNTHESIZE}

RUNNERS = {stage: f"run_{stage}" for stage in STAGES}


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def run_pipeline(options: ExplainOptions, log: Callable[[str], None] | None = None) -> ExplainResult:
    """Run (or finish) every stage of ``options`` and return the result."""
    options.check()
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    settings = options.settings()
    run = open_run(options.out, STAGE, settings)
    refuse_other_extraction(run, {key: settings[key] for key in EXTRACT_SETTINGS})
    ctx = Context(options=options, run=run, log=log)
    records = []
    module = sys.modules[__name__]
    ran: list[str] = []  # stages run in this call: the stages after them must run too
    for number, stage in enumerate(STAGES, start=1):
        prefix = f"[{number}/{len(STAGES)}] {stage}"
        stale = bool(ran) and not (ran[-1] == COVERED_BY.get(stage))
        if not stale and stage_done(run, stage, options):
            log(f"{prefix}: {'done by ' + ran[-1] if ran else 'already done'}, skipped")
            records.append(StageRecord(stage, "skipped", 0.0))
            continue
        log(f"{prefix} …")
        started = time.perf_counter()
        getattr(module, RUNNERS[stage])(ctx)
        seconds = time.perf_counter() - started
        log(f"{prefix}: done in {_duration(seconds)}")
        records.append(StageRecord(stage, "ran", seconds))
        ran.append(stage)
    run.mark_complete(STAGE, {"stages": {r.name: r.status for r in records}})
    return load_result(run.path, records)


def explain(model: Any = "smollm2", corpus: str = "builtin", out: str | Path = "runs/default", *,
            log: Callable[[str], None] | None = None, **options: Any) -> ExplainResult:
    """Explain every head of ``model`` on ``corpus`` into the run directory ``out``.

    Runs extract → synthesize → score → replace → report, skipping stages
    already done in ``out`` and resuming interrupted ones; returns the
    `ExplainResult` (per-head programs and IoU, library size, perplexity
    curve, report path).  ``model``: alias, ``.gguf`` file, model directory,
    hub id, or a loaded `attndsl.extraction.models.LoadedModel`; ``corpus``: ``builtin``,
    a ``.txt``/``.jsonl`` file or ``hf:DATASET[:SPLIT]``; ``heads``: ``"L.H,…"``
    ``"L.*"`` or pairs (default all); ``llm``: an `attndsl.synthesis.llm.LLMConfig` (default: the
    offline enumerative search).  The other keyword arguments are the fields
    of `ExplainOptions` (max_sequences, max_tokens, max_sentences, mix_lengths,
    heldout_fraction, seed, fractions, greedy, device, dtype, batch_size,
    text_field, report_examples, progress).  ``log`` receives the stage
    lines (default: stderr).
    """
    return run_pipeline(from_kwargs(model, corpus, out, **options), log)
