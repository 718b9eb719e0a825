"""The replace stage: replacement curves of a run (heads swapped for their programs).

Perplexity is measured by `attndsl.surrogates.perplexity` on the held-out
sequences; every row says how many sequences and predicted tokens it rests on.
Rows are `attndsl.pipeline.records.ReplacementRow`s, written to
``RUN/replace/`` by that module's one writer.

`replacement_curve` replaces heads in the order given (callers pass them
sorted by held-out IoU, best first) and reports, for each fraction of *all*
the model's heads, the perplexity of the unmodified model, of the model with
the programs in those heads, and of the model with the uniform causal pattern
in the same heads (the paper's baseline), with the % increase of each.

Greedy variant (``greedy=True``): the ranked heads are walked in order and a
head is *skipped* when its marginal cost is extreme — when adding it to the
heads accepted so far raises the perplexity on the probe sequences by more
than ``max_head_cost`` (relative, default 0.05 = +5 %) over the accepted set
alone.  The probe sequences should be synthesis sequences (`attndsl replace`
passes them), so the choice does not look at the held-out text it is scored on.
Each fraction then takes the first heads of the accepted list; the skipped
heads are listed in the row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from attndsl.language import ir
from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable
from attndsl.headnames import head_spec, heads_text
from attndsl.pipeline.layout import RunLayout, replace_stage
from attndsl.pipeline.records import ReplacementRow, write_replacement_csv
from attndsl.surrogates.perplexity import _as_tables, perplexity
from attndsl.extraction.model_facade import model_shape
from attndsl.surrogates.assignment import Assignment
from attndsl.surrogates.patterns import PatternFn

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5)


@dataclass(frozen=True)
class RankedHead:
    """A head, its program, and its held-out IoU (the ranking key)."""

    layer: int
    head: int
    program: ir.Program
    heldout_iou: float = float("nan")


def _as_ranked(ranked) -> list[RankedHead]:
    out = []
    for item in ranked:
        if isinstance(item, RankedHead):
            out.append(item)
        else:
            out.append(RankedHead(int(item[0]), int(item[1]), item[2], float(item[3]) if len(item) > 3 else float("nan")))
    return out


def _increase(value: float, base: float) -> float:
    return 100.0 * (value / base - 1.0)


def greedy_order(
    model,
    probe: Sequence[TokenTable],
    ranked: Sequence[RankedHead],
    limit: int,
    max_head_cost: float = 0.05,
    tokenizer=None,
    batch_size: int = 8,
    pattern_fn: PatternFn | None = None,
    progress: bool = False,
) -> tuple[list[RankedHead], list[RankedHead]]:
    """(accepted, skipped): walk the ranking, skipping heads whose marginal cost is extreme.

    A head is skipped when adding it raises the probe perplexity by more than
    ``max_head_cost`` (relative) over the heads accepted so far.  Stops once
    ``limit`` heads are accepted.
    """
    from tqdm.auto import tqdm

    accepted: list[RankedHead] = []
    skipped: list[RankedHead] = []
    current = perplexity(model, probe, None, tokenizer, batch_size, pattern_fn).ppl
    bar = tqdm(total=limit, desc="greedy", unit="head", disable=not progress)
    with bar:
        for candidate in ranked:
            if len(accepted) >= limit:
                break
            trial = Assignment.from_items((h.layer, h.head, h.program) for h in [*accepted, candidate])
            ppl = perplexity(model, probe, trial, tokenizer, batch_size, pattern_fn).ppl
            if ppl > current * (1.0 + max_head_cost):
                skipped.append(candidate)
                continue
            accepted.append(candidate)
            current = ppl
            bar.update(1)
    return accepted, skipped


def replacement_curve(
    model,
    tokenizer,
    sequences: Sequence[TokenTable] | Sequence[str],
    ranked: Sequence,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    greedy: bool = False,
    probe_sequences: Sequence[TokenTable] | Sequence[str] | None = None,
    max_head_cost: float = 0.05,
    batch_size: int = 8,
    pattern_fn: PatternFn | None = None,
    progress: bool = True,
    buckets: list | None = None,
) -> list[ReplacementRow]:
    """Perplexity as more heads are replaced, in the given order (see the module docstring).

    ``ranked``: `RankedHead`s or (layer, head, program[, heldout_iou]) tuples,
    best first.  ``fractions`` are shares of all the model's heads.  When a
    list is given as ``buckets``, the same curve per length bucket of the
    sequences (`BucketPerplexity`, buckets of `attndsl.synthesis.scoring.length_bucket`)
    is appended to it.
    """
    tables = _as_tables(tokenizer, sequences)
    heads = _as_ranked(ranked)
    n_layers, n_heads = model_shape(model)
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise UserError(f"fraction {fraction} is not in (0, 1]")
    Assignment.from_items((h.layer, h.head, h.program) for h in heads).check(n_layers, n_heads)
    targets = [int(round(f * n_layers * n_heads)) for f in fractions]
    skipped: list[RankedHead] = []
    if greedy:
        probe = _as_tables(tokenizer, probe_sequences) if probe_sequences is not None else tables
        heads, skipped = greedy_order(
            model, probe, heads, max(targets), max_head_cost, tokenizer, batch_size, pattern_fn, progress
        )
    measure = lambda assignment, desc: perplexity(  # noqa: E731
        model, tables, assignment, tokenizer, batch_size, pattern_fn, progress, desc
    )
    base = measure(None, "unmodified")
    rows = []
    for fraction, target in zip(fractions, targets):
        chosen = heads[:target]
        programs = measure(Assignment.from_items((h.layer, h.head, h.program) for h in chosen), f"programs {fraction:g}")
        uniform = measure(Assignment.uniform((h.layer, h.head) for h in chosen), f"uniform {fraction:g}")
        if buckets is not None:
            buckets.extend(_bucket_rows(fraction, len(chosen), tables, base, programs, uniform))
        ious = [h.heldout_iou for h in chosen if not math.isnan(h.heldout_iou)]
        rows.append(
            ReplacementRow(
                variant="greedy" if greedy else "ranked",
                fraction=float(fraction),
                n_target=target,
                n_replaced=len(chosen),
                ppl_model=base.ppl,
                ppl_programs=programs.ppl,
                ppl_uniform=uniform.ppl,
                increase_programs_pct=_increase(programs.ppl, base.ppl),
                increase_uniform_pct=_increase(uniform.ppl, base.ppl),
                mean_heldout_iou=float(np.mean(ious)) if ious else float("nan"),
                n_sequences=base.n_sequences,
                n_tokens=base.n_tokens,
                heads=heads_text(chosen),
                skipped=heads_text([h for h in skipped if (h.layer, h.head) not in {(c.layer, c.head) for c in chosen}])
                if greedy
                else "",
            )
        )
    return rows


@dataclass(frozen=True)
class BucketPerplexity:
    """One fraction's perplexities on the held-out sequences of one length bucket."""

    fraction: float
    n_replaced: int
    bucket: str  # "1-8", "9-16", … ("65+" for the open last one)
    n_sequences: int
    n_tokens: int  # predicted tokens
    ppl_model: float
    ppl_programs: float
    ppl_uniform: float

    @property
    def increase_programs_pct(self) -> float:
        return _increase(self.ppl_programs, self.ppl_model)

    @property
    def increase_uniform_pct(self) -> float:
        return _increase(self.ppl_uniform, self.ppl_model)


