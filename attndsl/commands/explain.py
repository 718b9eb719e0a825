"""``attndsl explain``: extract → synthesize → score → replace → report in one command.

The flags are generated from `attndsl.pipeline.options.ExplainOptions` (one
declaration of each option's default and help for the CLI and the Python
API); ``--search`` and the LLM writer's flags are this command's own.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from attndsl.commands.args import check_llm_arguments
from attndsl.pipeline import options


def _default_out(model: str) -> str:
    name = Path(model.rstrip("/")).name
    for suffix in (".gguf",):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return str(Path("runs") / (name.replace(":", "_") or "default"))


def _search_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--search", choices=("enumerative",), default=None,
        help="write programs with the offline search even if an LLM endpoint is configured in the environment",
    )


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
    options.add_arguments(parser, after={"greedy": _search_flag})
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
    result = explain(**options.from_args(args, out=args.out or _default_out(args.model), llm=llm))
    print(result.summary())
    return 0
