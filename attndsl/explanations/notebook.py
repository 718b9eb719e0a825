"""HTML for Jupyter: how a `RunExplanation` and a `HeadExplanation` render (``_repr_html_``).

A run renders as its category counts and the head table; a head as its
category, gloss, programs with held-out IoU, and the real vs program
heatmaps (inline SVG, token labels on both axes) on the run's longest
held-out sequence, cut to its first `MAX_TOKENS` tokens (a crop, not a
down-sample: the prefix of a causal matrix is exact).  Every string is
HTML-escaped.
"""
from __future__ import annotations

import html
import math

import numpy as np

MAX_TOKENS = 32
CELL = 11


def _fmt(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"


def heatmap_svg(matrix: np.ndarray, tokens: list[str], title: str) -> str:
    """A causal matrix as an SVG heatmap (rows: queries, columns: keys; shade ∝ √weight)."""
    from attndsl.reporting.heatmap import token_label

    m = min(len(tokens), matrix.shape[0])
    margin = 70
    size = margin + m * CELL + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 16}" '
             f'style="font:9px sans-serif"><text x="2" y="11">{html.escape(title)}</text>'
             f'<g transform="translate(0,16)">']
    for q in range(m):
        for k in range(q + 1):
            a = float(np.clip(matrix[q, k], 0.0, 1.0)) ** 0.5
            colour = (round(255 - a * 247), round(255 - a * 207), round(255 - a * 148))
            parts.append(f'<rect x="{margin + k * CELL}" y="{margin + q * CELL}" width="{CELL}" height="{CELL}" '
                         f'fill="rgb{colour}"><title>{q}→{k}: {matrix[q, k]:.3f}</title></rect>')
    for i, t in enumerate(tokens[:m]):
        label = html.escape(token_label(t, 9))
        parts.append(f'<text x="{margin - 3}" y="{margin + i * CELL + 8}" text-anchor="end">{label}</text>')
        x = margin + i * CELL + 8
        parts.append(f'<text x="{x}" y="{margin - 3}" transform="rotate(-90 {x} {margin - 3})">{label}</text>')
    parts.append("</g></svg>")
    return "".join(parts)


def _example(run):
    """(tokens, dense attention [L, H, n, n]) of the run's longest held-out sequence, or None."""
    from attndsl.reporting.report import choose_examples

    from attndsl.pipeline.layout import RunLayout

    if not RunLayout(run.run_dir).has_store():
        return None
    cached = run.__dict__.get("_example")
    if cached is None:
        from attndsl.extraction.store import open_store

        store = open_store(run.run_dir)
        chosen = choose_examples(store, 1)
        if not chosen:
            return None
        table = store.tables(chosen)[0]
        cached = (table, store.dense(chosen[0]))
        object.__setattr__(run, "_example", cached)
    return cached


def head_html(head) -> str:
    """One head: category, gloss, programs, heatmaps."""
    from attndsl.language.interpreter import evaluate
    from attndsl.language.validate import compile_source

    c = head.category
    shares = ", ".join(f"{k} {v:.0%}" for k, v in c.shares.items())
    out = [f"<div><h4>Layer {head.layer}, head {head.head}: {html.escape(c.label)}</h4>",
           f"<p><b>{html.escape(head.gloss)}</b></p>",
           f"<p>category share {c.share:.0%}, purity {c.purity:.0%} (shares: {html.escape(shares)})</p>",
           "<table><tr><th>tier</th><th>program</th><th>held-out IoU</th><th>ignoring key 0</th></tr>"]
    for tier, p in head.programs.items():
        out.append(f"<tr><td>{tier}</td><td>{html.escape(p.name)}</td><td>{_fmt(p.heldout_iou)}</td>"
                   f"<td>{_fmt(p.heldout_iou_no_sink)}</td></tr>")
    out.append("</table>")
    for tier, p in head.programs.items():
        out.append(f"<pre>{html.escape(p.source)}</pre>")
    example = _example(head.run) if head.run is not None else None
    if example is not None:
        table, dense = example
        m = min(MAX_TOKENS, len(table))
        program = compile_source(head.short.source)[0]
        predicted = evaluate(program, table)
        tokens = list(table.tok[:m])
        out.append("<div style='display:flex;gap:12px'>")
        out.append(heatmap_svg(dense[head.layer, head.head][:m, :m], tokens, "real attention"))
        out.append(heatmap_svg(predicted[:m, :m], tokens, f"program {head.short.name}"))
        out.append("</div>")
        note = f"first {m} of {len(table)} tokens shown" if m < len(table) else f"{m} tokens"
        out.append(f"<p>Longest held-out sequence, {note}; rows are queries, columns keys.</p>")
    out.append("</div>")
    return "".join(out)


def run_html(run) -> str:
    """A run: category counts, then the head table."""
    counts = run.category_counts()
    from attndsl.explanations.categories import CATEGORIES

    out = [f"<div><h4>{html.escape(str(run.run_dir))}: {len(run.heads)} heads explained</h4><p>",
           ", ".join(f"{html.escape(CATEGORIES[k])}: {v}" for k, v in counts.items()), "</p>",
           "<table><tr><th>layer</th><th>head</th><th>category</th><th>purity</th><th>held-out IoU</th>"
           "<th>program</th><th>gloss</th></tr>"]
    for h in run.heads:
        out.append(f"<tr><td>{h.layer}</td><td>{h.head}</td><td>{html.escape(h.category.key)}</td>"
                   f"<td>{h.category.purity:.0%}</td><td>{_fmt(h.heldout_iou)}</td>"
                   f"<td>{html.escape(h.short.name)}</td><td>{html.escape(h.gloss)}</td></tr>")
    out.append("</table></div>")
    return "".join(out)
