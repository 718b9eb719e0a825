"""``attndsl score RUN [--library FILE.attn]``: score a program library against a run's heads.

Each head gets the library program that fits it best on the synthesis
sequences; its held-out IoU (and the variant ignoring key 0) is written to a
CSV and summarised: mean, quartiles, per-layer means, and how many held-out
sequences and tokens the numbers rest on.  With ``--library``, it also says
for each of the file's programs which heads it explains best and how well
(held-out IoU, beside the run's own program for those heads), and saves that
as ``RUN/scores/<file stem>.hypotheses.json`` for the report.
"""
from __future__ import annotations

import argparse

from attndsl.commands.args import input_file, integer
from attndsl.pipeline.options import add_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score a program library (default: the run's) against every head of a run",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("run_dir", metavar="RUN", help="run directory with an attention store")
    parser.add_argument("--library", type=input_file, metavar="FILE.attn", default=None,
                        help="programs to score (default: RUN/library/library.attn)")
    parser.add_argument("--top-k", type=integer(1), default=4, metavar="K",
                        help="programs per head re-scored on all synthesis sequences (default 4)")
    add_option(parser, "progress")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attndsl.synthesis.library import score_lines
    from attndsl.synthesis.synthesize import score_library

    choices, path, size = score_library(args.run_dir, args.library, top_k=args.top_k, progress=not args.no_progress)
    for line in score_lines(choices, size):
        print(line)
    print(f"per head: {path}")
    if args.library is not None:
        from attndsl.explanations.hypotheses import hypothesis_lines, score_hypotheses

        print("heads each program explains best:")
        for line in hypothesis_lines(score_hypotheses(args.run_dir, args.library, choices)):
            print(line)
    return 0