def _bucket_rows(fraction, n_replaced, tables, base, programs, uniform) -> list[BucketPerplexity]:
    from attndsl.synthesis.scoring import length_bucket

    keys = [length_bucket(len(t)) for t in tables]
    out = []
    for low, high in sorted(set(keys)):
        where = [i for i, key in enumerate(keys) if key == (low, high)]
        b, pr, u = base.subset(where), programs.subset(where), uniform.subset(where)
        label = f"{low}-{high}" if high is not None else f"{low}+"
        out.append(BucketPerplexity(float(fraction), n_replaced, label, b.n_sequences, b.n_tokens, b.ppl, pr.ppl, u.ppl))
    return out


BUCKET_COLUMNS = ("fraction", "n_replaced", "bucket", "n_sequences", "n_tokens", "ppl_model", "ppl_programs",
                  "increase_programs_pct", "ppl_uniform", "increase_uniform_pct")


def bucket_csv(rows: Sequence[BucketPerplexity]) -> str:
    """``replace/replacement-buckets.csv``: the curve per length bucket of the held-out sequences."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(BUCKET_COLUMNS)
    for r in rows:
        writer.writerow((f"{r.fraction:g}", r.n_replaced, r.bucket, r.n_sequences, r.n_tokens, f"{r.ppl_model:.6f}",
                         f"{r.ppl_programs:.6f}", f"{r.increase_programs_pct:.3f}", f"{r.ppl_uniform:.6f}",
                         f"{r.increase_uniform_pct:.3f}"))
    return out.getvalue()


def format_buckets(rows: Sequence[BucketPerplexity]) -> list[str]:
    """The per-bucket curve as terminal lines, one per fraction and bucket."""
    return [f"  {r.fraction:.0%} replaced, {r.bucket:>6}: {r.n_sequences:4d} seq, {r.n_tokens:6d} predicted, "
            f"programs {r.increase_programs_pct:+.1f}%, uniform {r.increase_uniform_pct:+.1f}%" for r in rows]


def format_table(rows: Sequence[ReplacementRow]) -> str:
    """The rows as an aligned terminal table."""
    header = ("variant", "heads", "replaced", "ppl model", "ppl programs", "Δ programs", "ppl uniform", "Δ uniform", "IoU")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.variant,
                f"{r.fraction:.0%}",
                f"{r.n_replaced}/{r.n_target}",
                f"{r.ppl_model:.3f}",
                f"{r.ppl_programs:.3f}",
                f"{r.increase_programs_pct:+.1f}%",
                f"{r.ppl_uniform:.3f}",
                f"{r.increase_uniform_pct:+.1f}%",
                "-" if math.isnan(r.mean_heldout_iou) else f"{r.mean_heldout_iou:.3f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    if rows:
        text.append(f"({rows[0].n_sequences} held-out sequences, {rows[0].n_tokens} predicted tokens)")
        skipped = [r.skipped for r in rows if r.skipped]
        if skipped:
            text.append(f"greedy skipped: {skipped[-1]}")
    return "\n".join(text)


# --------------------------------------------------------------- runs


def load_ranked_heads(run_dir: str | Path) -> list[RankedHead]:
    """The run's best program per head, best held-out IoU first.

    Reads ``RUN/library/best.csv`` (layer, head, program_name, synthesis_iou,
    heldout_iou) and compiles ``RUN/library/library.attn``; a missing file,
    a malformed row, or a program name the library lacks is a `UserError`.
    """
    from attndsl.errors import AttnError
    from attndsl.pipeline.attnfile import read_attn

    layout = RunLayout(Path(run_dir))
    best, source = layout.best_csv, layout.library_attn
    missing = [p for p in (best, source) if not p.is_file()]
    if missing:
        raise UserError(
            f"{run_dir} has no program library ({', '.join(str(p) for p in missing)} missing); "
            f"run `attndsl synthesize {run_dir}` first"
        )
    try:
        programs = read_attn(source).by_name()
    except AttnError as error:
        raise UserError(f"the run's library does not compile:\n{error.render()}") from error
    from attndsl.synthesis.library import read_best_csv

    heads, problems = [], []
    for row in read_best_csv(best, _store_shape(run_dir)):
        if row.program_name not in programs:
            problems.append(f"{best}: head {head_spec(row.layer, row.head)}: program '{row.program_name}' is not in {source}")
            continue
        heads.append((row.heldout_iou, row.synthesis_iou, row.layer, row.head, programs[row.program_name]))
    if problems:
        raise UserError("the run's library is inconsistent:\n  " + "\n  ".join(problems[:20]))
    heads.sort(key=lambda x: (-_nan_low(x[0]), -_nan_low(x[1]), x[2], x[3]))
    return [RankedHead(layer, head, program, iou) for iou, _, layer, head, program in heads]


def _store_shape(run_dir: str | Path) -> tuple[int, int] | None:
    """(layers, heads) of the run's attention store, or None when it has none."""
    from attndsl.extraction.store import open_store

    if not RunLayout(Path(run_dir)).has_store():
        return None
    store = open_store(run_dir)
    return store.n_layers, store.n_heads


