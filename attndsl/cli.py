"""The ``attndsl`` command line.

Each pipeline stage lives in its own module and contributes one subcommand
through ``register(subparsers)``; the parser sets ``func`` to a callable that
takes the parsed arguments and returns an exit code.  Bad input of any kind
(`AttnError`, `UserError`, a flag refused by argparse or by a ``type=`` of
`attndsl.commands.args`) becomes a message on stderr and exit code 2 — never
a traceback; `main` returns the code in every case.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from attndsl.errors import AttnError, UserError

#: modules that contribute subcommands, in the order they appear in --help
COMMAND_MODULES = (
    "attndsl.commands.compile",
    "attndsl.commands.try_program",
    "attndsl.commands.extract",
    "attndsl.commands.synthesize",
    "attndsl.commands.score",
    "attndsl.commands.heads",
    "attndsl.commands.replace",
    "attndsl.commands.qa",
    "attndsl.commands.explain",
    "attndsl.commands.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attndsl",
        description="Explain transformer attention heads with small compiled programs.",
    )
    parser.add_argument(
        "--threads", default=None, metavar="N",
        help="threads for torch and Numba together, and softmax fits the synthesis runs at once (default: "
             "$ATTNDSL_THREADS, else every core this process may use; 0 = every core)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # the module exists but a dependency is missing
                raise
            continue  # a stage not present in this build
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a bad flag (argparse printed why) or --help: the code, not an exception
        return stop.code if isinstance(stop.code, int) else 2
    try:
        from attndsl.threads import configure

        configure(args.threads)  # one pool size for torch and Numba, before any heavy stage
        return int(args.func(args) or 0)
    except AttnError as error:
        print(error.render(), file=sys.stderr)
        return 2
    except UserError as error:
        print(f"attndsl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attndsl: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
