"""The standard library of attention programs shipped with attndsl.

Hand-written `.attn` files for the head types every model has (sink,
previous token, induction, punctuation, sentence and word structure, and
mixtures).  They seed synthesis, serve as examples in LLM prompts, and are
the programs the kernels benchmark runs.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from attndsl.language import ir


def paths() -> list[Path]:
    """The standard library's `.attn` files, sorted by name."""
    root = resources.files(__name__)
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".attn"))


def sources() -> dict[str, str]:
    """File name → source text."""
    return {p.name: p.read_text(encoding="utf-8") for p in paths()}


def programs() -> list[ir.Program]:
    """Every standard library program, compiled (names are unique across files)."""
    from attndsl.pipeline.attnfile import read_attn

    out: list[ir.Program] = []
    for path in paths():
        out.extend(read_attn(path).compiled())
    return out
