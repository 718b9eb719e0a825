"""The program library: every head's candidates pooled, de-duplicated, capped, scored.

Protocol (DESIGN.md, "The metric"): a head's best program is the best on
*synthesis* sequences over the whole pooled library of the model, not only the
programs written for that head; its reported score is its soft IoU on the
*held-out* sequences, beside the variant that ignores key 0.

Steps (`build_library`, then `choose_best`):

1. **Pool** the candidates of all heads (search and LLM, or a user's file).
2. **De-duplicate by behaviour**: programs whose outputs on the synthesis
   sequences are identical (rounded to 1e-7, hashed) are one program; the
   first seen (highest IoU for its own head) keeps its name.
3. **Screen and cap**: every distinct program is scored against every head on
   a seeded subsample of the synthesis sequences (the kernels' fused scorer,
   all heads at once); programs are ranked by how many heads they are best
   for, then by their best IoU on any head, and the first ``cap`` are kept.
4. **Choose**: for each head, its ``top_k`` library programs on the subsample
   (and the programs written for it) are scored on all synthesis sequences,
   and the best is that head's program.  Held-out IoU is computed for it.

Two tiers per head: the *full* program (the best, as above: for fidelity and
substitution) and the *short* program (`is_short`: at most `SHORT_MAX_TERMS`
terms, sets and lexicons of at most `SHORT_MAX_ENTRIES` entries: for people),
chosen the same way among the library's short programs.  Candidates marked
``tier="short"`` (the search's short variants) join the library after the
cap and compete only for the short tier, so the full tier is exactly what it
would be without them.  The short tier is the best short program that does
not beat the full one on synthesis (short IoU ≤ full IoU on synthesis always
holds; a short-only candidate that beats the full program by a hair is passed
over); only when every short candidate beats the full program does the best
of them become the full program too.
Held-out IoU of both tiers is also kept per sequence, for the per-length
table ``library/buckets.csv`` (`bucket_rows`).

Files (atomic) in a run: ``library/library.attn`` (all programs),
``library/library.json`` (origin, head written for, synthesis IoU per
program), ``library/best.csv`` (one row per head, both tiers: its record,
reader and writer are `attndsl.pipeline.records`'), ``library/buckets.csv``
(held-out IoU per length bucket); the paths are `attndsl.pipeline.layout`'s.

The module is over 400 lines because pooling, screening, choosing both tiers
and the per-length tables are one protocol whose steps share the library's
screening matrix and the tie-breaking rules; split, each part would need the
others' internals.

Why this module is over 400 lines: pooling, de-duplication, the cap and the
choice of both tiers are one protocol over the same scored subsample, and
splitting it would pass that state between modules.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from attndsl.language import ir
from attndsl.extraction.batch import TokenBatch
from attndsl.errors import AttnError, UserError
from attndsl.pipeline import layout
from attndsl.pipeline.records import (  # noqa: F401  (best.csv's record, reader and writer; re-exported)
    BEST_COLUMNS, BEST_CSV_COLUMNS, BEST_REQUIRED, SHORT_COLUMNS, HeadChoice, best_csv, read_best_csv)
from attndsl.pipeline.rundir import Int, atomic_write_json, atomic_write_text, read_csv, read_json
from attndsl.language.validate import compile_source

#: bounds of a short program (`is_short`): terms, and entries of any set or lexicon
SHORT_MAX_TERMS = 3
SHORT_MAX_ENTRIES = 8
#: ``library.json``: metadata of each program of ``library.attn``
LIBRARY_META_SCHEMA = {"programs": [{"name": str, "origin?": str, "layer?": (Int(0), None), "head?": (Int(0), None),
                                     "synthesis_iou?": (float, None), "tier?": str}]}


@dataclass(frozen=True)
class LibraryProgram:
    """One program of the library and where it came from."""

    name: str
    source: str  # canonical .attn text of exactly this program
    origin: str  # "search", "llm", "user" …
    layer: int | None = None  # head it was written for (None: not written for one)
    head: int | None = None
    synthesis_iou: float | None = None  # on that head, as its writer measured it
    writer: str | None = None  # who wrote it beyond the origin: the LLM's model name for origin "llm"
    rationale: str | None = None  # the writer's one-line hypothesis (LLM programs)
    tier: str | None = None  # "short": a candidate for the short tier only (see the module docstring)

    def program(self) -> ir.Program:
        return _compiled(self.source, self.name)

    def meta(self) -> dict:
        out = asdict(self)
        out.pop("source")
        if out["tier"] is None:  # library.json of runs without short candidates stays as it was
            del out["tier"]
        return out


def _compiled(source: str, name: str) -> ir.Program:
    """A library program's IR (immutable), parsed once: the library's steps ask for each
    program several times, and parsing costs more than scoring it on short runs.  A program
    renamed (`attndsl.explanations.naming.name_library` changes only its header) is not
    parsed again: the IR does not depend on the name but for its ``name`` field."""
    from attndsl.synthesis.prompts import program_name, rename_program

    header = program_name(source)
    try:
        if header is None:
            return _compiled_text(source)
        return replace(_compiled_text(rename_program(source, _ANONYMOUS)), name=header)
    except AttnError:  # not cached: parsed again for diagnostics that name the program
        return compile_source(source, f"<{name}>")[0]


#: the header name programs are parsed under by `_compiled` (a valid name no writer uses)
_ANONYMOUS = "anonymous_library_program"


#: IR by anonymised source (`_compiled`), oldest first; at most `_CACHE_SIZE`
_CACHE: "OrderedDict[str, ir.Program]" = OrderedDict()
_CACHE_SIZE = 1 << 13
_CACHE_LOCK = threading.Lock()


def _compiled_text(source: str) -> ir.Program:
    with _CACHE_LOCK:
        program = _CACHE.get(source)
    if program is None:
        program = compile_source(source, "<library>")[0]
        _cache(source, program)
    return program


def _cache(source: str, program: ir.Program) -> None:
    with _CACHE_LOCK:
        _CACHE[source] = program
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)


def remember_compiled(source: str, program: ir.Program) -> None:
    """Tell the library the IR of ``source`` (one program), which its writer has just compiled:
    the library then need not parse it again (a softmax program with its word tables takes about
    a tenth of a second).  Thread-safe: the search's softmax fits run on worker threads."""
    from attndsl.synthesis.prompts import program_name, rename_program

    if program_name(source) is None:
        _cache(source, program)
    else:
        _cache(rename_program(source, _ANONYMOUS), replace(program, name=_ANONYMOUS))


