"""``attndsl explain``: extract → synthesize → score → replace → report in one command."""
from __future__ import annotations

import argparse
from pathlib import Path

from attndsl.pipeline.explain import DEFAULT_FRACTIONS, DEFAULT_MAX_SEQUENCES, DEFAULT_MAX_TOKENS
from attndsl.commands.args import check_llm_arguments, fraction_list, head_spec, integer, number


def _default_out(model: str) -> str:
    name = Path(model.rstrip("/")).name
    for suffix in (".gguf",):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return str(Path("runs") / (name.replace(":", "_") or "default"))


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="explain every head of a model: the whole pipeline, resumable, ending in an HTML report",
        description=(
            "Record the model's attention on the corpus, write a program for every head (offline "
            "enumerative search, or an OpenAI-compatible LLM with --llm-model), choose each head's best "
            "program from the pooled library, replace heads with their programs to measure perplexity, "
            "and write RUN/report.html. Stages already done in RUN are skipped; rerun the same command "
            "to resume after an interruption."
        ),
    )
    parser.add_argument("--model", default="smollm2", help="alias (smollm2), .gguf file, model directory or hub id")
    parser.add_argument("--corpus", default="builtin", help="builtin, a .txt or .jsonl file, or hf:DATASET[:SPLIT]")
    parser.add_argument("--text-field", default="text", help="field holding the text in .jsonl / hf corpora")
    parser.add_argument("--out", metavar="RUN", default=None, help="run directory (default runs/<model name>)")
    parser.add_argument(
        "--max-sequences", type=integer(0), default=DEFAULT_MAX_SEQUENCES, metavar="N",
        help=f"sequences taken from the corpus, split into synthesis and held-out (default {DEFAULT_MAX_SEQUENCES}; 0 = all)",
    )
    parser.add_argument("--max-tokens", type=integer(2), default=DEFAULT_MAX_TOKENS, help=f"tokens per sequence (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--max-sentences", type=integer(1), default=None, metavar="N",
                        help="at most N sentences per sequence (1 = one sentence each, the paper's protocol)")
    parser.add_argument("--heldout-fraction", type=number(0.0, 1.0, low_open=True, high_open=True), default=0.5, help="share of sequences held out (default 0.5)")
    parser.add_argument("--seed", type=integer(), default=0, help="salt of the split hash")
    parser.add_argument("--heads", type=head_spec, default=None, metavar="L.H,...", help="only these heads (default: all)")
    parser.add_argument(
        "--fractions", type=fraction_list, default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
        help="shares of all heads to replace, best held-out IoU first (default %(default)s)",
    )
    parser.add_argument("--greedy", action="store_true", help="replacement skips heads whose marginal cost is extreme")
    parser.add_argument(
        "--search", choices=("enumerative",), default=None,
        help="write programs with the offline search even if an LLM endpoint is configured in the environment",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--batch-size", type=integer(1), default=8)
    parser.add_argument("--report-examples", type=integer(0), default=3, help="held-out sequences shown per head in the report")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    from attndsl.synthesis.llm import add_arguments

    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attndsl.pipeline.explain import explain
    from attndsl.synthesis.llm import LLMConfig, config_from_args

    check_llm_arguments(args)
    llm = None
    if args.search is None and (args.llm_model or args.llm_url or LLMConfig.endpoint_configured()):
        llm = config_from_args(args)
    result = explain(
        model=args.model,
        corpus=args.corpus,
        out=args.out or _default_out(args.model),
        max_sequences=args.max_sequences or None,
        max_tokens=args.max_tokens,
        max_sentences=args.max_sentences,
        heldout_fraction=args.heldout_fraction,
        seed=args.seed,
        heads=args.heads,
        fractions=args.fractions,
        greedy=args.greedy,
        llm=llm,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        text_field=args.text_field,
        report_examples=args.report_examples,
        progress=not args.no_progress,
    )
    print(result.summary())
    return 0
