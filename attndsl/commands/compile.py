"""``attndsl compile FILE.attn``: parse, validate and compile programs.

Prints a summary per program, or every problem as ``file:line:col:`` with
the offending line and exit code 2.  ``--emit`` prints the syntax tree, the
canonical source, or the standalone Python of each program instead.
"""
from __future__ import annotations

import pprint

from attndsl.language import ir
from attndsl.language.emit import emit_module
from attndsl.errors import AttnError, Diagnostic, source_line
from attndsl.pipeline.attnfile import read_attn
from attndsl.language.printer import format_module
from attndsl.extraction.syntax import INSTALL_HINT as SYNTAX_INSTALL_HINT


def register(sub) -> None:
    p = sub.add_parser("compile", help="parse, validate and compile a .attn file")
    p.add_argument("file", help="a .attn source file")
    p.add_argument("--emit", choices=("ast", "python", "canonical"), help="print this form of the programs instead of a summary")
    p.set_defaults(func=run)


def syntax_provider_available() -> bool:
    """spaCy and an English pipeline are installed (`attndsl.extraction.syntax.find_pipeline`)."""
    from attndsl.extraction.syntax import provider_available

    return provider_available()


def compile_checked(path: str):
    """Parse, validate and check provider needs; raise `AttnError` with all problems."""
    attn = read_attn(path)
    source, module, programs, problems = attn.text, attn.module, list(attn.programs), list(attn.problems)
    if not module.programs:
        problems.append(Diagnostic(path, 1, 1, "no programs in this file", "program NAME { terms }"))
    if not syntax_provider_available():
        for program in module.programs:
            if program.uses_syntax:
                problems.append(Diagnostic(
                    path, program.span.line, program.span.column,
                    f"program '{program.name}' uses syntax features, but no syntax provider is installed",
                    SYNTAX_INSTALL_HINT,
                    source_line(source, program.span.line),
                ))
    if problems:
        raise AttnError(sorted(problems, key=lambda d: (d.line, d.column)))
    return module, programs


def describe(program: ir.Program) -> str:
    features = sorted({getattr(node, "name") for node in ir.walk(program)
                       if isinstance(node, (ir.NumFeature, ir.StrFeature, ir.BoolFeature, ir.Same))}
                      | ({"sim"} if any(isinstance(n, ir.Similarity) for n in ir.walk(program)) else set()))
    selections = sorted({node.kind for node in ir.walk(program) if isinstance(node, ir.Select)})
    parts = [f"{len(program.terms)} term{'s' if len(program.terms) != 1 else ''}", f"fallback {program.fallback}"]
    if program.form != "linear":
        parts.insert(1, f"combine {program.form}")
    if program.masks:
        parts.append(f"{len(program.masks)} mask{'s' if len(program.masks) != 1 else ''}")
    lexicons = sorted({node.lexicon.name for node in ir.walk(program) if isinstance(node, ir.LexiconRead)})
    if lexicons:
        parts.append("lexicons " + ", ".join(lexicons))
    if features:
        parts.append("features " + ", ".join(features))
    if selections:
        parts.append("selections " + ", ".join(selections))
    return f"  {program.name}: " + "; ".join(parts)


def run(args) -> int:
    module, programs = compile_checked(args.file)
    match args.emit:
        case "ast":
            for program in module.programs:
                print(pprint.pformat(program, width=100))
        case "canonical":
            print(format_module(module), end="")
        case "python":
            print(emit_module(programs), end="")
        case None:
            from attndsl.language.compiled import compile_programs

            compiled = compile_programs(programs)
            print(f"{args.file}: {len(programs)} program{'s' if len(programs) != 1 else ''} compiled ({compiled.summary})")
            for program in programs:
                print(describe(program))
    return 0
