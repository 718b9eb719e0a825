"""Errors as data: every stage reports problems as `Diagnostic` records.

A diagnostic renders as ``file:line:col: message``, the offending source line
and a caret under the column, then what was expected.  The same text is what
the LLM repair loop sends back to the model, so it must stand on its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Diagnostic:
    path: str
    line: int
    column: int
    message: str
    expected: str = ""
    source_line: str = ""

    def render(self) -> str:
        out = [f"{self.path}:{self.line}:{self.column}: {self.message}"]
        if self.source_line:
            shown = self.source_line.rstrip("\n").replace("\t", " ")
            out.append(f"    {shown}")
            out.append("    " + " " * max(self.column - 1, 0) + "^")
        if self.expected:
            out.append(f"  expected: {self.expected}")
        return "\n".join(out)

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "expected": self.expected,
        }


@dataclass
class AttnError(Exception):
    """The project's one error type for bad programs: a list of diagnostics."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def source_line(source: str, line: int) -> str:
    """Line ``line`` (1-based) of ``source``; LF, CRLF and CR end lines, as the
    parser counts them.  Characters that cannot be printed as UTF-8 (lone
    surrogates) are shown as escapes, so a diagnostic always renders."""
    lines = _LINE_BREAK.split(source)
    if not 1 <= line <= len(lines):
        return ""
    return lines[line - 1].encode("utf-8", "backslashreplace").decode("utf-8")


class UserError(Exception):
    """A bad input outside the DSL (missing file, corrupt run, bad flag): shown
    to the user as one clear message with a non-zero exit, never a traceback."""
