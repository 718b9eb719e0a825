"""``attndsl qa``: multiple-choice accuracy with and without the run's surrogate heads."""
from __future__ import annotations

import argparse

from attndsl.commands.args import fraction, input_file
from attndsl.pipeline.options import add_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "qa",
        help="multiple-choice QA accuracy with and without replaced heads",
        description=(
            "Score each choice by the mean log-probability of its tokens given the question; report "
            "accuracy for the unmodified model, with the best programs in the top FRACTION of heads "
            "(by held-out IoU), and with the uniform pattern in the same heads. Items are JSON lines: "
            '{"question": str, "choices": [str, ...], "answer": int}.'
        ),
    )
    parser.add_argument("run", metavar="RUN", help="run directory (after `attndsl synthesize`)")
    parser.add_argument("--data", type=input_file, required=True, metavar="FILE.jsonl", help="multiple-choice items")
    parser.add_argument("--fraction", type=fraction, default=0.25, help="share of all heads to replace (default 0.25)")
    for name in ("batch_size", "device", "progress"):
        add_option(parser, name)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attndsl.surrogates import qa
    from attndsl.surrogates.replace import load_ranked_heads, load_run_model
    from attndsl.surrogates.surrogate import Assignment

    items = qa.load_items(args.data)
    ranked = load_ranked_heads(args.run)
    loaded = load_run_model(args.run, args.device)
    chosen = ranked[: int(round(args.fraction * loaded.n_layers * loaded.n_heads))]
    Assignment.from_items((h.layer, h.head, h.program) for h in chosen).check(loaded.n_layers, loaded.n_heads)
    results = qa.compare(
        loaded.model, loaded.tokenizer, items, chosen, batch_size=args.batch_size, progress=not args.no_progress
    )
    print(qa.format_results(results, len(chosen)))
    return 0