def _nan_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def load_run_model(run_dir: str | Path, device: str = "cpu"):
    """The run's model (`attndsl.extraction.models.LoadedModel`), checked against the manifest.

    The model and tokenizer must be the ones the attention was extracted with
    (file hash, tokenizer settings) and the library must have been made for
    that model; otherwise a `UserError` says what differs.
    """
    from attndsl.extraction.models import load_model, tokenizer_settings
    from attndsl.pipeline.rundir import Run

    run = Run(Path(run_dir))
    extract = run.settings("extract")
    if extract is None:
        raise UserError(f"{run_dir} has no extracted attention; run `attndsl extract --out {run_dir}` first")
    for stage in ("synthesize", "library", "score"):
        settings = run.settings(stage) or {}
        for key in ("model", "model_hash", "tokenizer"):
            if key in settings and key in extract and settings[key] != extract[key]:
                raise UserError(
                    f"{run_dir}: the '{stage}' stage was made for {key} {settings[key]!r}, but the attention "
                    f"was extracted with {extract[key]!r}; the library belongs to another model or tokenizer"
                )
    loaded = load_model(extract["model"], device=device, dtype=extract.get("dtype", "float32"))
    if extract.get("model_hash") and loaded.file_hash != extract["model_hash"]:
        raise UserError(
            f"the model {extract['model']!r} now has weights {loaded.file_hash[:12]}…, but the run was extracted "
            f"with {str(extract['model_hash'])[:12]}…; use the original model or a new run"
        )
    if "tokenizer" in extract and tokenizer_settings(loaded.tokenizer) != extract["tokenizer"]:
        raise UserError(f"the tokenizer of {extract['model']!r} differs from the one the run was extracted with")
    return loaded