def is_short(program: ir.Program) -> bool:
    """Whether ``program`` is short enough for people: at most `SHORT_MAX_TERMS` terms,
    and every set (``x in {…}``, masks included) and lexicon at most `SHORT_MAX_ENTRIES` entries."""
    if len(program.terms) > SHORT_MAX_TERMS:
        return False
    for node in ir.walk(program):
        if isinstance(node, (ir.StrIn, ir.NumIn)) and len(node.values) > SHORT_MAX_ENTRIES:
            return False
        if isinstance(node, ir.Lexicon) and len(node.entries) > SHORT_MAX_ENTRIES:
            return False
    return True


# ------------------------------------------------------------------ pooling


def behaviour_key(values: np.ndarray) -> str:
    """Hash of a program's outputs over causal entries (rounded, so float noise does not split)."""
    rounded = np.round(np.asarray(values, dtype=np.float64), 7) + 0.0  # + 0.0 folds -0.0 into 0.0
    return hashlib.sha256(rounded.tobytes()).hexdigest()


@dataclass(eq=False)
class SeenBehaviours:
    """Behaviour keys of the programs `dedupe` kept so far (pass the same object to a second call).

    ``full``: keys on the whole batch; ``probe``: with a probe batch, each probe key of a kept
    program → the kept programs with that probe key whose whole-batch key was not needed yet."""

    full: set = field(default_factory=set)
    probe: dict = field(default_factory=dict)


