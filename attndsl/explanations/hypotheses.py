"""Hypotheses as programs: which heads each of a user's programs explains best, and how well.

``attndsl score RUN --library mine.attn`` scores a person's programs against
every head.  `score_hypotheses` then scores every program of the file on
every head on the *held-out* sequences and keeps, per program, its `TOP`
best heads with their held-out IoU, whether the program is that head's
choice among the file's programs, and the held-out IoU of the run's own
program for that head (``library/best.csv``) for comparison.  The result is
written to ``scores/<file stem>.hypotheses.json`` (the report shows it) and
returned as plain dicts.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from attndsl.headnames import head_label
from attndsl.pipeline.layout import SCORES_DIR, RunLayout
from attndsl.pipeline.rundir import atomic_write_json, read_json

TOP = 5


def score_hypotheses(run_dir: str | Path, library_path: str | Path, choices: Sequence, top: int = TOP) -> list[dict]:
    """Per user program: its best heads by held-out IoU (see module docstring); also saved."""
    from attndsl.extraction.batch import TokenBatch
    from attndsl.explanations.gloss import gloss
    from attndsl.pipeline.records import read_best_csv
    from attndsl.synthesis.library import read_library
    from attndsl.synthesis.scoring import score
    from attndsl.extraction.store import open_store

    run_dir, library_path = Path(run_dir), Path(library_path)
    store = open_store(run_dir)
    programs = read_library(library_path)
    compiled = [p.program() for p in programs]
    held = store.heldout_indices
    result = score(compiled, store, TokenBatch.from_tables(store.tables(held)), held, ignore_sink=True)
    chosen = {(c.layer, c.head): c.program_name for c in choices}
    own: dict[tuple[int, int], float] = {}
    best_path = RunLayout(run_dir).best_csv
    if best_path.exists():
        own = {(r.layer, r.head): r.heldout_iou for r in read_best_csv(best_path)}
    out = []
    for i, p in enumerate(programs):
        iou = result.iou[i]
        flat = [(float(iou[l, h]), l, h) for l in range(iou.shape[0]) for h in range(iou.shape[1])]
        flat.sort(key=lambda t: (-round(t[0], 9), t[1], t[2]))
        out.append({
            "name": p.name,
            "gloss": gloss(compiled[i]),
            "source": p.source,
            "n_chosen": sum(1 for v in chosen.values() if v == p.name),
            "heads": [
                {"layer": l, "head": h, "heldout_iou": v,
                 "heldout_iou_no_sink": float(result.iou_ignore_sink[i, l, h]),
                 "chosen": chosen.get((l, h)) == p.name,
                 "run_heldout_iou": own.get((l, h))}
                for v, l, h in flat[:top]
            ],
            "n_sequences": int(result.n_sequences),
            "n_tokens": int(result.n_tokens),
        })
    atomic_write_json(RunLayout(run_dir).hypotheses_json(library_path.stem),
                      {"library": str(library_path), "programs": _finite(out)})
    return out


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def hypothesis_lines(results: Sequence[dict]) -> list[str]:
    """What ``attndsl score`` prints: each program, its gloss, and the heads it fits best."""
    lines = []
    for r in results:
        lines.append(f"{r['name']}: {r['gloss']} (best program of {r['n_chosen']} head"
                     f"{'' if r['n_chosen'] == 1 else 's'} among this file's programs)")
        for h in r["heads"]:
            extra = " [chosen]" if h["chosen"] else ""
            if h["run_heldout_iou"] is not None:
                extra += f" (run's own program: {h['run_heldout_iou']:.3f})"
            lines.append(f"  {head_label(h['layer'], h['head'])}: held-out IoU {h['heldout_iou']:.3f}, "
                         f"ignoring key 0 {h['heldout_iou_no_sink']:.3f}{extra}")
    if results:
        lines.append(f"(held-out: {results[0]['n_sequences']} sequences, {results[0]['n_tokens']} tokens)")
    return lines


def read_hypotheses(run_dir: str | Path) -> list[dict]:
    """Every ``scores/*.hypotheses.json`` of a run, flattened: one dict per program with its file."""
    directory = Path(run_dir) / SCORES_DIR
    out = []
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.hypotheses.json")):
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("programs"), list):
            continue
        for program in data["programs"]:
            if isinstance(program, dict):
                out.append({**program, "file": path.name.removesuffix(".hypotheses.json")})
    return out
