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

Files (atomic) in a run: ``library/library.attn`` (all programs),
``library/library.json`` (origin, head written for, synthesis IoU per
program), ``library/best.csv`` (one row per head).
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from . import ir
from .batch import TokenBatch
from .errors import UserError
from .rundir import Int, atomic_write_json, atomic_write_text, read_csv, read_json, read_text
from .validate import compile_source

BEST_COLUMNS = ("layer", "head", "program_name", "synthesis_iou", "heldout_iou", "heldout_iou_no_sink",
                "n_heldout_sequences", "n_heldout_tokens")
#: columns a best.csv must have (the others read as NaN / 0 when absent, e.g. in hand-made files)
BEST_REQUIRED = ("layer", "head", "program_name", "heldout_iou")
#: ``library.json``: metadata of each program of ``library.attn``
LIBRARY_META_SCHEMA = {"programs": [{"name": str, "origin?": str, "layer?": (Int(0), None), "head?": (Int(0), None),
                                     "synthesis_iou?": (float, None)}]}


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

    def program(self) -> ir.Program:
        return compile_source(self.source, f"<{self.name}>")[0]

    def meta(self) -> dict:
        out = asdict(self)
        out.pop("source")
        return out


@dataclass(frozen=True)
class HeadChoice:
    """A head's best library program and its scores (one row of best.csv)."""

    layer: int
    head: int
    program_name: str
    synthesis_iou: float
    heldout_iou: float
    heldout_iou_no_sink: float
    n_heldout_sequences: int
    n_heldout_tokens: int

    def row(self) -> list:
        return [self.layer, self.head, self.program_name, f"{self.synthesis_iou:.6f}", f"{self.heldout_iou:.6f}",
                f"{self.heldout_iou_no_sink:.6f}", self.n_heldout_sequences, self.n_heldout_tokens]


# ------------------------------------------------------------------ pooling


def behaviour_key(values: np.ndarray) -> str:
    """Hash of a program's outputs over causal entries (rounded, so float noise does not split)."""
    rounded = np.round(np.asarray(values, dtype=np.float64), 7) + 0.0  # + 0.0 folds -0.0 into 0.0
    return hashlib.sha256(rounded.tobytes()).hexdigest()


def dedupe(programs: Sequence[LibraryProgram], batch: TokenBatch, chunk: int = 32) -> list[LibraryProgram]:
    """Drop programs whose outputs on ``batch`` equal an earlier program's (first one kept)."""
    from .kernels import evaluate_programs

    kept, seen = [], set()
    compiled = [p.program() for p in programs]
    for start in range(0, len(programs), chunk):
        values = evaluate_programs(compiled[start:start + chunk], batch)
        for offset, row in enumerate(values):
            key = behaviour_key(row)
            if key not in seen:
                seen.add(key)
                kept.append(programs[start + offset])
    return kept


def unique_names(programs: Sequence[LibraryProgram]) -> list[LibraryProgram]:
    """Rename clashing programs (``name_2``, ``name_3`` …) and make the source agree."""
    from .prompts import rename_program

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


def _score(programs: Sequence[ir.Program], source, tables_batch: TokenBatch, seq_indices, **kw):
    from .scoring import score

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
) -> Library:
    """Pool, de-duplicate by behaviour on the synthesis sequences, screen and cap (see module docstring)."""
    if cap < 1:
        raise UserError("the library cap must be at least 1")
    synthesis_indices = np.asarray(synthesis_indices, dtype=np.int64)
    if len(synthesis_indices) == 0:
        raise UserError("no synthesis sequences to build the library on")
    ordered = sorted(candidates, key=lambda p: -(p.synthesis_iou if p.synthesis_iou is not None else -1.0))
    full_batch = TokenBatch.from_tables(synthesis_tables)
    distinct = dedupe(_canonical_first(ordered), full_batch)
    distinct = unique_names(distinct)
    screen = _subsample(len(synthesis_indices), screen_sequences, seed)
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
    return Library(tuple(distinct), iou, len(screen))


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
) -> list[HeadChoice]:
    """Each head's best program on all synthesis sequences, with its held-out IoU."""
    programs = [p.program() for p in library.programs]
    n_layers, n_heads = library.screen_iou.shape[1:]
    shortlist: dict[tuple[int, int], set[int]] = {}
    for layer in range(n_layers):
        for head in range(n_heads):
            col = np.round(library.screen_iou[:, layer, head], _TIE_DECIMALS)
            top = set(np.argsort(-col, kind="stable")[:top_k].tolist())
            top |= {i for i, p in enumerate(library.programs) if p.layer == layer and p.head == head}
            shortlist[(layer, head)] = top
    needed = sorted(set().union(*shortlist.values()))
    synth_batch = TokenBatch.from_tables(synthesis_tables)
    full = _score([programs[i] for i in needed], source, synth_batch, synthesis_indices, progress=progress).iou
    row_of = {p: r for r, p in enumerate(needed)}
    best: dict[tuple[int, int], tuple[int, float]] = {}
    for (layer, head), cands in shortlist.items():
        scored = sorted(((round(float(full[row_of[i], layer, head]), _TIE_DECIMALS), -i) for i in cands), reverse=True)
        value, neg = scored[0]
        best[(layer, head)] = (-neg, float(value))
    winners = sorted({i for i, _ in best.values()})
    held_batch = TokenBatch.from_tables(heldout_tables)
    held = _score([programs[i] for i in winners], source, held_batch, heldout_indices, ignore_sink=True,
                  progress=progress)
    held_row = {p: r for r, p in enumerate(winners)}
    out = []
    for (layer, head), (index, synth_value) in sorted(best.items()):
        r = held_row[index]
        out.append(HeadChoice(layer, head, library.programs[index].name, synth_value,
                              float(held.iou[r, layer, head]), float(held.iou_ignore_sink[r, layer, head]),
                              held.n_sequences, held.n_tokens))
    return out


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


