"""Typed records of a run's two result tables, each with its one writer and its one reader.

``library/best.csv`` (and ``scores/F.best.csv``): one `HeadChoice` per head —
its best library program, synthesis and held-out IoU, and its short tier.
Written by `best_csv` / `write_best_csv`, read by `read_best_csv`.

``replace/replacement*.csv``: one `ReplacementRow` per point of a
replacement curve.  Written by `replacement_csv` / `write_replacement_csv`,
read by `read_replacement_csv`.

The writers' bytes are part of the project's outputs (runs are compared byte
for byte): column order, ``"\n"`` line ends, floats as ``%.6f`` (best.csv)
and ``%.6g`` with ``nan`` (replacement CSV) never change.  The readers check
every row and turn every problem into a `UserError` naming the file and line;
columns a hand-made file may lack read as NaN / 0 / empty.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from attndsl.errors import UserError
from attndsl.headnames import head_label
from attndsl.pipeline.layout import STORE_DIR, RunLayout
from attndsl.pipeline.rundir import atomic_write_text, read_csv

# ------------------------------------------------------------------ best.csv

BEST_COLUMNS = ("layer", "head", "program_name", "synthesis_iou", "heldout_iou", "heldout_iou_no_sink",
                "n_heldout_sequences", "n_heldout_tokens")
#: the short tier's columns, written after `BEST_COLUMNS` (files without them read as "no short program")
SHORT_COLUMNS = ("short_program_name", "short_synthesis_iou", "short_heldout_iou")
#: the header ``best.csv`` is written with
BEST_CSV_COLUMNS = BEST_COLUMNS + SHORT_COLUMNS

#: columns a best.csv must have (the others read as NaN / 0 when absent, e.g. in hand-made files)
BEST_REQUIRED = ("layer", "head", "program_name", "heldout_iou")

@dataclass(frozen=True)
class HeadChoice:
    """A head's best library program and its scores (one row of best.csv), with its short tier.

    ``short_*``: the head's best short program (`is_short`); name ``""`` and
    scores None when the library has none for it (or the file predates tiers).
    ``heldout_lengths`` / ``heldout_sequence_iou`` / ``short_heldout_sequence_iou``:
    the held-out sequences' lengths and each tier's IoU on each of them, when
    just scored (not stored in best.csv; `bucket_rows` uses them).
    """

    layer: int
    head: int
    program_name: str
    synthesis_iou: float
    heldout_iou: float
    heldout_iou_no_sink: float
    n_heldout_sequences: int
    n_heldout_tokens: int
    short_program_name: str = ""
    short_synthesis_iou: float | None = None
    short_heldout_iou: float | None = None
    heldout_lengths: np.ndarray | None = field(default=None, compare=False, repr=False)
    heldout_sequence_iou: np.ndarray | None = field(default=None, compare=False, repr=False)
    short_heldout_sequence_iou: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def has_short(self) -> bool:
        return bool(self.short_program_name)

    def row(self) -> list:
        """The `BEST_CSV_COLUMNS` cells (the `BEST_COLUMNS` ones exactly as before tiers existed)."""
        base = [self.layer, self.head, self.program_name, f"{self.synthesis_iou:.6f}", f"{self.heldout_iou:.6f}",
                f"{self.heldout_iou_no_sink:.6f}", self.n_heldout_sequences, self.n_heldout_tokens]
        if not self.has_short:
            return base + ["", "", ""]
        return base + [self.short_program_name, f"{self.short_synthesis_iou:.6f}", f"{self.short_heldout_iou:.6f}"]



def best_csv(choices: Sequence[HeadChoice]) -> str:
    """The text of a ``best.csv`` holding ``choices`` (header `BEST_CSV_COLUMNS`, ``\n`` line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BEST_CSV_COLUMNS)
    for choice in choices:
        writer.writerow(choice.row())
    return buffer.getvalue()


