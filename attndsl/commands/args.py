"""Checked command-line values shared by every subcommand.

Each function here is an argparse ``type=``: it turns the text of one flag
into a value or raises `argparse.ArgumentTypeError`, which argparse reports
as ``attndsl CMD: error: argument --flag: …`` with exit code 2 — before any
work starts, and never as a traceback.  Using the same few checks everywhere
means ``--batch-size 0``, ``--max-sequences -3``, ``--fraction nan``, a
5,000-digit number or ``--library some/directory`` are refused the same way
by every command.

Ranges that depend on the model (positions, layers, heads) are checked where
the model is known: `attndsl.extraction.model_files.check_max_tokens` and the head
checks of the synthesis stage; `head_spec` only checks the syntax and keeps
numbers small enough to compare.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Callable

#: the largest integer any flag takes (fits int64 everywhere: NumPy, torch, JSON readers)
MAX_INT = 2**63 - 1
_SHOWN = 30  # characters of a bad value quoted in a message


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer flag in ``[low, high]`` (``high`` defaults to `MAX_INT`)."""
    high = MAX_INT if high is None else high
    wanted = f"an integer >= {low}" if low is not None else "an integer"
    if high != MAX_INT:
        wanted = f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        stripped = text.strip()
        # digits only (int() would also take "1_000" and spend time on 4,000-digit strings)
        if not re.fullmatch(r"[+-]?\d{1,19}", stripped):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {_shown(text)}")
        value = int(stripped)
        if (low is not None and value < low) or value > high:
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {_shown(text)}")
        return value

    parse.__name__ = "integer"
    return parse


def number(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """A finite number flag in the interval from ``low`` to ``high`` (open ends if asked)."""
    if low is not None and high is not None:
        wanted = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        wanted = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        wanted = "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= 64 else math.nan
        except ValueError:
            value = math.nan
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {_shown(text)}")
        return value

    parse.__name__ = "number"
    return parse


#: a share of something: (0, 1]
fraction = number(0.0, 1.0, low_open=True)


def fraction_list(text: str) -> tuple[float, ...]:
    """Comma-separated shares in (0, 1], e.g. ``0.1,0.25,0.5``."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("must be comma-separated numbers in (0, 1], e.g. 0.1,0.25,0.5")
    try:
        return tuple(fraction(part) for part in parts)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"each share {error}") from None


_HEAD_ITEM = re.compile(r"(\d{1,6})\.(\d{1,6}|\*)")


def head_spec(text: str) -> str:
    """``LAYER.HEAD`` or ``LAYER.*`` items separated by commas (0-based, at most 6 digits each).

    Returns the text stripped; whether the heads exist is checked against the
    run's model when it is known.
    """
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError("names no heads; write LAYER.HEAD items, e.g. 3.4,5.0 or 7.*")
    for item in items:
        if not _HEAD_ITEM.fullmatch(item):
            raise argparse.ArgumentTypeError(
                f"bad head {_shown(item)}: write LAYER.HEAD (e.g. 3.4) or LAYER.* with numbers of at most 6 digits"
            )
    return ",".join(items)


def input_file(text: str) -> str:
    """An existing regular file we can open for reading."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error.strerror or error}") from None
    return text


def output_file(text: str) -> str:
    """A file path we may write: not a directory, and not under something that is not one."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name (e.g. {path / 'report.html'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is not a directory")
            break
    return text


#: the LLM writer's numeric flags (`attndsl.synthesis.llm.add_arguments`), checked by `check_llm_arguments`
LLM_LIMITS: dict[str, Callable[[str], object]] = {
    "llm_temperature": number(0.0, 2.0),
    "llm_max_tokens": integer(1),
    "llm_concurrency": integer(1, 1024),
    "llm_timeout": number(0.0, low_open=True),
    "llm_retries": integer(0, 100),
    "llm_repair_rounds": integer(0, 100),
    "llm_programs": integer(1, 100),
    "llm_seed": integer(0),
}


def check_llm_arguments(args: argparse.Namespace) -> None:
    """Check the LLM writer's numbers by the same rules; a bad one is a `UserError` naming the flag.

    Those flags are declared by `attndsl.synthesis.llm.add_arguments` (with plain
    ``type=int``/``float``); they are checked here after parsing, so one
    definition of each rule serves every command.
    """
    from attndsl.errors import UserError

    for dest, parse in LLM_LIMITS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        try:
            parse(str(value))
        except argparse.ArgumentTypeError as error:
            raise UserError(f"argument --{dest.replace('_', '-')}: {error}") from None
