"""``attndsl extract``: record every head's attention on a corpus into a run directory."""
from __future__ import annotations

import argparse

from attndsl.commands.args import integer, number
from attndsl.pipeline.options import add_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="record attention of every head on a corpus (resumable)",
        description=(
            "Load a causal LM, pack the corpus into sentence sequences, and store every "
            "head's causal attention (12-bit, IoU error < 0.005; --store-codec topmass for long "
            "sequences) in RUN. Rerun the same "
            "command to resume an interrupted extraction."
        ),
    )
    for name in ("model", "corpus", "text_field"):
        add_option(parser, name)
    parser.add_argument(
        "--txt-separator", default="auto", choices=("auto", "endoftext", "blank-line"),
        help="how a .txt corpus is cut into stories (packing never crosses one): auto = <|endoftext|> lines "
        "if the file has any, else blank lines; endoftext = only <|endoftext|> lines, so blank-line "
        "paragraphs stay in one story; blank-line = every blank line too (default auto)",
    )
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory (created if missing)")
    parser.add_argument("--max-sequences", type=integer(1), default=None, metavar="N")
    parser.add_argument("--max-tokens", type=integer(2), default=64, help="tokens per sequence, BOS included (default 64)")
    add_option(parser, "max_sentences")
    add_option(parser, "mix_lengths")
    parser.add_argument("--heldout-fraction", type=number(0.0, 1.0), default=0.5, help="share of sequences held out (default 0.5)")
    for name in ("seed", "batch_size", "memory_gb", "device", "dtype"):
        add_option(parser, name)
    parser.add_argument("--store-codec", default="log12", choices=("log12", "topmass"),
                        help="log12 = every causal entry, 1.5 bytes each (default); topmass = per head and row only "
                             "the largest entries up to --store-mass, sparse (smaller for long sequences; IoU error "
                             "bound 0.024 at mass 0.99)")
    parser.add_argument("--store-mass", type=number(0.0, 1.0, low_open=True, high_open=True), default=0.99,
                        help="mass each row keeps with --store-codec topmass (default 0.99)")
    parser.add_argument("--syntax", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old scripts
    add_option(parser, "syntax")
    add_option(parser, "spacy_pipeline")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attndsl.extraction.extract import extract, length_summary

    store = extract(
        args.out,
        model=args.model,
        corpus=args.corpus,
        max_sequences=args.max_sequences,
        max_tokens=args.max_tokens,
        max_sentences=args.max_sentences,
        mix_lengths=args.mix_lengths,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        heldout_fraction=args.heldout_fraction,
        seed=args.seed,
        syntax=not args.no_syntax,
        spacy_pipeline=args.spacy_pipeline,
        text_field=args.text_field,
        progress=not args.no_progress,
        txt_separator=args.txt_separator,
        store_codec=args.store_codec,
        store_mass=args.store_mass,
        memory_gb=args.memory_gb,
    )
    print(
        f"{args.out}: {store.n_sequences} sequences ({len(store.synthesis_indices)} synthesis, "
        f"{len(store.heldout_indices)} held-out), {sum(store.lengths)} tokens, "
        f"{store.n_layers}x{store.n_heads} heads, {store.size_bytes() / 1e6:.1f} MB"
    )
    if store.codec != "log12":
        n = max(store.lengths)
        print(f"store codec {store.codec} (mass {store.mass:g} per row): IoU error at most "
              f"{store.iou_error_bound(n):.4f} for sequences of {n} tokens")
    for line in length_summary(store.lengths, args.max_tokens, args.max_sentences):
        print(line)
    return 0
