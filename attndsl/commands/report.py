"""``attndsl report RUN``: (re)build a run's self-contained HTML report."""
from __future__ import annotations

import argparse

from attndsl.commands.args import integer, output_file


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build the HTML report of a run",
        description=(
            "Write RUN/report.html: one self-contained file (no network needed) with the "
            "layer x head grid of held-out IoU, each head's program and heatmaps, the library, "
            "the perplexity curve and the run's settings. Works on unfinished runs too."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN", help="run directory")
    parser.add_argument("--out", type=output_file, default=None, metavar="FILE", help="where to write (default RUN/report.html)")
    parser.add_argument("--examples", type=integer(0), default=3, help="held-out sequences shown per head (default 3)")
    parser.add_argument("--max-tokens", type=integer(2), default=40, help="tokens shown per heatmap (default 40)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attndsl.reporting.report import build_report

    path = build_report(args.run_dir, out=args.out, examples=args.examples, max_tokens=args.max_tokens)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