def dedupe(programs: Sequence[LibraryProgram], batch: TokenBatch, chunk: int = 32,
           seen: SeenBehaviours | None = None, probe: TokenBatch | None = None) -> list[LibraryProgram]:
    """Drop programs whose outputs on ``batch`` equal an earlier program's (first one kept).

    ``seen``: behaviours of programs kept before (updated in place), so a second call drops
    programs that behave like those of the first.  ``probe`` (long runs): a batch of some of
    ``batch``'s sequences; every program is evaluated there, and only programs whose probe
    outputs equal another's are evaluated on ``batch`` too.  Equal on ``batch`` implies equal on
    the probe, so the programs kept are exactly those kept without it, at a fraction of the
    evaluation."""
    seen = SeenBehaviours() if seen is None else seen
    compiled = [p.program() for p in programs]
    if probe is None:
        keys = _behaviour_keys(compiled, batch, chunk)
        kept = []
        for program, key in zip(programs, keys):
            if key not in seen.full:
                seen.full.add(key)
                kept.append(program)
        return kept
    probe_keys = _behaviour_keys(compiled, probe, chunk)
    counts: dict[str, int] = {}
    for key in probe_keys:
        counts[key] = counts.get(key, 0) + 1
    # whole-batch keys are needed only where a probe key repeats (here, or against a kept program)
    need = [i for i, key in enumerate(probe_keys) if counts[key] > 1 or key in seen.probe]
    pending = [prog for key in dict.fromkeys(probe_keys[i] for i in need) for prog in seen.probe.get(key, ())]
    full_keys = _behaviour_keys(pending + [compiled[i] for i in need], batch, chunk)
    seen.full.update(full_keys[:len(pending)])
    for key in dict.fromkeys(probe_keys[i] for i in need):
        if key in seen.probe:
            seen.probe[key] = []  # resolved: their whole-batch keys are in seen.full
    full_of = dict(zip(need, full_keys[len(pending):]))
    kept = []
    for i, (program, key) in enumerate(zip(programs, probe_keys)):
        if i not in full_of:  # a probe behaviour no other program has: new on the whole batch too
            seen.probe[key] = [compiled[i]]
            kept.append(program)
        elif full_of[i] not in seen.full:
            seen.full.add(full_of[i])
            seen.probe.setdefault(key, [])
            kept.append(program)
    return kept


def _behaviour_keys(programs: Sequence[ir.Program], batch: TokenBatch, chunk: int) -> list[str]:
    from attndsl.kernels import evaluate_programs

    keys = []
    for start in range(0, len(programs), chunk):
        keys.extend(behaviour_key(row) for row in evaluate_programs(list(programs[start:start + chunk]), batch))
    return keys


def unique_names(programs: Sequence[LibraryProgram]) -> list[LibraryProgram]:
    """Rename clashing programs (``name_2``, ``name_3`` …) and make the source agree."""
    from attndsl.synthesis.prompts import rename_program

    used: set[str] = set()
    out = []
    for p in programs:
        name, n = p.name, 1
        while name in used:
            n += 1
            name = f"{p.name}_{n}"
        used.add(name)
        if name != p.name:
            p = replace(p, name=name, source=rename_program(p.source, name))
        out.append(p)
    return out


# ------------------------------------------------------------------ scoring


@dataclass(frozen=True, eq=False)
class Library:
    """Distinct programs plus their synthesis scores against every head."""

    programs: tuple[LibraryProgram, ...]
    screen_iou: np.ndarray  # float64 [P, layers, heads] on the screening subsample
    n_screen_sequences: int
    n_full: int | None = None  # programs[:n_full] compete for the full tier (None: all); the rest are short-only

    def full_tier(self, index: int) -> bool:
        return self.n_full is None or index < self.n_full


#: causal entries the library screen / the synthesis-side choice score on at most: the most 64
#: sequences (the screen) and 352 sequences of ≤ 64 tokens hold, so runs of short sequences are untouched
LIBRARY_SCREEN_ENTRIES = 64 * 2080
CHOICE_ENTRIES = 352 * 2080
#: causal entries of the probe the behaviour check evaluates every program on first (`dedupe`;
#: exact at any size, this only decides how much evaluation is saved)
DEDUPE_PROBE_ENTRIES = 64 * 2080


def _score(programs: Sequence[ir.Program], source, tables_batch: TokenBatch, seq_indices, **kw):
    from attndsl.synthesis.scoring import score

    return score(list(programs), source, tables_batch, seq_indices, **kw)


