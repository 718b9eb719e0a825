"""The explanation stage: every head of a run with its category, gloss and programs.

`explain_run(run_dir)` reads a run's ``library/best.csv`` and
``library/library.attn`` (and best.csv's ``short_*`` columns, when the
run has a *short* tier besides the full program), measures each distinct
program's term shares on the first `attndsl.explanations.categories.SHARE_SEQUENCES`
synthesis sequences of the run's attention store (on the built-in stories,
split into words, when the run has no store), and returns a `RunExplanation`:
one `HeadExplanation` per head with

- ``category``: the head's `attndsl.explanations.categories.Category`, from its full
  program (the faithful one; a short program can drop the minority term that
  names a head — SmolLM2's strongest copy head L8H1 keeps only 6 % on copies
  in its 3-term program);
- ``gloss``: the sentence `attndsl.explanations.gloss.gloss` writes for the short program
  (the full one when the run has no short tier) with its shares;
- ``programs``: ``{"short": HeadProgram, "full": HeadProgram}`` or just
  ``{"full": …}``, each with its source and held-out IoU.

This is what the report, ``attndsl heads`` and `attndsl.open_run` show.
"""
from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from attndsl.explanations.categories import CATEGORIES, Category, ProgramShares, categorise, measure_shares
from attndsl.errors import UserError
from attndsl.explanations.gloss import gloss as make_gloss
from attndsl.pipeline.layout import BEST_CSV, LIBRARY_ATTN, LIBRARY_DIR, RunLayout

#: the columns `HeadExplanation.row` gives (``attndsl heads`` prints them)
HEAD_COLUMNS = ("layer", "head", "category", "share", "purity", "heldout_iou", "heldout_iou_no_sink", "program",
                "gloss")


@dataclass(frozen=True)
class HeadProgram:
    """One program of a head (a tier) and its scores."""

    tier: str  # "short" | "full"
    name: str
    source: str
    gloss: str
    synthesis_iou: float
    heldout_iou: float
    heldout_iou_no_sink: float
    n_heldout_sequences: int
    n_heldout_tokens: int
    buckets: dict = field(default_factory=dict)  # length bucket → held-out IoU (when the run has several)


@dataclass(frozen=True)
class HeadExplanation:
    """A head: where it is, what category its program puts it in, and its programs."""

    layer: int
    head: int
    category: Category
    gloss: str
    programs: dict  # tier → HeadProgram ("full" always; "short" when the run has one)
    shares: ProgramShares
    run: "RunExplanation | None" = field(default=None, repr=False, compare=False)

    @property
    def short(self) -> HeadProgram:
        """The program a person reads (the full one when the run has no short tier)."""
        return self.programs.get("short") or self.programs["full"]

    @property
    def full(self) -> HeadProgram:
        return self.programs["full"]

    @property
    def heldout_iou(self) -> float:
        return self.full.heldout_iou

    def row(self) -> dict:
        """One line of the head table (`HEAD_COLUMNS`)."""
        return {
            "layer": self.layer, "head": self.head, "category": self.category.key,
            "share": round(self.category.share, 4), "purity": round(self.category.purity, 4),
            "heldout_iou": _round(self.full.heldout_iou), "heldout_iou_no_sink": _round(self.full.heldout_iou_no_sink),
            "program": self.short.name, "gloss": self.gloss,
        }

    def to_dict(self) -> dict:
        return {
            **self.row(),
            "category_label": self.category.label,
            "category_shares": {k: round(v, 4) for k, v in self.category.shares.items()},
            "terms": [{"index": t.index, "category": t.category, "share": round(t.share, 4)} for t in self.shares.terms],
            "programs": {tier: {k: (_round(v) if isinstance(v, float) else v) for k, v in p.__dict__.items()}
                         for tier, p in self.programs.items()},
        }

    def _repr_html_(self) -> str:
        from attndsl.explanations.notebook import head_html

        return head_html(self)


def _round(x: float) -> float | None:
    return round(x, 4) if isinstance(x, float) and math.isfinite(x) else None


@dataclass(frozen=True)
class RunExplanation:
    """Every head of a run, explained (`explain_run`)."""

    run_dir: Path
    n_layers: int
    n_heads: int
    heads: tuple  # HeadExplanation, by layer then head
    share_sequences: int  # sequences the shares rest on
    share_source: str  # "synthesis" or "builtin words"

    def head(self, layer: int, head: int) -> HeadExplanation:
        for h in self.heads:
            if (h.layer, h.head) == (layer, head):
                return h
        raise UserError(f"layer {layer} head {head} has no program in {self.run_dir}")

    def __getitem__(self, key) -> HeadExplanation:
        layer, head = key
        return self.head(layer, head)

    def __iter__(self):
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)

    def filter(self, category: str | None = None, min_iou: float | None = None, layer: int | None = None) -> list:
        """Heads of one category / from some held-out IoU / in one layer."""
        if category is not None and category not in CATEGORIES:
            raise UserError(f"unknown category '{category}'; choose from {', '.join(CATEGORIES)}")
        out = []
        for h in self.heads:
            if category is not None and h.category.key != category:
                continue
            if layer is not None and h.layer != layer:
                continue
            if min_iou is not None and not (h.heldout_iou >= min_iou):
                continue
            out.append(h)
        return out

    def category_counts(self) -> dict[str, int]:
        """Heads per category, in taxonomy order, categories with no head left out."""
        counts = {key: 0 for key in CATEGORIES}
        for h in self.heads:
            counts[h.category.key] += 1
        return {k: v for k, v in counts.items() if v}

    def best_of_category(self) -> dict[str, HeadExplanation]:
        """The example head of each category: highest purity × held-out IoU (ties: layer, head)."""
        out: dict[str, HeadExplanation] = {}
        for h in self.heads:
            score = h.category.purity * (h.heldout_iou if math.isfinite(h.heldout_iou) else 0.0)
            best = out.get(h.category.key)
            if best is None or score > best.category.purity * (best.heldout_iou if math.isfinite(best.heldout_iou) else 0.0):
                out[h.category.key] = h
        return out

    def _repr_html_(self) -> str:
        from attndsl.explanations.notebook import run_html

        return run_html(self)


