"""Where everything lives in a run directory, and whether each stage is complete.

Every path of a run is named here once; stages, readers, the report and the
``explain`` driver all take their paths from `RunLayout` (or the relative
names below), so moving a file means editing this module only::

    RUN/
      manifest.json              settings and completions (`attndsl.pipeline.rundir`)
      attention/                 the attention store (`attndsl.extraction.store`):
        meta.json, chunk-*.json, chunk-*.bin
      synthesis/heads/L3_H1.json each head's candidates (marks the head done)
      programs/L3_H1.attn        the same candidates as source
      llm/                       the LLM writer: requests.jsonl, cache/, heads.json
      library/                   the pooled library: library.attn, library.json,
                                 best.csv, buckets.csv, head_buckets.csv
      scores/                    `attndsl score --library F`: F.best.csv, F.buckets.csv,
                                 F.hypotheses.json
      replace/                   replacement.csv, replacement-greedy.csv
      report.html

Per-head file stems are `attndsl.headnames.head_file_stem`.

**Completeness.**  `stage_complete` answers, for each stage, whether its
results are in the run, complete and intact — the manifest marks it complete
*and* its files are there (the store's chunks with the sizes its index
records).  The ``explain`` driver skips exactly the stages it says are done.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from attndsl.headnames import head_file_stem

MANIFEST = "manifest.json"
STORE_DIR = "attention"
STORE_META = "meta.json"
HEADS_DIR = ("synthesis", "heads")
PROGRAMS_DIR = "programs"
LLM_DIR = "llm"
LIBRARY_DIR = "library"
LIBRARY_ATTN = "library.attn"
LIBRARY_JSON = "library.json"
BEST_CSV = "best.csv"
BUCKETS_CSV = "buckets.csv"
HEAD_BUCKETS_CSV = "head_buckets.csv"
SCORES_DIR = "scores"
REPLACE_DIR = "replace"
REPLACEMENT_CSV = "replacement.csv"
REPLACEMENT_GREEDY_CSV = "replacement-greedy.csv"
REPLACEMENT_BUCKETS_CSV = "replacement-buckets.csv"  # the ranked curve per length bucket
REPORT_NAME = "report.html"

#: the stages of a run, in pipeline order (the names their manifest entries use)
EXTRACT, SYNTHESIZE, SCORE, REPLACE, REPORT = "extract", "synthesize", "score", "replace", "report"
STAGES = (EXTRACT, SYNTHESIZE, SCORE, REPLACE, REPORT)


def replace_stage(greedy: bool) -> str:
    """The manifest name of a replacement stage (ranked and greedy curves are recorded apart)."""
    return "replace-greedy" if greedy else REPLACE


def replacement_csv_name(greedy: bool) -> str:
    return REPLACEMENT_GREEDY_CSV if greedy else REPLACEMENT_CSV


@dataclass(frozen=True)
class RunLayout:
    """The absolute paths of one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def store(self) -> Path:
        return self.root / STORE_DIR

    @property
    def store_meta(self) -> Path:
        return self.store / STORE_META

    def has_store(self) -> bool:
        """Whether the run holds an attention store (its ``meta.json`` exists; whether it is
        readable is for `attndsl.extraction.store.open_store` to say)."""
        return self.store_meta.exists()

    @property
    def heads_dir(self) -> Path:
        return self.root.joinpath(*HEADS_DIR)

    def head_json(self, layer: int, head: int) -> Path:
        return self.heads_dir / f"{head_file_stem(layer, head)}.json"

    def head_attn(self, layer: int, head: int) -> Path:
        return self.root / PROGRAMS_DIR / f"{head_file_stem(layer, head)}.attn"

    @property
    def llm_dir(self) -> Path:
        return self.root / LLM_DIR

    @property
    def llm_cache(self) -> Path:
        """One JSON file per answered request, keyed by the request's hash."""
        return self.llm_dir / "cache"

    @property
    def llm_requests(self) -> Path:
        return self.llm_dir / "requests.jsonl"

    @property
    def llm_heads(self) -> Path:
        return self.llm_dir / "heads.json"

    @property
    def library_dir(self) -> Path:
        return self.root / LIBRARY_DIR

    @property
    def library_attn(self) -> Path:
        return self.library_dir / LIBRARY_ATTN

    @property
    def library_json(self) -> Path:
        return self.library_dir / LIBRARY_JSON

    @property
    def best_csv(self) -> Path:
        return self.library_dir / BEST_CSV

    @property
    def buckets_csv(self) -> Path:
        return self.library_dir / BUCKETS_CSV

    @property
    def scores_dir(self) -> Path:
        return self.root / SCORES_DIR

    def scores_best_csv(self, stem: str) -> Path:
        """Where `attndsl score --library FILE` writes FILE's per-head table."""
        return self.scores_dir / f"{stem}.best.csv"

    def scores_buckets_csv(self, stem: str) -> Path:
        return self.scores_dir / f"{stem}.buckets.csv"

    def hypotheses_json(self, stem: str) -> Path:
        return self.scores_dir / f"{stem}.hypotheses.json"

    @property
    def replace_dir(self) -> Path:
        return self.root / REPLACE_DIR

    def replacement_csv(self, greedy: bool = False) -> Path:
        return self.replace_dir / replacement_csv_name(greedy)

    @property
    def replacement_buckets_csv(self) -> Path:
        return self.replace_dir / REPLACEMENT_BUCKETS_CSV

    @property
    def report(self) -> Path:
        return self.root / REPORT_NAME