def build_library(
    candidates: Sequence[LibraryProgram],
    source,
    synthesis_tables,
    synthesis_indices: Sequence[int],
    cap: int = 1000,
    screen_sequences: int = 64,
    seed: int = 0,
    progress: bool = False,
    max_screen_entries: int | None = LIBRARY_SCREEN_ENTRIES,
) -> Library:
    """Pool, de-duplicate by behaviour on the synthesis sequences, screen and cap (see module docstring)."""
    if cap < 1:
        raise UserError("the library cap must be at least 1")
    synthesis_indices = np.asarray(synthesis_indices, dtype=np.int64)
    if len(synthesis_indices) == 0:
        raise UserError("no synthesis sequences to build the library on")
    extras = [p for p in candidates if p.tier == "short"]
    candidates = [p for p in candidates if p.tier != "short"]
    if not candidates:  # only short candidates: they are the library
        candidates, extras = [replace(p, tier=None) for p in extras], []
    ordered = sorted(candidates, key=lambda p: -(p.synthesis_iou if p.synthesis_iou is not None else -1.0))
    full_batch = TokenBatch.from_tables(synthesis_tables)
    lengths = [len(t) for t in synthesis_tables]
    probe_rows = fit_entries(np.arange(len(synthesis_tables)), lengths, DEDUPE_PROBE_ENTRIES, seed)
    probe = (TokenBatch.from_tables([synthesis_tables[i] for i in probe_rows])
             if len(probe_rows) < len(synthesis_tables) else None)
    seen = SeenBehaviours()
    distinct = dedupe(_canonical_first(ordered), full_batch, seen=seen, probe=probe)
    distinct = unique_names(distinct)
    screen = _subsample(len(synthesis_indices), screen_sequences, seed)
    screen = fit_entries(screen, lengths, max_screen_entries, seed)
    screen_batch = TokenBatch.from_tables([synthesis_tables[i] for i in screen])
    result = _score([p.program() for p in distinct], source, screen_batch, synthesis_indices[screen], progress=progress)
    iou = result.iou
    if len(distinct) > cap:
        flat = iou.reshape(len(distinct), -1)
        best_for = np.bincount(np.argmax(flat, axis=0), minlength=len(distinct))
        peak = flat.max(axis=1)
        order = sorted(range(len(distinct)), key=lambda i: (-best_for[i], -peak[i], i))[:cap]
        order.sort()
        distinct = [distinct[i] for i in order]
        iou = iou[order]
    if not extras:
        return Library(tuple(distinct), iou, len(screen))
    # short-tier candidates: after the cap, never displacing a program; one behaving like a kept one is dropped
    ordered = sorted(extras, key=lambda p: -(p.synthesis_iou if p.synthesis_iou is not None else -1.0))
    more = dedupe(_canonical_first(ordered), full_batch, seen=seen, probe=probe)
    more = unique_names(list(distinct) + more)[len(distinct):]
    if more:
        extra_iou = _score([p.program() for p in more], source, screen_batch, synthesis_indices[screen]).iou
        iou = np.concatenate([iou, extra_iou])
    return Library(tuple(distinct) + tuple(more), iou, len(screen), n_full=len(distinct))