def read_best_csv(path: str | Path, shape: tuple[int, int] | None = None) -> list[HeadChoice]:
    """The per-head table ``best.csv``, every row checked (`UserError` naming the file and line).

    With ``shape`` (the run's layers and heads) a head outside it is an error
    too; so is a head listed twice.  The short-tier columns (`SHORT_COLUMNS`)
    are optional: without them (files written before tiers) no head has a
    short program.
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
            raise UserError(f"{where}: head {head_label(layer, head)} does not exist (the run has {shape[0]} layers × "
                            f"{shape[1]} heads, 0-based)")
        if (layer, head) in seen:
            raise UserError(f"{where}: head {head_label(layer, head)} is listed twice")
        seen.add((layer, head))
        if not r["program_name"].strip():
            raise UserError(f"{where}: program_name is empty")
        rows.append(HeadChoice(
            layer, head, r["program_name"], _score_value(r.get("synthesis_iou"), "synthesis_iou", where),
            _score_value(r["heldout_iou"], "heldout_iou", where),
            _score_value(r.get("heldout_iou_no_sink"), "heldout_iou_no_sink", where),
            _count(r.get("n_heldout_sequences") or "0", "n_heldout_sequences", where),
            _count(r.get("n_heldout_tokens") or "0", "n_heldout_tokens", where),
            *_short_cells(r, where),
        ))
    return rows


def _short_cells(r: dict, where: str) -> tuple[str, float | None, float | None]:
    """The short tier of a best.csv row: ``("", None, None)`` when it names no short program."""
    name = (r.get("short_program_name") or "").strip()
    if not name:
        return "", None, None
    return (name, _score_value(r.get("short_synthesis_iou"), "short_synthesis_iou", where),
            _score_value(r.get("short_heldout_iou"), "short_heldout_iou", where))


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


def write_best_csv(path: str | Path, choices: Sequence[HeadChoice]) -> Path:
    """Write ``best.csv`` atomically."""
    atomic_write_text(path, best_csv(choices))
    return Path(path)


# ------------------------------------------------------------------ replacement CSV


@dataclass(frozen=True)
class ReplacementRow:
    """One point of a replacement curve (one row of the replacement CSV; fields in column order)."""

    variant: str  # "ranked" | "greedy"
    fraction: float  # of all the model's heads
    n_target: int  # heads the fraction asks for
    n_replaced: int  # heads actually replaced (fewer if the ranking ran out)
    ppl_model: float
    ppl_programs: float
    ppl_uniform: float
    increase_programs_pct: float
    increase_uniform_pct: float
    mean_heldout_iou: float  # of the replaced heads (nan when unknown)
    n_sequences: int
    n_tokens: int
    heads: str  # replaced heads, `head_label`s ("L0H1 L3H2 ...") in replacement order
    skipped: str = ""  # greedy: heads skipped for an extreme marginal cost


REPLACEMENT_COLUMNS = tuple(f.name for f in fields(ReplacementRow))
#: columns a replacement CSV must have (the others read as NaN / 0 / empty when absent)
REPLACEMENT_REQUIRED = ("fraction", "ppl_model", "ppl_programs", "ppl_uniform")
#: what the report plots of each row (its JSON keeps exactly these, in this order)
PLOTTED_COLUMNS = ("variant", "fraction", "n_replaced", "ppl_model", "ppl_programs", "ppl_uniform",
                   "increase_programs_pct", "increase_uniform_pct", "mean_heldout_iou", "n_sequences", "n_tokens")


def _csv_value(value):
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value


def replacement_csv(rows: Sequence[ReplacementRow]) -> str:
    """The text of a replacement CSV holding ``rows``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPLACEMENT_COLUMNS)
    for row in rows:
        values = asdict(row)
        writer.writerow([_csv_value(values[name]) for name in REPLACEMENT_COLUMNS])
    return buffer.getvalue()


def write_replacement_csv(path: str | Path, rows: Sequence[ReplacementRow]) -> Path:
    """Write the rows as CSV atomically (temporary file, then rename)."""
    atomic_write_text(path, replacement_csv(rows))
    return Path(path)


def _float(text: str | None) -> float:
    return float(text) if text not in ("", None) else float("nan")


def _int(text: str | None) -> int:
    return int(float(text or 0))


def read_replacement_csv(path: str | Path) -> list[ReplacementRow]:
    """Rows of a replacement CSV (`write_replacement_csv`'s format; columns beyond
    `REPLACEMENT_REQUIRED` may be missing); a bad row is a `UserError` naming the file and line."""
    path = Path(path)
    out = []
    for number, record in read_csv(path, REPLACEMENT_REQUIRED):
        try:
            out.append(
                ReplacementRow(
                    variant=record.get("variant") or "ranked",
                    fraction=float(record["fraction"]),
                    n_target=_int(record.get("n_target")),
                    n_replaced=_int(record.get("n_replaced")),
                    ppl_model=_float(record["ppl_model"]),
                    ppl_programs=_float(record["ppl_programs"]),
                    ppl_uniform=_float(record["ppl_uniform"]),
                    increase_programs_pct=_float(record.get("increase_programs_pct", "")),
                    increase_uniform_pct=_float(record.get("increase_uniform_pct", "")),
                    mean_heldout_iou=_float(record.get("mean_heldout_iou", "")),
                    n_sequences=_int(record.get("n_sequences")),
                    n_tokens=_int(record.get("n_tokens")),
                    heads=record.get("heads") or "",
                    skipped=record.get("skipped") or "",
                )
            )
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise UserError(f"{path}, line {number}: {error}") from error
    return out


def find_replacement_csv(run_dir: str | Path) -> Path | None:
    """The run's replacement CSV: a ``*.csv`` whose header has ``ppl_programs`` (and no ``bucket``:
    ``replacement-buckets.csv`` is the same curve per length bucket)."""
    run_dir = Path(run_dir)
    replace_dir = RunLayout(run_dir).replace_dir
    preferred = sorted(replace_dir.glob("*.csv")) if replace_dir.is_dir() else []
    others = sorted(p for p in run_dir.rglob("*.csv") if STORE_DIR not in p.relative_to(run_dir).parts[:1])
    for path in [*preferred, *others]:
        try:  # only the header decides; a damaged body is reported by `read_replacement_csv`
            with open(path, "rb") as handle:
                header = next(csv.reader([handle.readline().decode("utf-8", errors="replace")]), [])
        except OSError:
            continue
        if "ppl_programs" in header and "fraction" in header and "bucket" not in header:  # not the per-bucket table
            return path
    return None


def plotted(row: ReplacementRow) -> dict:
    """The `PLOTTED_COLUMNS` of a row, as the report's JSON holds them."""
    return {name: getattr(row, name) for name in PLOTTED_COLUMNS}
