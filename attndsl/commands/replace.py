"""``attndsl replace``: put the run's best programs in place of heads and measure perplexity."""
from __future__ import annotations

import argparse
from pathlib import Path

from attndsl.commands.args import fraction_list, integer, number
from attndsl.pipeline.options import add_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "replace",
        help="replace heads with their programs (best held-out IoU first) and report perplexity",
        description=(
            "Replace the given fractions of all heads with their best programs, in order of held-out IoU, "
            "and report held-out perplexity for the unmodified model, the programs, and the uniform causal "
            "pattern in the same heads. Writes RUN/replace/replacement.csv."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="run directory (after `attndsl synthesize`)")
    parser.add_argument("--fractions", type=fraction_list, default="0.1,0.25,0.5", help="shares of all heads, e.g. 0.1,0.25,0.5,1.0")
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="skip heads whose own marginal cost is extreme (raises probe perplexity by more than --max-head-cost)",
    )
    parser.add_argument("--max-head-cost", type=number(0.0), default=0.05, help="greedy: relative perplexity rise that skips a head (default 0.05)")
    parser.add_argument("--max-sequences", type=integer(1), default=None, metavar="N", help="use the first N held-out sequences")
    for name in ("batch_size", "device", "progress"):
        add_option(parser, name)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attndsl.pipeline.layout import RunLayout
    from attndsl.surrogates.replace import format_buckets, format_table, run_replacement

    buckets: list = []

    rows, path = run_replacement(
        args.run,
        fractions=args.fractions,
        greedy=args.greedy,
        max_head_cost=args.max_head_cost,
        max_sequences=args.max_sequences,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        buckets=buckets,
    )
    print(format_table(rows))
    print(f"wrote {path}")
    if not args.greedy:
        print("per length bucket of the held-out sequences (tokens):")
        for line in format_buckets(buckets):
            print(line)
        print(f"wrote {RunLayout(Path(args.run)).replacement_buckets_csv}")
    return 0
