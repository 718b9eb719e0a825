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
manifest marks it complete *and* its outputs are present and intact
(`stage_done`); otherwise it runs, and every stage resumes from what it
already wrote (extraction by chunk, synthesis by head) or reruns whole
(scoring, replacement and the report are minutes at most).  So an interrupted
call — Ctrl-C, a crash, a killed machine — is finished by running the same
call again, with the same results as an uninterrupted one.

**Model.**  Loaded at most once per call, and only when a stage that needs it
(extract, replace) has work to do; ``model`` may also be an already loaded
`attndsl.extraction.models.LoadedModel` (tests pass tiny ones).

**Program writer.**  With ``llm`` (an `attndsl.synthesis.llm.LLMConfig`) programs come
from that OpenAI-compatible endpoint; without it, from the offline
enumerative search.  The API key is never recorded.

The stage functions (`run_extract`, `run_synthesize`, `run_score`,
`run_replace`, `run_report`) are module attributes looked up at call time,
which is what the interruption tests patch.
"""
from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from attndsl.errors import UserError
from attndsl.reporting.report import BEST_CSV, LIBRARY_ATTN, LIBRARY_DIR, REPORT_NAME, HeadResult, PerplexityPoint, find_replacement_csv, library_sources, read_best, read_perplexity
from attndsl.pipeline.rundir import Run, open_run

STAGE = "explain"
STAGES = ("extract", "synthesize", "score", "replace", "report")
DEFAULT_FRACTIONS = (0.25, 0.5)  # the summary's two points; add 0.1 or 1.0 with --fractions
DEFAULT_MAX_SEQUENCES = 400
DEFAULT_MAX_TOKENS = 64
#: held-out IoU from which the summary counts a head as well explained
GOOD_IOU = 0.75


# ------------------------------------------------------------------ options


def parse_heads(heads: str | Sequence | None) -> str | None:
    """Heads as the synthesis stage's spec: ``"3.1,4.0"``, ``"7.*"``, or (layer, head) pairs → one
    canonical string (None means every head).  Heads outside the model are refused by synthesis."""
    if heads is None:
        return None
    if isinstance(heads, str):
        items = [part.strip() for part in heads.split(",") if part.strip()]
        for item in items:
            if not re.fullmatch(r"\d{1,6}\.(\d{1,6}|\*)", item):
                raise UserError(f"--heads takes LAYER.HEAD (or LAYER.*) items separated by commas, e.g. 3.1,4.0; got {item!r}")
    else:
        try:
            items = [f"{int(layer)}.{int(head)}" for layer, head in heads]
        except (TypeError, ValueError) as error:
            raise UserError(f"heads must be (layer, head) pairs: {error}") from error
    if not items:
        raise UserError("--heads names no heads")
    unique = sorted(set(items), key=lambda item: tuple(-1 if x == "*" else int(x) for x in item.split(".")))
    return ",".join(unique)


def parse_fractions(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.1,0.25,0.5"`` (or numbers) → a tuple of shares in (0, 1]."""
    try:
        values = tuple(float(x) for x in (text.split(",") if isinstance(text, str) else text) if str(x).strip())
    except ValueError as error:
        raise UserError(f"--fractions must be comma-separated numbers, got {text!r}") from error
    if not values or any(not 0 < v <= 1 for v in values):
        raise UserError(f"--fractions must be numbers in (0, 1], got {text!r}")
    return values


