"""``attndsl synthesize RUN``: write programs for every head and build the library.

With an LLM endpoint (``--llm-*`` flags or ``OPENAI_BASE_URL`` /
``ATTNDSL_LLM_MODEL``) heads are explained by the LLM writer; without one, or
with ``--search enumerative``, by the offline enumerative search (both when
both are asked for).  Resumable: rerun the same command to finish the heads an
interrupted run had not done.
"""
from __future__ import annotations

import argparse

from attndsl.commands.args import check_llm_arguments, head_spec, integer, number
from attndsl.pipeline.options import add_option


def register(subparsers) -> None:
    from attndsl.synthesis.llm import add_arguments
    from attndsl.synthesis.search import SearchSettings

    defaults = SearchSettings()
    parser = subparsers.add_parser(
        "synthesize",
        help="write programs for the heads of a run and build the pooled library (resumable)",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("run_dir", metavar="RUN", help="run directory made by `attndsl extract`")
    parser.add_argument("--search", choices=("enumerative",), default=None,
                        help="use the offline enumerative search (the default when no LLM endpoint is configured)")
    parser.add_argument("--heads", type=head_spec, metavar="L.H,...", default=None,
                        help="only these heads, e.g. 3.4,5.0 or 7.* (default: every head)")
    parser.add_argument("--max-terms", type=integer(1), default=defaults.max_terms, metavar="N",
                        help=f"most terms per searched program (default {defaults.max_terms})")
    parser.add_argument("--min-gain", type=number(0.0, 1.0), default=defaults.min_gain, metavar="IOU",
                        help=f"stop adding terms below this IoU gain (default {defaults.min_gain})")
    parser.add_argument("--screen-sequences", type=integer(1), default=defaults.screen_sequences, metavar="N",
                        help=f"synthesis sequences the search screens terms on (default {defaults.screen_sequences})")
    add_option(parser, "max_screen_entries")
    parser.add_argument("--max-full-entries", type=integer(1), default=defaults.max_full_entries, metavar="N",
                        help="the same for all synthesis sequences, where weights are refined "
                             "(default: 732160, times 64/n when the longest sequence has n > 64 tokens)")
    parser.add_argument("--softmax-terms", type=integer(0), default=defaults.softmax_terms, metavar="N",
                        help="also fit a `combine softmax` program of at most N terms per head, pooled with the "
                             f"linear ones (default {defaults.softmax_terms}; 0: linear programs only)")
    parser.add_argument("--lexicon-entries", type=integer(0), default=defaults.lexicon_entries, metavar="N",
                        help="words each of the softmax program's word tables (preferred key words; query words "
                             f"before the sink / the current token) keeps at most (default {defaults.lexicon_entries}; "
                             "0: no word tables)")
    parser.add_argument("--word-pairs", type=integer(0), default=defaults.word_pairs, metavar="N",
                        help="word-pair tables (a query-word table times a key-word table: which keys these "
                             "queries prefer) the softmax program may learn (default: 2 while every sequence has "
                             "at most 64 tokens and the run has no syntax, else 0; 0: none)")
    parser.add_argument("--tag-pairs", type=integer(0), default=defaults.tag_pair_entries, metavar="N",
                        help="(query tag, key tag) pairs each of the softmax program's tag-pair tables (part of "
                             "speech and dependency label: which kinds of key each kind of query reads) keeps at "
                             "most (twice as many where one side is a word: printed as word tables, one per tag); "
                             "learned where the run has syntax (default: 48 while every sequence has at most 64 "
                             "tokens, 96 if most sequences also hold several sentences, else 0; 0: none)")
    parser.add_argument("--sentence-tables", choices=("auto", "on", "off"), default="auto",
                        help="also learn a tag-pair table of what each part of speech reads within its own "
                             "sentence (default auto: on where most sequences hold several sentences and every "
                             "sequence has at most 64 tokens)")
    parser.add_argument("--library-cap", type=integer(1), default=1000, metavar="N", help="most programs in the library")
    parser.add_argument("--seed", type=integer(0), default=defaults.seed, help="search seed (default 0)")
    add_option(parser, "progress")
    add_arguments(parser)
    parser.set_defaults(func=run)


def llm_requested(args: argparse.Namespace) -> bool:
    from attndsl.synthesis.llm import LLMConfig

    return bool(args.llm_url or args.llm_model or args.llm_api_key) or LLMConfig.endpoint_configured()


def run(args: argparse.Namespace) -> int:
    from attndsl.synthesis.llm import config_from_args
    from attndsl.synthesis.search import SearchSettings
    from attndsl.synthesis.synthesize import synthesize

    check_llm_arguments(args)
    llm_config = config_from_args(args) if llm_requested(args) else None
    use_search = True if (args.search == "enumerative" or llm_config is None) else False
    settings = SearchSettings(max_terms=args.max_terms, min_gain=args.min_gain,
                              screen_sequences=args.screen_sequences, seed=args.seed,
                              softmax_terms=max(args.softmax_terms, 0),
                              softmax_lexicons=args.lexicon_entries > 0,
                              lexicon_entries=max(args.lexicon_entries, 1), word_pairs=args.word_pairs,
                              tag_pair_entries=args.tag_pairs,
                              sentence_tables={"auto": None, "on": True, "off": False}[args.sentence_tables],
                              max_screen_entries=args.max_screen_entries, max_full_entries=args.max_full_entries)
    report = synthesize(args.run_dir, heads=args.heads, search=settings, llm_config=llm_config,
                        use_search=use_search, cap=args.library_cap, progress=not args.no_progress)
    for line in report.lines():
        print(line)
    from attndsl.pipeline.layout import BEST_CSV, LIBRARY_ATTN, LIBRARY_DIR

    print(f"library: {args.run_dir}/{LIBRARY_DIR}/{LIBRARY_ATTN}; per head: {args.run_dir}/{LIBRARY_DIR}/{BEST_CSV}")
    return 0