def best_csv(choices: Sequence[HeadChoice]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BEST_COLUMNS)
    for choice in choices:
        writer.writerow(choice.row())
    return buffer.getvalue()


def read_best_csv(path: str | Path, shape: tuple[int, int] | None = None) -> list[HeadChoice]:
    """The per-head table ``best.csv``, every row checked (`UserError` naming the file and line).

    With ``shape`` (the run's layers and heads) a head outside it is an error
    too; so is a head listed twice.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} is missing")
    rows: list[HeadChoice] = []
    seen: set[tuple[int, int]] = set()
    for number, r in read_csv(path, BEST_REQUIRED):
        where = f"{path}:{number}"
        layer, head = _count(r["layer"], "layer", where), _count(r["head"], "head", where)
        if shape is not None and not (layer < shape[0] and head < shape[1]):
            raise UserError(f"{where}: head L{layer}H{head} does not exist (the run has {shape[0]} layers × "
                            f"{shape[1]} heads, 0-based)")
        if (layer, head) in seen:
            raise UserError(f"{where}: head L{layer}H{head} is listed twice")
        seen.add((layer, head))
        if not r["program_name"].strip():
            raise UserError(f"{where}: program_name is empty")
        rows.append(HeadChoice(
            layer, head, r["program_name"], _score_value(r.get("synthesis_iou"), "synthesis_iou", where),
            _score_value(r["heldout_iou"], "heldout_iou", where),
            _score_value(r.get("heldout_iou_no_sink"), "heldout_iou_no_sink", where),
            _count(r.get("n_heldout_sequences") or "0", "n_heldout_sequences", where),
            _count(r.get("n_heldout_tokens") or "0", "n_heldout_tokens", where),
        ))
    return rows


def _count(text: str, column: str, where: str) -> int:
    """A non-negative integer cell (``"48"`` or ``"48.0"``)."""
    try:
        value = float(text) if len(text) < 40 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise UserError(f"{where}: {column} must be a whole number >= 0, not {text[:40]!r}")
    return int(value)


def _score_value(text: str | None, column: str, where: str) -> float:
    """An IoU cell: a number in [0, 1], or empty / "nan" for none."""
    if text in ("", None):
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise UserError(f"{where}: {column} must be a number from 0 to 1, not {text[:40]!r}")
    return value


def write_library(directory: str | Path, programs: Sequence[LibraryProgram], choices: Sequence[HeadChoice] | None,
                  best_name: str = "best.csv") -> None:
    """``library.attn`` + ``library.json`` (+ ``best_name`` when choices are given), atomically."""
    directory = Path(directory)
    atomic_write_text(directory / "library.attn", library_source(programs))
    atomic_write_json(directory / "library.json", {"programs": [p.meta() for p in programs]})
    if choices is not None:
        atomic_write_text(directory / best_name, best_csv(choices))


def read_library(attn_path: str | Path, meta_path: str | Path | None = None) -> list[LibraryProgram]:
    """Programs of an ``.attn`` file, with metadata from a ``library.json`` beside it when there is one.

    Any ``.attn`` file works (e.g. someone's own programs): without metadata
    every program has origin ``"user"``.
    """
    from .parser import parse
    from .printer import format_program
    from .validate import check

    attn_path = Path(attn_path)
    if not attn_path.exists():
        raise UserError(f"{attn_path} does not exist")
    text = read_text(attn_path)
    module = parse(text, str(attn_path))
    _, problems = check(module, text)
    if problems:
        from .errors import AttnError

        raise AttnError(problems)
    if not module.programs:
        raise UserError(f"{attn_path} holds no programs")
    meta: dict[str, dict] = {}
    meta_path = Path(meta_path) if meta_path else attn_path.with_suffix(".json")
    if meta_path.exists():
        meta = {m["name"]: m for m in read_json(meta_path, LIBRARY_META_SCHEMA)["programs"]}
    out = []
    names = set()
    for prog in module.programs:
        if prog.name in names:
            raise UserError(f"{attn_path}: program name '{prog.name}' is used twice")
        names.add(prog.name)
        m = meta.get(prog.name, {})
        out.append(LibraryProgram(prog.name, format_program(prog) + "\n", m.get("origin", "user"), m.get("layer"),
                                  m.get("head"), m.get("synthesis_iou"), m.get("writer"), m.get("rationale")))
    return out


def summary_lines(choices: Sequence[HeadChoice], library_size: int | None = None) -> list[str]:
    """Human summary: mean held-out IoU, quartiles, per-layer means, what it rests on."""
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
    return lines