def _canonical_first(programs: Sequence[LibraryProgram]) -> list[LibraryProgram]:
    """Drop exact duplicates (same IR apart from the name) before the costlier behaviour check."""
    out, seen = [], set()
    for p in programs:
        prog = p.program()
        key = (prog.terms, prog.fallback, prog.form, prog.masks)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def fit_entries(chosen: np.ndarray, lengths, max_entries: int | None, seed: int) -> np.ndarray:
    """``chosen`` (sorted sequence indices) itself when its causal entries fit ``max_entries``,
    else a seeded random subset of it (sorted) that fits, at least one sequence.

    Long sequences: scoring is programs × entries × heads work, so the
    synthesis-side scores (screen and choice) rest on a budget of entries;
    held-out scores never do."""
    chosen = np.asarray(chosen, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    sizes = lengths[chosen] * (lengths[chosen] + 1) // 2
    if max_entries is None or int(sizes.sum()) <= max_entries:
        return chosen
    order = np.random.default_rng(seed).permutation(len(chosen))
    fits = np.cumsum(sizes[order]) <= max_entries
    fits[0] = True
    return np.sort(chosen[order[fits]])


def _scaled(max_entries: int | None, lengths) -> int | None:
    """The choice's entries budget for these synthesis lengths: as given while every sequence has
    at most 64 tokens, times 64 / longest beyond (as the search's budgets,
    `attndsl.synthesis.search.greedy.entries_budget`), so long runs choose on fewer rows."""
    longest = int(max(lengths, default=0))
    if max_entries is None or longest <= 64:
        return max_entries
    return max(1, max_entries * 64 // longest)


def _subsample(n: int, size: int, seed: int) -> np.ndarray:
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


#: scores equal to this many decimals count as a tie, broken by library order, so
#: float noise from parallel summation cannot flip a head's choice between runs
_TIE_DECIMALS = 9


def choose_best(
    library: Library,
    source,
    synthesis_tables,
    synthesis_indices: Sequence[int],
    heldout_tables,
    heldout_indices: Sequence[int],
    top_k: int = 4,
    progress: bool = False,
    max_choice_entries: int | None = CHOICE_ENTRIES,
    seed: int = 0,
) -> list[HeadChoice]:
    """Each head's best program (and best short program) on all synthesis sequences, with held-out IoU.

    Synthesis sequences holding more than ``max_choice_entries`` causal entries
    (times 64 / longest for sequences over 64 tokens: `_scaled`) are chosen on a seeded
    subset of them (`fit_entries`); held-out scores use all.  Each program is scored only on
    the heads whose candidate it is (`attndsl.synthesis.scoring.score_pairs`, bit-identical)."""
    programs = [p.program() for p in library.programs]
    n_layers, n_heads = library.screen_iou.shape[1:]
    full_rows = np.array([i for i in range(len(programs)) if library.full_tier(i)], dtype=np.int64)
    short_rows = np.array([i for i, p in enumerate(programs) if is_short(p)], dtype=np.int64)
    shortlist: dict[tuple[int, int], set[int]] = {}
    short_list: dict[tuple[int, int], set[int]] = {}
    for layer in range(n_layers):
        for head in range(n_heads):
            written = {i for i, p in enumerate(library.programs) if p.layer == layer and p.head == head}
            col = np.round(library.screen_iou[full_rows, layer, head], _TIE_DECIMALS)
            top = set(full_rows[np.argsort(-col, kind="stable")[:top_k]].tolist())
            shortlist[(layer, head)] = top | {i for i in written if library.full_tier(i)}
            col = np.round(library.screen_iou[short_rows, layer, head], _TIE_DECIMALS)
            top = set(short_rows[np.argsort(-col, kind="stable")[:top_k]].tolist())
            short_list[(layer, head)] = top | (written & set(short_rows.tolist()))
    needed = sorted(set().union(*shortlist.values(), *short_list.values()))
    lengths = [len(t) for t in synthesis_tables]
    chosen = fit_entries(np.arange(len(synthesis_tables)), lengths, _scaled(max_choice_entries, lengths), seed)
    if len(chosen) < len(synthesis_tables):
        synthesis_tables = [synthesis_tables[i] for i in chosen]
        synthesis_indices = np.asarray(synthesis_indices, dtype=np.int64)[chosen]
    synth_batch = TokenBatch.from_tables(synthesis_tables)
    # only each head's own candidates are scored on it (bit-identical to the full matrix's entries)
    full = _score_pairs([programs[i] for i in needed], _pair_columns(needed, (shortlist, short_list), n_heads),
                        source, synth_batch, synthesis_indices).iou
    row_of = {p: r for r, p in enumerate(needed)}

    def ranked(layer: int, head: int, cands: set[int]) -> list[tuple[int, float]]:
        scored = sorted(((round(float(full[row_of[i], layer, head]), _TIE_DECIMALS), -i) for i in cands), reverse=True)
        return [(-neg, float(value)) for value, neg in scored]

    best: dict[tuple[int, int], tuple[int, float]] = {}
    best_short: dict[tuple[int, int], tuple[int, float] | None] = {}
    for key in shortlist:
        best[key] = ranked(*key, shortlist[key])[0]
        shorts = ranked(*key, short_list[key])
        # the best short program that does not beat the full one (so the full tier stays what it
        # was without short-only candidates); only if every short one beats it, the best becomes full too
        within = [s for s in shorts if s[1] <= best[key][1]]
        best_short[key] = within[0] if within else (shorts[0] if shorts else None)
        if not within and shorts:
            best[key] = shorts[0]
    winners = sorted({i for i, _ in best.values()} | {s[0] for s in best_short.values() if s is not None})
    held_batch = TokenBatch.from_tables(heldout_tables)
    lengths = np.asarray(held_batch.lengths, dtype=np.int64)
    won = ({key: {index} for key, (index, _) in best.items()},
           {key: {s[0]} for key, s in best_short.items() if s is not None})
    held = _score_pairs([programs[i] for i in winners], _pair_columns(winners, won, n_heads), source, held_batch,
                        heldout_indices, ignore_sink=True, per_sequence=True)
    held_iou, held_iou0, held_seq = held.iou, held.iou_ignore_sink, held.per_sequence.astype(np.float32)
    held_row = {p: r for r, p in enumerate(winners)}
    n_seq, n_tok = len(held_batch), int(held_batch.n_tokens)
    out = []
    for (layer, head), (index, synth_value) in sorted(best.items()):
        r = held_row[index]
        short = best_short[(layer, head)]
        extra = {}
        if short is not None:
            rs = held_row[short[0]]
            extra = dict(short_program_name=library.programs[short[0]].name, short_synthesis_iou=short[1],
                         short_heldout_iou=float(held_iou[rs, layer, head]),
                         short_heldout_sequence_iou=held_seq[rs, layer, head])
        out.append(HeadChoice(layer, head, library.programs[index].name, synth_value,
                              float(held_iou[r, layer, head]), float(held_iou0[r, layer, head]), n_seq, n_tok,
                              heldout_lengths=lengths, heldout_sequence_iou=held_seq[r, layer, head], **extra))
    return out


def _pair_columns(rows: Sequence[int], wanted: Sequence[dict], n_heads: int) -> list[list[int]]:
    """For each program index of ``rows``, the flat head columns (``layer * n_heads + head``) whose
    candidate sets in ``wanted`` ((layer, head) → program indices) hold it."""
    columns: dict[int, set[int]] = {i: set() for i in rows}
    for sets in wanted:
        for (layer, head), indices in sets.items():
            for i in indices:
                columns[i].add(layer * n_heads + head)
    return [sorted(columns[i]) for i in rows]


def _score_pairs(programs: Sequence[ir.Program], columns, source, batch: TokenBatch, seq_indices, **kw):
    from attndsl.synthesis.scoring import score_pairs

    # one chunk for all of them: the search's programs share pool terms, each evaluated once per tile
    return score_pairs(list(programs), columns, source, batch, seq_indices, program_chunk=1024, **kw)


# ------------------------------------------------------------------ files


def library_source(programs: Sequence[LibraryProgram]) -> str:
    """All programs as one ``.attn`` file, each with a comment saying where it came from."""
    parts = []
    for p in programs:
        origin = p.origin if p.layer is None else f"{p.origin}, written for layer {p.layer} head {p.head}"
        if p.synthesis_iou is not None:
            origin += f", synthesis IoU {p.synthesis_iou:.3f}"
        parts.append(f"# {origin}\n{p.source.strip()}\n")
    return "\n".join(parts)


def bucket_rows(choices: Sequence[HeadChoice]) -> list:
    """Held-out IoU per length bucket (`attndsl.synthesis.scoring.length_buckets`) of both tiers, from the
    per-sequence scores the choices carry (empty when they carry none, e.g. read from best.csv).

    Columns ``full`` (every head) and ``short`` (the heads with a short program)."""
    from attndsl.synthesis.scoring import length_buckets

    scored = [c for c in choices if c.heldout_sequence_iou is not None and c.heldout_lengths is not None]
    if not scored:
        return []
    lengths = scored[0].heldout_lengths
    columns = {"full": np.stack([c.heldout_sequence_iou for c in scored])}
    shorts = [c.short_heldout_sequence_iou for c in scored if c.short_heldout_sequence_iou is not None]
    if shorts:
        columns["short"] = np.stack(shorts)
    return length_buckets(lengths, columns)


def buckets_csv(rows) -> str:
    """``buckets.csv``: bucket, min/max tokens, sequences, tokens, mean held-out IoU of each tier."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("bucket", "min_tokens", "max_tokens", "sequences", "tokens", "mean_heldout_iou_full",
                     "mean_heldout_iou_short"))
    for r in rows:
        short = r.means.get("short", float("nan"))
        writer.writerow((r.label, r.low, "" if r.high is None else r.high, r.sequences, r.tokens,
                         f"{r.means['full']:.6f}", "" if math.isnan(short) else f"{short:.6f}"))
    return buffer.getvalue()


def write_library(directory: str | Path, programs: Sequence[LibraryProgram], choices: Sequence[HeadChoice] | None,
                  best_name: str = layout.BEST_CSV) -> None:
    """``library.attn`` (and its IR cache, `attndsl.pipeline.ircache`) + ``library.json`` (+ ``best_name``
    and ``buckets.csv`` when choices are given), atomically."""
    from attndsl.pipeline import ircache
    from attndsl.pipeline.records import write_best_csv

    directory = Path(directory)
    text = library_source(programs)
    atomic_write_text(directory / layout.LIBRARY_ATTN, text)
    # the IR and canonical sources beside it: the later stages then need not parse 10+ MB of tables
    ircache.write(directory / layout.LIBRARY_ATTN, text, [p.program() for p in programs],
                  [p.source.strip() for p in programs])
    atomic_write_json(directory / layout.LIBRARY_JSON, {"programs": [p.meta() for p in programs]})
    if choices is not None:
        write_best_csv(directory / best_name, choices)
        write_buckets(directory / layout.BUCKETS_CSV, choices)


HEAD_BUCKET_COLUMNS = ("layer", "head", "tier", "bucket", "sequences", "tokens", "heldout_iou")


def head_bucket_rows(choices: Sequence[HeadChoice]) -> list[tuple]:
    """Each head's held-out IoU per length bucket, per tier: rows of `HEAD_BUCKET_COLUMNS`."""
    from attndsl.synthesis.scoring import length_buckets

    rows = []
    for c in choices:
        if c.heldout_sequence_iou is None or c.heldout_lengths is None:
            continue
        for tier, values in (("full", c.heldout_sequence_iou), ("short", c.short_heldout_sequence_iou)):
            if values is None:
                continue
            for b in length_buckets(c.heldout_lengths, {"iou": np.asarray(values, dtype=np.float64)[None, :]}):
                rows.append((c.layer, c.head, tier, b.label, b.sequences, b.tokens, b.means["iou"]))
    return rows


def head_buckets_path(buckets_path: str | Path) -> Path:
    """Where the per-head table lives beside a ``…buckets.csv`` (``…head_buckets.csv``)."""
    path = Path(buckets_path)
    return path.with_name(path.name[: -len(layout.BUCKETS_CSV)] + layout.HEAD_BUCKETS_CSV)


def write_buckets(path: str | Path, choices: Sequence[HeadChoice]) -> None:
    """The per-length table of ``choices`` at ``path`` and the per-head one beside it (`head_buckets_path`);
    nothing when they carry no per-sequence scores."""
    rows = bucket_rows(choices)
    if rows:
        atomic_write_text(Path(path), buckets_csv(rows))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(HEAD_BUCKET_COLUMNS)
        for layer, head, tier, label, sequences, tokens, iou in head_bucket_rows(choices):
            writer.writerow((layer, head, tier, label, sequences, tokens, f"{iou:.6f}"))
        atomic_write_text(head_buckets_path(path), buffer.getvalue())


def read_head_buckets(path: str | Path) -> dict[tuple[int, int, str], dict[str, float]]:
    """``(layer, head, tier)`` → {bucket label: held-out IoU} from a ``head_buckets.csv``
    (every row checked: `UserError` naming the file and line)."""
    from attndsl.pipeline.rundir import read_csv

    out: dict[tuple[int, int, str], dict[str, float]] = {}
    for line, row in read_csv(path, HEAD_BUCKET_COLUMNS):
        where = f"{path}:{line}"
        try:
            layer, head, iou = int(row["layer"]), int(row["head"]), float(row["heldout_iou"])
        except ValueError as error:
            raise UserError(f"{where}: layer, head and heldout_iou must be numbers") from error
        if row["tier"] not in ("full", "short") or not (0.0 <= iou <= 1.0):
            raise UserError(f"{where}: tier must be full or short and heldout_iou from 0 to 1")
        out.setdefault((layer, head, row["tier"]), {})[row["bucket"]] = iou
    return out


def read_library(attn_path: str | Path, meta_path: str | Path | None = None) -> list[LibraryProgram]:
    """Programs of an ``.attn`` file, with metadata from a ``library.json`` beside it when there is one.

    Any ``.attn`` file works (e.g. someone's own programs): without metadata
    every program has origin ``"user"``.
    """
    from attndsl.pipeline.attnfile import read_attn

    attn_path = Path(attn_path)
    if not attn_path.exists():
        raise UserError(f"{attn_path} does not exist")
    attn = read_attn(attn_path)
    compiled = attn.compiled()  # every problem, as an AttnError; else one per program, in file order
    if not compiled:
        raise UserError(f"{attn_path} holds no programs")
    sources = attn.sources()  # canonical text (from the IR cache where there is one: no parse)
    meta: dict[str, dict] = {}
    meta_path = Path(meta_path) if meta_path else attn_path.with_suffix(".json")
    if meta_path.exists():
        meta = {m["name"]: m for m in read_json(meta_path, LIBRARY_META_SCHEMA)["programs"]}
    out = []
    names = set()
    for prog in compiled:
        if prog.name in names:
            raise UserError(f"{attn_path}: program name '{prog.name}' is used twice")
        names.add(prog.name)
        m = meta.get(prog.name, {})
        out.append(LibraryProgram(prog.name, sources[prog.name] + "\n", m.get("origin", "user"), m.get("layer"),
                                  m.get("head"), m.get("synthesis_iou"), m.get("writer"), m.get("rationale"),
                                  m.get("tier")))
    return out


def score_lines(choices: Sequence[HeadChoice], library_size: int | None = None) -> list[str]:
    """What a scoring gives, for people: mean held-out IoU, quartiles, per-layer means, what it rests on."""
    if not choices:
        return ["no heads scored"]
    held = np.array([c.heldout_iou for c in choices])
    held0 = np.array([c.heldout_iou_no_sink for c in choices])
    synth = np.array([c.synthesis_iou for c in choices])
    q1, q2, q3 = np.percentile(held, [25, 50, 75])
    lines = []
    if library_size is not None:
        lines.append(f"library: {library_size} programs")
    lines.append(f"heads: {len(choices)}; held-out: {choices[0].n_heldout_sequences} sequences, "
                 f"{choices[0].n_heldout_tokens} tokens")
    lines.append(f"mean held-out IoU {held.mean():.4f} (quartiles {q1:.3f} / {q2:.3f} / {q3:.3f}; "
                 f"min {held.min():.3f}, max {held.max():.3f}); ignoring key 0: {held0.mean():.4f}; "
                 f"synthesis: {synth.mean():.4f}")
    layers = sorted({c.layer for c in choices})
    per_layer = [f"{layer}:{np.mean([c.heldout_iou for c in choices if c.layer == layer]):.3f}" for layer in layers]
    lines.append("per layer: " + " ".join(per_layer))
    shorts = [c for c in choices if c.has_short]
    if shorts:
        same = sum(1 for c in shorts if c.short_program_name == c.program_name)
        lines.append(f"short programs (<= {SHORT_MAX_TERMS} terms, sets <= {SHORT_MAX_ENTRIES} entries): "
                     f"{len(shorts)}/{len(choices)} heads, mean held-out IoU "
                     f"{np.mean([c.short_heldout_iou for c in shorts]):.4f} (full on the same heads "
                     f"{np.mean([c.heldout_iou for c in shorts]):.4f}); synthesis: "
                     f"{np.mean([c.short_synthesis_iou for c in shorts]):.4f}; {same} heads' full program is short")
    rows = bucket_rows(choices)
    if rows:
        lines.append("held-out IoU by length (tokens: sequences, full" + (", short" if shorts else "") + "):")
        for r in rows:
            cells = f"{r.means['full']:.3f}" + (f", {r.means['short']:.3f}" if "short" in r.means else "")
            lines.append(f"  {r.label:>9}: {r.sequences:>5} seq, {r.tokens:>7} tok, {cells}")
    return lines