# ------------------------------------------------------------------ completeness


def store_intact(layout: RunLayout) -> bool:
    """Every chunk of the store is present with the size its index records (no full read)."""
    from attndsl.extraction.store import Store

    return layout.store_meta.is_file() and Store(layout.store).files_complete()


def stage_complete(run, stage: str, fractions: Sequence[float] = (), greedy: bool = False) -> bool:
    """Whether ``stage``'s results are in ``run`` (an `attndsl.pipeline.rundir.Run`), complete and intact.

    - extract: marked complete and the store intact (`store_intact`);
    - synthesize: marked complete and ``library.attn`` present;
    - score: ``library.attn`` and ``best.csv`` present and either score or
      synthesize (which scores its library) marked complete;
    - replace: the curve for ``greedy`` marked complete, its CSV present and
      measured at exactly ``fractions``;
    - report: never (it is cheap and must show the latest results).
    """
    layout = RunLayout(run.path)
    if stage == EXTRACT:
        return run.is_complete(EXTRACT) and store_intact(layout)
    if stage == SYNTHESIZE:
        return run.is_complete(SYNTHESIZE) and layout.library_attn.is_file()
    if stage == SCORE:
        library_ok = layout.library_attn.is_file() and layout.best_csv.is_file()
        return library_ok and (run.is_complete(SCORE) or run.is_complete(SYNTHESIZE))
    if stage == REPLACE:
        outcome = run.completion(replace_stage(greedy))
        if outcome is None:
            return False
        csv_path = layout.replace_dir / str(outcome.get("csv", ""))
        return csv_path.is_file() and [float(f) for f in outcome.get("fractions", [])] == list(fractions)
    if stage == REPORT:
        return False
    raise ValueError(f"unknown stage {stage}")


def refuse_other_extraction(run, wanted: dict) -> None:
    """A `UserError` if ``run``'s store was extracted (e.g. by hand) with other values of ``wanted``'s keys.

    Only keys the extract stage recorded are compared (a run made before a
    setting existed is not refused for it).
    """
    from attndsl.errors import UserError

    recorded = run.settings(EXTRACT)
    if recorded is None:
        return
    diffs = [f"{k}: run has {recorded.get(k)!r}, now {v!r}" for k, v in wanted.items() if k in recorded and recorded[k] != v]
    if diffs:
        raise UserError(
            f"{run.path} holds attention extracted with other settings; use a new run directory. "
            "Differences: " + "; ".join(diffs)
        )
