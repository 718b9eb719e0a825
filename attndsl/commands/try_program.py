"""``attndsl try FILE.attn --text "…"``: show a program's attention on a text.

(``attndsl run`` is the old name, kept as a hidden alias that says so on
stderr: "run" means the run directory everywhere else.)

Without ``--model`` the text is split into words and punctuation (one token
each); with ``--model`` it is tokenised by that model's tokenizer, as the
heads see it.  Each program's matrix is printed as a labelled heatmap.
"""
from __future__ import annotations

import re
import sys

from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable, table_from_spans
from attndsl.reporting.heatmap import render_heatmap
from attndsl.language.interpreter import evaluate
from attndsl.commands.args import integer
from attndsl.commands.compile import compile_checked

_WORDS = re.compile(r"\s*(?:\w+(?:['’]\w+)*|[^\w\s])|\s+", re.UNICODE)


def word_table(text: str) -> TokenTable:
    """One token per word or punctuation mark; a token's span includes the spaces before it."""
    spans = [(m.start(), m.end()) for m in _WORDS.finditer(text)]
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(text[s:e].strip(), len(vocab)) for s, e in spans]
    return table_from_spans(text, ids, spans)


def model_table(model: str, text: str) -> TokenTable:
    """Tokenise as the model does (BOS included where the model adds one)."""
    from attndsl.extraction.models import load_model
    from attndsl.extraction.tokens import token_table

    return token_table(load_model(model).tokenizer, text)


def _add_arguments(p) -> None:
    p.add_argument("file", help="a .attn source file")
    p.add_argument("--text", required=True, help="the text to attend over")
    p.add_argument("--program", help="only this program of the file")
    p.add_argument("--model", help="tokenise with this model's tokenizer (alias, hub id, directory or .gguf)")
    p.add_argument("--max-tokens", type=integer(1), default=48, help="show at most this many tokens")


def register(sub) -> None:
    p = sub.add_parser("try", help="show a program's attention matrix for a text")
    _add_arguments(p)
    p.set_defaults(func=run)
    old = sub.add_parser("run", description="Old name of `attndsl try`.")  # no help=: not listed in --help
    _add_arguments(old)
    old.set_defaults(func=_run_alias)


def _run_alias(args) -> int:
    print("attndsl: 'attndsl run FILE.attn' is now 'attndsl try FILE.attn'; 'run' will be removed", file=sys.stderr)
    return run(args)


def run(args) -> int:
    _, programs = compile_checked(args.file)
    if args.program:
        programs = [p for p in programs if p.name == args.program]
        if not programs:
            raise UserError(f"no program named '{args.program}' in {args.file}")
    if not args.text:
        raise UserError("--text is empty")
    table = model_table(args.model, args.text) if args.model else word_table(args.text)
    for program in programs:
        matrix = evaluate(program, table)
        print(render_heatmap(matrix, list(table.tok), title=f"program {program.name}  ({len(table)} tokens)", max_tokens=args.max_tokens))
        print()
    return 0