@dataclass(frozen=True)
class ExplainOptions:
    """Everything `explain` needs; `settings()` is the part that decides results."""

    out: Path
    model: Any = "smollm2"  # spec for load_model, or a LoadedModel
    corpus: str = "builtin"
    text_field: str = "text"
    max_sequences: int | None = DEFAULT_MAX_SEQUENCES
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_sentences: int | None = None
    heldout_fraction: float = 0.5
    seed: int = 0
    heads: str | None = None  # spec as `parse_heads` returns it
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    greedy: bool = False
    llm: Any = None  # attndsl.synthesis.llm.LLMConfig, or None for the enumerative search
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 8
    report_examples: int = 3
    progress: bool = True

    @property
    def model_id(self) -> str:
        return self.model if isinstance(self.model, str) else self.model.model_id

    def settings(self) -> dict:
        """What the manifest records for the ``explain`` stage (never the API key)."""
        writer: dict = {"kind": "search"}
        if self.llm is not None:
            public = self.llm.public() if hasattr(self.llm, "public") else dict(self.llm)
            keep = ("model", "base_url", "temperature", "max_tokens", "seed", "n_programs", "repair_rounds", "refine_rounds")
            writer = {"kind": "llm", **{k: public.get(k) for k in keep}}
        return {
            "model": self.model_id,
            "model_hash": None if isinstance(self.model, str) else self.model.file_hash,
            "corpus": self.corpus,
            "text_field": self.text_field,
            "max_sequences": self.max_sequences,
            "max_tokens": self.max_tokens,
            "max_sentences": self.max_sentences,
            "heldout_fraction": self.heldout_fraction,
            "seed": self.seed,
            "heads": self.heads,
            "fractions": list(self.fractions),
            "greedy": self.greedy,
            "writer": writer,
        }

    def check(self) -> None:
        problems = []
        if self.max_sequences is not None and self.max_sequences < 2:
            problems.append("--max-sequences must be at least 2 (one synthesis and one held-out sequence)")
        if self.max_tokens < 2:
            problems.append("--max-tokens must be at least 2")
        if not 0 < self.heldout_fraction < 1:
            problems.append("--heldout-fraction must be between 0 and 1")
        if self.batch_size < 1:
            problems.append("--batch-size must be at least 1")
        if self.report_examples < 0:
            problems.append("--report-examples must not be negative")
        if problems:
            raise UserError("; ".join(problems))


# ------------------------------------------------------------------ result


@dataclass(frozen=True)
class StageRecord:
    """What happened to one stage in this call."""

    name: str
    status: str  # "ran" | "skipped"
    seconds: float


@dataclass(frozen=True)
class ExplainResult:
    """A finished explanation, read from its run directory (`load_result`)."""

    run_dir: Path
    report: Path | None
    n_layers: int
    n_heads: int
    heads: tuple[HeadResult, ...]  # one per head with a program, by layer and head
    library_size: int
    perplexity: tuple[PerplexityPoint, ...]
    stages: tuple[StageRecord, ...] = ()

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def n_explained(self) -> int:
        """Heads that have a program."""
        return len(self.heads)

    @property
    def n_good(self) -> int:
        """Heads whose program reaches `GOOD_IOU` held-out IoU."""
        return sum(1 for h in self.heads if h.heldout_iou >= GOOD_IOU)

    @property
    def mean_heldout_iou(self) -> float:
        return _mean([h.heldout_iou for h in self.heads])

    @property
    def mean_heldout_iou_no_sink(self) -> float:
        return _mean([h.heldout_iou_no_sink for h in self.heads])

    @property
    def n_heldout_sequences(self) -> int:
        return max((h.n_heldout_sequences for h in self.heads), default=0)

    @property
    def n_heldout_tokens(self) -> int:
        return max((h.n_heldout_tokens for h in self.heads), default=0)

    def head(self, layer: int, head: int) -> HeadResult | None:
        return next((h for h in self.heads if (h.layer, h.head) == (layer, head)), None)

    def perplexity_at(self, fraction: float, variant: str = "ranked") -> PerplexityPoint | None:
        """The replacement row for ``fraction`` of all heads (None if not measured)."""
        return next(
            (p for p in self.perplexity if p.variant == variant and math.isclose(p.fraction, fraction, abs_tol=1e-9)),
            None,
        )

    def summary(self) -> str:
        """The short text `attndsl explain` prints at the end."""
        lines = [
            f"heads explained:   {self.n_explained}/{self.n_total_heads} have a program, "
            f"{self.n_good} with held-out IoU >= {GOOD_IOU}",
            f"mean held-out IoU: {_fmt(self.mean_heldout_iou)} (ignoring key 0: {_fmt(self.mean_heldout_iou_no_sink)}; "
            f"{self.n_heldout_sequences} held-out sequences, {self.n_heldout_tokens} tokens)",
            f"library:           {self.library_size} programs",
        ]
        for fraction in (0.25, 0.5):
            point = self.perplexity_at(fraction)
            if point is None:
                continue
            lines.append(
                f"perplexity {fraction:>4.0%}:   {point.ppl_programs:.3f} with programs ({point.increase_programs_pct:+.1f}%), "
                f"{point.ppl_uniform:.3f} uniform ({point.increase_uniform_pct:+.1f}%), {point.ppl_model:.3f} unmodified "
                f"[{point.n_replaced} heads, {point.n_sequences} held-out sequences]"
            )
        if self.report is not None:
            lines.append(f"report:            {self.report}")
        return "\n".join(lines)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _fmt(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3f}"


