"""``attndsl heads RUN``: the head table in the terminal — category, purity, IoU, program, gloss.

Every head of a run with its category (from its program's main terms and their
share of the row mass; see `attndsl.explanations.categories`), filterable by category,
held-out IoU and layer, as an aligned table, CSV or JSON for scripts.  Rows are
ordered by layer, then head; numbers are rounded to 3 decimals (table) or 4
(CSV, JSON), so the output of one run never changes.
"""
from __future__ import annotations

import argparse
import csv
import io
import json

from attndsl.commands.args import integer, number

FORMATS = ("table", "csv", "json")


def register(subparsers) -> None:
    from attndsl.explanations.categories import CATEGORIES

    parser = subparsers.add_parser(
        "heads",
        help="list a run's heads with category, held-out IoU, program and gloss",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("run_dir", metavar="RUN", help="run directory with a library (`attndsl synthesize`)")
    parser.add_argument("--category", metavar="C", default=None,
                        help="only heads of this category: " + ", ".join(CATEGORIES))
    parser.add_argument("--min-iou", type=number(0.0, 1.0), metavar="X", default=None,
                        help="only heads with held-out IoU >= X")
    parser.add_argument("--layer", type=integer(0), metavar="L", default=None, help="only heads of layer L")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    parser.set_defaults(func=run)


def format_heads(heads, fmt: str) -> str:
    """The head rows (`attndsl.explanations.reading.HEAD_COLUMNS`) in one of `FORMATS`."""
    from attndsl.explanations.reading import HEAD_COLUMNS

    rows = [h.row() for h in heads]
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HEAD_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    header = ("layer", "head", "category", "purity", "IoU", "program", "gloss")
    lines = [[str(r["layer"]), str(r["head"]), r["category"], f"{r['purity']:.0%}",
              "-" if r["heldout_iou"] is None else f"{r['heldout_iou']:.3f}", r["program"], r["gloss"]] for r in rows]
    widths = [max([len(header[i])] + [len(line[i]) for line in lines]) for i in range(len(header) - 1)]
    right = {0, 1, 3, 4}

    def fmt_line(cells):
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out + [cells[-1]]).rstrip()

    return "\n".join([fmt_line(header)] + [fmt_line(line) for line in lines]) + "\n"


def run(args: argparse.Namespace) -> int:
    import sys

    from attndsl.errors import UserError
    from attndsl.explanations.reading import explain_run

    explained = explain_run(args.run_dir)
    if args.layer is not None and not (0 <= args.layer < explained.n_layers):
        raise UserError(f"--layer {args.layer}: the run has layers 0 to {explained.n_layers - 1}")
    heads = explained.filter(category=args.category, min_iou=args.min_iou, layer=args.layer)
    sys.stdout.write(format_heads(heads, args.format))
    if args.format == "table":
        counts = {}
        for h in heads:
            counts[h.category.key] = counts.get(h.category.key, 0) + 1
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        print(f"{len(heads)} of {len(explained.heads)} heads" + (f": {summary}" if summary else ""))
    return 0