# ------------------------------------------------------------------ building


def _builtin_batch(count: int):
    """Token tables from the built-in stories, one sentence each, split into words (no tokenizer needed)."""
    import re
    from importlib import resources

    from attndsl.extraction.batch import TokenBatch
    from attndsl.extraction.features import table_from_words

    text = resources.files("attndsl").joinpath("data", "stories.txt").read_text(encoding="utf-8")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    tables = [table_from_words(re.findall(r"\w+|[^\w\s]", s)) for s in sentences[:count]]
    return TokenBatch.from_tables(tables)


def explain_run(run_dir: str | Path, share_sequences: int | None = None) -> RunExplanation:
    """Every head of ``run_dir`` with category, gloss and programs (see module docstring)."""
    from attndsl.explanations.categories import SHARE_SEQUENCES, share_batch
    from attndsl.pipeline.records import read_best_csv
    from attndsl.reporting.report import library_programs, library_sources
    from attndsl.extraction.store import open_store

    run_dir = Path(run_dir)
    count = share_sequences or SHARE_SEQUENCES
    library = run_dir / LIBRARY_DIR
    if not (library / BEST_CSV).exists():
        raise UserError(f"{run_dir} has no per-head programs yet ({LIBRARY_DIR}/{BEST_CSV}); "
                        f"run `attndsl synthesize {run_dir}` first")
    if not (library / LIBRARY_ATTN).exists():
        raise UserError(f"{library / LIBRARY_ATTN} is missing")
    full = sorted(read_best_csv(library / BEST_CSV), key=lambda r: (r.layer, r.head))
    tiers = {"full": full}
    if any(r.has_short for r in full):  # best.csv's short_* columns: the tier a person reads
        tiers["short"] = [
            dataclasses.replace(r, program_name=r.short_program_name, synthesis_iou=r.short_synthesis_iou,
                                heldout_iou=r.short_heldout_iou, heldout_iou_no_sink=None)
            for r in full if r.has_short
        ]
    from attndsl.synthesis.library import head_buckets_path, read_head_buckets

    bucket_file = head_buckets_path(RunLayout(run_dir).buckets_csv)
    buckets = read_head_buckets(bucket_file) if bucket_file.exists() else {}
    compiled = library_programs(library / LIBRARY_ATTN)
    sources = library_sources(library / LIBRARY_ATTN)
    n_layers = n_heads = 0
    if RunLayout(run_dir).has_store():
        store = open_store(run_dir)
        batch, source = share_batch(store, count), "synthesis"
        n_layers, n_heads = store.n_layers, store.n_heads
    else:
        batch, source = _builtin_batch(count), "builtin words"
    rows = [r for rs in tiers.values() for r in rs]
    if not n_layers and rows:
        n_layers = max(r.layer for r in rows) + 1
        n_heads = max(r.head for r in rows) + 1
    shares: dict[str, ProgramShares] = {}
    for name in sorted({r.program_name for r in rows}):
        if name not in compiled:
            raise UserError(f"{library / BEST_CSV} names program '{name}', which is not in {LIBRARY_ATTN}")
        shares[name] = measure_shares(compiled[name], batch)
    glosses = {name: make_gloss(compiled[name], s) for name, s in shares.items()}
    by_tier = {tier: {(r.layer, r.head): r for r in rs} for tier, rs in tiers.items()}
    heads = []
    for r in tiers["full"]:
        programs = {}
        for tier in ("short", "full"):
            choice = by_tier.get(tier, {}).get((r.layer, r.head))
            if choice is None:
                continue
            programs[tier] = HeadProgram(tier, choice.program_name, sources[choice.program_name],
                                         glosses[choice.program_name], choice.synthesis_iou, choice.heldout_iou,
                                         choice.heldout_iou_no_sink, choice.n_heldout_sequences,
                                         choice.n_heldout_tokens, buckets.get((r.layer, r.head, tier), {}))
        # the category rests on the full program (the faithful one: a short program may drop a minority
        # behaviour that names the head, e.g. a copy term); the gloss a person reads is the short one's
        full, main = programs["full"], programs.get("short") or programs["full"]
        heads.append(HeadExplanation(r.layer, r.head, categorise(shares[full.name]), main.gloss, programs,
                                     shares[full.name]))
    out = RunExplanation(run_dir, n_layers, n_heads, (), len(batch.lengths), source)
    bound = tuple(HeadExplanation(h.layer, h.head, h.category, h.gloss, h.programs, h.shares, out) for h in heads)
    object.__setattr__(out, "heads", bound)
    return out


def open_run(path: str | Path) -> RunExplanation:
    """A run directory's heads, explained: ``attndsl.open_run("runs/default")``.

    ``run.heads`` (each with ``category``, ``gloss``, ``programs`` and scores),
    ``run[18, 8]``, ``run.filter(category="induction")``; in Jupyter the run
    and each head render as HTML, heatmaps included.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory")
    return explain_run(path)


def rows(heads: Iterable[HeadExplanation]) -> list[dict]:
    return [h.row() for h in heads]