def load_result(run_dir: str | Path, stages: Sequence[StageRecord] = ()) -> ExplainResult:
    """The `ExplainResult` of a run directory (whatever stages have finished)."""
    run_dir = Path(run_dir)
    library = run_dir / LIBRARY_DIR
    n_layers = n_heads = 0
    if (run_dir / "attention" / "meta.json").exists():
        from attndsl.extraction.store import open_store

        store = open_store(run_dir)
        n_layers, n_heads = store.n_layers, store.n_heads
    shape = (n_layers, n_heads) if n_layers else None
    heads = tuple(sorted(read_best(library / BEST_CSV, shape), key=lambda h: (h.layer, h.head))) if (library / BEST_CSV).exists() else ()
    library_size = len(library_sources(library / LIBRARY_ATTN)) if (library / LIBRARY_ATTN).exists() else 0
    csv_path = find_replacement_csv(run_dir)
    report = run_dir / REPORT_NAME
    return ExplainResult(
        run_dir=run_dir,
        report=report if report.exists() else None,
        n_layers=n_layers,
        n_heads=n_heads,
        heads=heads,
        library_size=library_size,
        perplexity=tuple(read_perplexity(csv_path)) if csv_path is not None else (),
        stages=tuple(stages),
    )


# ------------------------------------------------------------------ stages


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


def run_extract(ctx: Context) -> None:
    from attndsl.extraction.extract import extract

    o = ctx.options
    extract(
        ctx.run_dir,
        model=ctx.loaded(),
        corpus=o.corpus,
        max_sequences=o.max_sequences,
        max_tokens=o.max_tokens,
        max_sentences=o.max_sentences,
        batch_size=o.batch_size,
        heldout_fraction=o.heldout_fraction,
        seed=o.seed,
        text_field=o.text_field,
        progress=o.progress,
    )


def run_synthesize(ctx: Context) -> None:
    """Programs for the heads, the pooled library, each head's best (`attndsl.synthesis.synthesize`).

    `attndsl.synthesis.synthesize.synthesize` also scores the library (it writes
    ``library/best.csv``), so after it the score stage has nothing left to do.
    """
    from attndsl.synthesis.synthesize import synthesize

    o = ctx.options
    synthesize(ctx.run_dir, heads=o.heads, llm_config=o.llm, use_search=o.llm is None, progress=o.progress)


def run_score(ctx: Context) -> None:
    """Re-score the run's library against every head (when ``best.csv`` is missing)."""
    from attndsl.synthesis.synthesize import score_library

    score_library(ctx.run_dir, progress=ctx.options.progress)
    ctx.run.mark_complete("score", {"best_csv": f"{LIBRARY_DIR}/{BEST_CSV}"})


def run_replace(ctx: Context) -> None:
    from attndsl.surrogates.evaluate import run_replacement

    o = ctx.options
    run_replacement(
        ctx.run_dir,
        fractions=o.fractions,
        greedy=o.greedy,
        batch_size=o.batch_size,
        device=o.device,
        progress=o.progress,
        loaded=ctx.loaded(),
    )


def run_report(ctx: Context) -> None:
    from attndsl.reporting.report import build_report

    build_report(ctx.run_dir, examples=ctx.options.report_examples)


def _replace_stage(greedy: bool) -> str:
    return "replace-greedy" if greedy else "replace"