def run_replacement(
    run_dir: str | Path,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    greedy: bool = False,
    max_head_cost: float = 0.05,
    max_sequences: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
    loaded=None,
    buckets: list | None = None,
) -> tuple[list[ReplacementRow], Path]:
    """`attndsl replace`: the replacement curve of a run, written to ``RUN/replace/``.

    Heads come from the run's library in order of held-out IoU; perplexity is
    measured on the run's held-out sequences (greedy choices on its synthesis
    sequences).  Returns the rows and the CSV path; the ranked curve per
    length bucket goes to ``replacement-buckets.csv`` and, when a list is
    given as ``buckets``, is appended to it.
    """
    from attndsl.pipeline.rundir import Run
    from attndsl.extraction.store import open_store

    ranked = load_ranked_heads(run_dir)
    store = open_store(run_dir)
    heldout = store.heldout_indices[:max_sequences] if max_sequences else store.heldout_indices
    if not heldout:
        raise UserError(f"{run_dir} has no held-out sequences to measure perplexity on")
    loaded = loaded or load_run_model(run_dir, device)
    if (loaded.n_layers, loaded.n_heads) != (store.n_layers, store.n_heads):
        raise UserError(
            f"the model has {loaded.n_layers}×{loaded.n_heads} heads but the run's store {store.n_layers}×{store.n_heads}"
        )
    Assignment.from_items((h.layer, h.head, h.program) for h in ranked).check(loaded.n_layers, loaded.n_heads)
    tables = store.tables(heldout)
    buckets = [] if buckets is None else buckets
    probe = None
    if greedy:
        synthesis = store.synthesis_indices
        probe = store.tables(synthesis[: min(len(synthesis), 32)]) or None
    rows = replacement_curve(
        loaded.model,
        loaded.tokenizer,
        tables,
        ranked,
        fractions,
        greedy=greedy,
        probe_sequences=probe,
        max_head_cost=max_head_cost,
        batch_size=batch_size,
        progress=progress,
        buckets=buckets,
    )
    layout = RunLayout(Path(run_dir))
    path = write_replacement_csv(layout.replacement_csv(greedy), rows)
    if not greedy:
        from attndsl.pipeline.rundir import atomic_write_text

        atomic_write_text(layout.replacement_buckets_csv, bucket_csv(buckets))
    Run(Path(run_dir)).mark_complete(
        replace_stage(greedy),
        {"fractions": list(fractions), "n_sequences": rows[0].n_sequences, "n_tokens": rows[0].n_tokens, "csv": str(path.name)},
    )
    return rows, path
