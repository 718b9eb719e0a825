"""The HTML report of a run: one self-contained file people can open anywhere.

`build_report(run_dir)` reads what the pipeline stages left in a run
directory and writes ``<run>/report.html``: a single file with inline CSS,
JavaScript and data (JSON), pictures drawn client-side on canvas and SVG, and
no network access at all (no CDN, no fonts, no images to fetch).  It shows

- the layer × head grid coloured by held-out IoU, with a legend;
- for the head clicked in the grid: its program's source, its synthesis and
  held-out IoU (and the variant that ignores key 0), and side-by-side heatmaps
  of the real attention and the program's attention on a few held-out
  sequences, with token labels;
- the library: every program that is some head's best, with how many heads it
  explains and their mean held-out IoU;
- the perplexity-versus-fraction plot (programs, the uniform baseline, the
  unmodified model);
- held-out IoU per layer (a strip plot with medians);
- the run's settings from the manifest, and how many held-out sequences and
  tokens each number rests on.

Every input but the manifest is optional: a section whose stage has not run
says so instead of failing, so the report can be rebuilt at any point.

**Size.**  The heatmaps use the same few held-out sequences for every head
(``examples``, default 3, the longest held-out ones), cut to their first
``max_tokens`` tokens (default 40; a prefix of a causal matrix is exact, so
this is a crop, not an approximation).  Each weight is stored as one byte,
``round(255·√a)`` (the square root keeps small weights visible and gives
them more resolution), base64 inside the JSON: 270 heads × 3 sequences × 2
matrices × 820 entries ≈ 1.3 MB raw, under 2 MB in the file.

Inputs (paths inside the run):

- ``manifest.json`` (`attndsl.pipeline.rundir`): settings, completed stages, versions;
- ``attention/`` (`attndsl.extraction.store`): the real attention and the token tables;
- ``library/best.csv`` (`attndsl.pipeline.records.read_best_csv`), ``library/library.attn``
  (the pooled programs) and ``library/library.json`` (metadata, optional);
- a replacement CSV (`attndsl.pipeline.records.read_replacement_csv`; the first ``*.csv`` in
  the run whose header has ``ppl_programs``, preferring ``replace/``).

Why this module is over 400 lines: it gathers the data of every report section
(grid, head pages, heatmaps, library, perplexity, layers, settings) from one
run; the drawing itself lives in the HTML template
(`attndsl/data/report_template.html`).
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attndsl.errors import UserError
from attndsl.extraction.layout import tril
from attndsl.synthesis.library import LIBRARY_META_SCHEMA
from attndsl.pipeline.layout import BEST_CSV, LIBRARY_ATTN, LIBRARY_DIR, LIBRARY_JSON, MANIFEST, REPORT_NAME, RunLayout
from attndsl.pipeline.records import HeadChoice, find_replacement_csv, plotted, read_best_csv, read_replacement_csv
from attndsl.pipeline.rundir import atomic_write_text, read_json, read_manifest
from attndsl.headnames import head_label

TEMPLATE = "report_template.html"
DEFAULT_EXAMPLES = 3
DEFAULT_MAX_TOKENS = 40

#: the grid's colour map (viridis, 9 stops from IoU 0 to 1); the page
#: interpolates between stops exactly as `iou_colour` does
COLOUR_STOPS = (
    (68, 1, 84),
    (72, 40, 120),
    (62, 73, 137),
    (49, 104, 142),
    (38, 130, 142),
    (31, 158, 137),
    (53, 183, 121),
    (109, 205, 89),
    (180, 222, 44),
    (253, 231, 37),
)
#: colour of a head without a program
MISSING_COLOUR = (204, 204, 204)
#: the grid's colour of each head category (`attndsl.explanations.categories.CATEGORIES`; a qualitative palette)
CATEGORY_COLOURS = {
    "sink": (190, 190, 200),
    "self": (141, 211, 199),
    "previous": (31, 119, 180),
    "offset": (23, 190, 207),
    "local": (158, 218, 229),
    "induction": (214, 39, 40),
    "duplicate": (255, 127, 14),
    "sentence": (44, 160, 44),
    "punctuation": (148, 103, 189),
    "word": (188, 189, 34),
    "syntactic": (140, 86, 75),
    "lexical": (227, 119, 194),
    "uniform": (255, 224, 130),
    "mixed": (90, 90, 90),
}


def iou_colour(value: float) -> tuple[int, int, int]:
    """RGB of an IoU in the grid (same interpolation as the page's script)."""
    if value is None or not math.isfinite(value):
        return MISSING_COLOUR
    x = min(max(value, 0.0), 1.0) * (len(COLOUR_STOPS) - 1)
    i = min(int(x), len(COLOUR_STOPS) - 2)
    t = x - i
    a, b = COLOUR_STOPS[i], COLOUR_STOPS[i + 1]
    return tuple(int(round(a[c] + (b[c] - a[c]) * t)) for c in range(3))


# ----------------------------------------------------------------- inputs


def library_sources(path: str | Path) -> dict[str, str]:
    """Program name → canonical source text of every program in a ``.attn`` file."""
    from attndsl.pipeline.attnfile import read_attn

    return read_attn(path).sources()


def library_programs(path: str | Path) -> dict:
    """Program name → compiled `ir.Program` of every program in a ``.attn`` file."""
    from attndsl.pipeline.attnfile import read_attn

    return read_attn(path).by_name()


# ------------------------------------------------------------ data model


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, as plain JSON-able values (see `to_json`)."""

    title: str
    n_layers: int
    n_heads: int
    heads: list[dict]  # one per row of best.csv
    programs: list[dict]  # library programs that are some head's best
    library_size: int  # programs in the pooled library
    examples: list[dict]  # shared example sequences: tokens, length shown, full length
    heatmaps: str  # base64 of uint8 [heads*examples*2*tri(m)] (see module doc), "" if none
    example_iou: list[list[float | None]]  # [head row][example]
    perplexity: list[dict]
    categories: list[dict]  # present categories, taxonomy order: key, label, count, best head, per-layer counts
    hypotheses: list[dict]  # user programs scored with `attndsl score --library` and the heads they fit best
    heatmap_mode: str  # how long sequences are shown ("scroll": full resolution in a scrolling box)
    settings: dict
    completed: dict
    versions: dict
    counts: dict
    generated: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The page's data as JSON that is safe inside a ``<script>`` element.

        ``<``, ``>`` and ``&`` are written as ``\\u003c``, ``\\u003e`` and
        ``\\u0026`` (still the same JSON strings), so no program text or file
        name can close the element or open an HTML comment (``<!--``, which
        would swallow the rest of the page) — the page always parses.
        """
        payload = {name: getattr(self, name) for name in self.__dataclass_fields__}
        text = json.dumps(_json_safe(payload), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return escape_script_json(text)


def escape_script_json(text: str) -> str:
    """JSON text with ``<``, ``>``, ``&`` and the JS line separators as ``\\u`` escapes."""
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json_safe(value: Any) -> Any:
    """NaN/inf → None (JSON has no NaN), numbers rounded to 4 decimals."""
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def encode_weights(matrix: np.ndarray, m: int) -> np.ndarray:
    """The first ``m`` rows of a causal matrix as bytes ``round(255·√a)``, lower triangle row by row."""
    rows, cols = tril(m)
    values = np.clip(np.asarray(matrix, dtype=np.float64)[rows, cols], 0.0, 1.0)
    return np.rint(np.sqrt(values) * 255.0).astype(np.uint8)


def decode_weights(codes: np.ndarray) -> np.ndarray:
    """Approximate weights back from `encode_weights` codes."""
    return (np.asarray(codes, dtype=np.float64) / 255.0) ** 2


def choose_examples(store, count: int) -> list[int]:
    """The ``count`` longest held-out sequences (ties: earliest), in store order."""
    heldout = store.heldout_indices or list(range(store.n_sequences))
    lengths = store.lengths
    ranked = sorted(heldout, key=lambda i: (-lengths[i], i))[:count]
    return sorted(ranked)


def collect(run_dir: str | Path, examples: int = DEFAULT_EXAMPLES, max_tokens: int = DEFAULT_MAX_TOKENS) -> ReportData:
    """Read a run directory into `ReportData` (only the manifest is required)."""
    from attndsl.language.interpreter import evaluate
    from attndsl.synthesis.scoring import iou_dense

    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.exists():
        raise UserError(f"{run_dir} is not an attndsl run (no {MANIFEST})")
    manifest = read_manifest(manifest_path)
    notes: list[str] = []

    store = None
    n_layers = n_heads = 0
    if RunLayout(run_dir).has_store():
        from attndsl.extraction.store import open_store

        store = open_store(run_dir)
        n_layers, n_heads = store.n_layers, store.n_heads
    else:
        notes.append("No attention store yet: run `attndsl extract`.")

    library_dir = run_dir / LIBRARY_DIR
    best: list[HeadChoice] = []
    if (library_dir / BEST_CSV).exists():
        best = read_best_csv(library_dir / BEST_CSV, (n_layers, n_heads) if store is not None else None)
    else:
        notes.append("No per-head programs yet: run `attndsl synthesize` and `attndsl score`.")
    if best and not n_layers:
        n_layers = max(r.layer for r in best) + 1
        n_heads = max(r.head for r in best) + 1
    best.sort(key=lambda r: (r.layer, r.head))

    sources: dict[str, str] = {}
    compiled: dict = {}
    library_size = 0
    library_meta: Any = None
    if (library_dir / LIBRARY_ATTN).exists():
        sources = library_sources(library_dir / LIBRARY_ATTN)
        library_size = len(sources)
        if best:
            compiled = library_programs(library_dir / LIBRARY_ATTN)
    if (library_dir / LIBRARY_JSON).exists():
        library_meta = read_json(library_dir / LIBRARY_JSON, LIBRARY_META_SCHEMA)
        library_size = max(library_size, len(library_meta["programs"]))

    # the explanation stage: category, gloss and tiers of every head
    explained = None
    if best and compiled:
        from attndsl.explanations.reading import explain_run

        try:
            explained = explain_run(run_dir)
        except UserError as error:  # e.g. best.csv names a program the library lacks: show the rest
            notes.append(f"No head categories: {error}")
            explained = None
        if explained is not None and explained.share_source != "synthesis":
            notes.append("No attention store: term shares measured on the built-in stories, split into words.")
    explanation = {(h.layer, h.head): h for h in explained.heads} if explained is not None else {}

    # programs that are some head's best (short or full), most heads first
    by_program: dict[str, list[HeadChoice]] = {}
    for row in best:
        by_program.setdefault(row.program_name, []).append(row)
    for h in explanation.values():
        if "short" in h.programs and h.programs["short"].name not in by_program:
            by_program[h.programs["short"].name] = []
    program_names = sorted(by_program, key=lambda name: (-len(by_program[name]), name))
    program_index = {name: i for i, name in enumerate(program_names)}
    glosses = {p.name: p.gloss for h in explanation.values() for p in h.programs.values()}
    programs = [
        {
            "name": name,
            "source": sources.get(name, f"# source of {name} not found in {LIBRARY_ATTN}"),
            "gloss": glosses.get(name, ""),
            "n_heads": len(by_program[name]),
            "mean_iou": _nanmean([r.heldout_iou for r in by_program[name]]),
            "heads": [[r.layer, r.head] for r in by_program[name]],
        }
        for name in program_names
    ]
    heads = []
    for r in best:
        entry = {
            "layer": r.layer,
            "head": r.head,
            "program": program_index[r.program_name],
            "synthesis_iou": r.synthesis_iou,
            "heldout_iou": r.heldout_iou,
            "heldout_iou_no_sink": r.heldout_iou_no_sink,
            "n_sequences": r.n_heldout_sequences,
            "n_tokens": r.n_heldout_tokens,
        }
        h = explanation.get((r.layer, r.head))
        if h is not None:
            short = h.programs.get("short")
            entry.update({
                "category": h.category.key,
                "category_share": h.category.share,
                "purity": h.category.purity,
                "sink_share": h.category.sink_share,
                "shares": h.category.shares,
                "gloss": h.gloss,
                "short": None if short is None else {
                    "program": program_index[short.name], "heldout_iou": short.heldout_iou,
                    "heldout_iou_no_sink": short.heldout_iou_no_sink, "synthesis_iou": short.synthesis_iou,
                },
                "buckets": h.full.buckets,
            })
        heads.append(entry)
    categories = _category_overview(explained, n_layers) if explained is not None else []
    hypotheses = _read_hypotheses(run_dir)

    # heatmaps on shared held-out examples
    example_rows: list[dict] = []
    example_iou: list[list[float | None]] = []
    blob = b""
    if store is not None and best and compiled:
        chosen = choose_examples(store, examples)
        tables = store.tables(chosen)
        dense = [store.dense(i) for i in chosen]
        shown = [min(max_tokens, len(t)) for t in tables]
        for index, table, m in zip(chosen, tables, shown):
            example_rows.append({"seq": index, "tokens": list(table.tok[:m]), "shown": m, "length": len(table)})
        parts = []
        cache: dict[str, list[np.ndarray]] = {}
        for row in best:
            program = compiled.get(row.program_name)
            if program is None:
                notes.append(f"{head_label(row.layer, row.head)}: program {row.program_name} is not in {LIBRARY_ATTN}")
                example_iou.append([None] * len(chosen))
                predicted = [np.zeros((len(t), len(t))) for t in tables]
            else:
                if row.program_name not in cache:
                    cache[row.program_name] = [evaluate(program, table) for table in tables]
                predicted = cache[row.program_name]
                example_iou.append(
                    [iou_dense(d[row.layer, row.head], p) for d, p in zip(dense, predicted)]
                )
            for d, p, m in zip(dense, predicted, shown):
                parts.append(encode_weights(d[row.layer, row.head], m))
                parts.append(encode_weights(p, m))
        blob = np.concatenate(parts).tobytes() if parts else b""

    csv_path = find_replacement_csv(run_dir)
    perplexity = []
    if csv_path is not None:
        perplexity = [plotted(p) for p in read_replacement_csv(csv_path)]
    else:
        notes.append("No replacement results yet: run `attndsl replace`.")

    ious = [r.heldout_iou for r in best]
    counts = {
        "heads_total": n_layers * n_heads,
        "heads_with_program": len(best),
        "mean_heldout_iou": _nanmean(ious),
        "median_heldout_iou": float(np.nanmedian(ious)) if ious and not all(math.isnan(x) for x in ious) else None,
        "mean_heldout_iou_no_sink": _nanmean([r.heldout_iou_no_sink for r in best]),
        "mean_synthesis_iou": _nanmean([r.synthesis_iou for r in best]),
        "heldout_sequences": sorted({r.n_heldout_sequences for r in best}),
        "heldout_tokens": sorted({r.n_heldout_tokens for r in best}),
        "store_sequences": store.n_sequences if store is not None else None,
        "store_synthesis": len(store.synthesis_indices) if store is not None else None,
        "store_heldout": len(store.heldout_indices) if store is not None else None,
        "replacement_csv": str(csv_path.relative_to(run_dir)) if csv_path is not None else None,
    }
    stages = manifest.get("stages", {})
    title_model = (stages.get("extract") or {}).get("model") or (stages.get("explain") or {}).get("model") or "model"
    return ReportData(
        title=f"attndsl: the attention heads of {title_model}",
        n_layers=n_layers,
        n_heads=n_heads,
        heads=heads,
        programs=programs,
        library_size=library_size,
        examples=example_rows,
        heatmaps=base64.b64encode(blob).decode("ascii"),
        example_iou=example_iou,
        perplexity=perplexity,
        categories=categories,
        hypotheses=hypotheses,
        heatmap_mode="scroll",
        settings=stages,
        # the explain driver's own bookkeeping (which stages ran in its last call) is not a result
        completed={k: v for k, v in manifest.get("completed", {}).items() if k != "explain"},
        versions=manifest.get("versions", {}),
        counts=counts,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        notes=notes,
    )


def _category_overview(explained, n_layers: int) -> list[dict]:
    """Present categories in taxonomy order: count, per-layer counts and the best example head."""
    from attndsl.explanations.categories import CATEGORIES

    counts = explained.category_counts()
    best = explained.best_of_category()
    out = []
    for key in CATEGORIES:
        if key not in counts:
            continue
        per_layer = [0] * n_layers
        for h in explained.heads:
            if h.category.key == key and h.layer < n_layers:
                per_layer[h.layer] += 1
        example = best[key]
        out.append({"key": key, "label": CATEGORIES[key], "count": counts[key], "per_layer": per_layer,
                    "best": [example.layer, example.head], "colour": CATEGORY_COLOURS[key]})
    return out


def _read_hypotheses(run_dir: Path) -> list[dict]:
    """The user programs `attndsl score --library` scored (``scores/*.hypotheses.json``), if any."""
    from attndsl.explanations.hypotheses import read_hypotheses

    return read_hypotheses(run_dir)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ------------------------------------------------------------- rendering


def template() -> str:
    """The page template shipped with the package (``attndsl/data/report_template.html``)."""
    return resources.files("attndsl").joinpath("data", TEMPLATE).read_text(encoding="utf-8")


_MARKER = re.compile(r"/\*@([A-Z]+)@\*/")


def render(data: ReportData) -> str:
    """The complete HTML page for ``data`` (data inlined as JSON).

    The template's markers are replaced in one pass over the template only,
    so a marker that appears inside the data (a program string
    ``"/*@COLOURS@*/"``) is never substituted; the data is JSON escaped for a
    script element (`ReportData.to_json`).
    """
    config = escape_script_json(json.dumps({"stops": COLOUR_STOPS, "missing": MISSING_COLOUR,
                                            "categories": CATEGORY_COLOURS}))
    values = {"TITLE": html.escape(data.title), "DATA": data.to_json(), "COLOURS": config}
    page = template()
    found = set(_MARKER.findall(page))
    missing = sorted(set(values) - found)
    if missing:
        raise RuntimeError(f"report template lacks /*@{missing[0]}@*/")
    return _MARKER.sub(lambda m: values.get(m.group(1), m.group(0)), page)


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    examples: int = DEFAULT_EXAMPLES,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Path:
    """Write the run's report (default ``<run>/report.html``, atomically); returns its path."""
    if examples < 0:
        raise UserError("--examples must be at least 0")
    if max_tokens < 2:
        raise UserError("--max-tokens must be at least 2")
    data = collect(run_dir, examples=examples, max_tokens=max_tokens)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    atomic_write_text(path, render(data))
    return path