def stage_done(run: Run, stage: str, options: ExplainOptions) -> bool:
    """Whether ``stage``'s results are in the run, complete and intact (so it can be skipped)."""
    path = run.path
    if stage == "extract":
        return run.is_complete("extract") and _store_intact(path / "attention")
    if stage == "synthesize":
        return run.is_complete(stage) and (path / LIBRARY_DIR / LIBRARY_ATTN).is_file()
    if stage == "score":  # synthesize scores its library; `score_library` redoes it when best.csv is gone
        library_ok = all((path / LIBRARY_DIR / f).is_file() for f in (LIBRARY_ATTN, BEST_CSV))
        return library_ok and (run.is_complete("score") or run.is_complete("synthesize"))
    if stage == "replace":
        summary = run.completion(_replace_stage(options.greedy))
        if summary is None:
            return False
        csv_path = path / "replace" / str(summary.get("csv", ""))
        return csv_path.is_file() and [float(f) for f in summary.get("fractions", [])] == list(options.fractions)
    if stage == "report":
        return False  # cheap, and must reflect the latest results
    raise ValueError(f"unknown stage {stage}")


def _store_intact(directory: Path) -> bool:
    """Every chunk of the store is present with the size its index records (no full read)."""
    from attndsl.extraction.store import Store

    return (directory / "meta.json").is_file() and Store(directory).files_complete()


def _check_extract_settings(run: Run, options: ExplainOptions) -> None:
    """Refuse a run whose store was extracted (e.g. by hand) with other settings than these."""
    recorded = run.settings("extract")
    if recorded is None:
        return
    wanted = {
        "model": options.model_id,
        "corpus": options.corpus,
        "text_field": options.text_field,
        "max_sequences": options.max_sequences,
        "max_tokens": options.max_tokens,
        "max_sentences": options.max_sentences,
        "heldout_fraction": options.heldout_fraction,
        "seed": options.seed,
    }
    diffs = [f"{k}: run has {recorded.get(k)!r}, now {v!r}" for k, v in wanted.items() if k in recorded and recorded[k] != v]
    if diffs:
        raise UserError(
            f"{run.path} holds attention extracted with other settings; use a new run directory. "
            "Differences: " + "; ".join(diffs)
        )


#: a stage whose work another stage does as part of its own (synthesize scores its library)
COVERED_BY = {"score": "synthesize"}

RUNNERS = {
    "extract": "run_extract",
    "synthesize": "run_synthesize",
    "score": "run_score",
    "replace": "run_replace",
    "report": "run_report",
}


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def run_pipeline(options: ExplainOptions, log: Callable[[str], None] | None = None) -> ExplainResult:
    """Run (or finish) every stage of ``options`` and return the result."""
    options.check()
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    run = open_run(options.out, STAGE, options.settings())
    _check_extract_settings(run, options)
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


def explain(
    model: Any = "smollm2",
    corpus: str = "builtin",
    out: str | Path = "runs/default",
    *,
    max_sequences: int | None = DEFAULT_MAX_SEQUENCES,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_sentences: int | None = None,
    heldout_fraction: float = 0.5,
    seed: int = 0,
    heads: str | Sequence[tuple[int, int]] | None = None,
    fractions: str | Sequence[float] = DEFAULT_FRACTIONS,
    greedy: bool = False,
    llm: Any = None,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    text_field: str = "text",
    report_examples: int = 3,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ExplainResult:
    """Explain every head of ``model`` on ``corpus`` into the run directory ``out``.

    Runs extract → synthesize → score → replace → report, skipping stages
    already done in ``out`` and resuming interrupted ones; returns the
    `ExplainResult` (per-head programs and IoU, library size, perplexity
    curve, report path).  ``model``: alias, ``.gguf`` file, model directory,
    hub id, or a loaded `attndsl.extraction.models.LoadedModel`; ``corpus``: ``builtin``,
    a ``.txt``/``.jsonl`` file or ``hf:DATASET[:SPLIT]``; ``heads``: ``"L.H,…"``
    ``"L.*"`` or pairs (default all); ``llm``: an `attndsl.synthesis.llm.LLMConfig` (default: the
    offline enumerative search).  ``log`` receives the stage lines (default:
    stderr).
    """
    options = ExplainOptions(
        out=Path(out),
        model=model,
        corpus=corpus,
        text_field=text_field,
        max_sequences=max_sequences,
        max_tokens=max_tokens,
        max_sentences=max_sentences,
        heldout_fraction=heldout_fraction,
        seed=seed,
        heads=parse_heads(heads),
        fractions=parse_fractions(fractions),
        greedy=greedy,
        llm=llm,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        report_examples=report_examples,
        progress=progress,
    )
    return run_pipeline(options, log)
