"""Printing a found program: rounded weights, terms by share, canonical ``.attn`` source.

Weights are rounded to three significant digits (with the term's scale
folded in), terms are written by decreasing mean share of the row mass, and
the source is compiled back with the validator and re-formatted, so every
result round-trips through the parser (`attndsl.synthesis.search` step 3).
"""
from __future__ import annotations

from typing import Sequence

from attndsl.language.printer import format_module
from attndsl.language.validate import compile_source
from attndsl.synthesis.search.data import Component, SearchData
from attndsl.synthesis.search.pool import gated, needs_syntax


def _round_sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}") if x else 0.0


def program_source(name: str, data: SearchData, comps: Sequence[Component], weights: Sequence[float],
                   gate_names: Sequence[str] | None = None, check: bool = True,
                   shares: Sequence[float] | None = None) -> str:
    """Canonical ``.attn`` source of a weighted list of components.

    Terms are written by decreasing ``shares`` (the mean share of a row's
    mass each term gets, `_HeadFit.mass_shares`), else by decreasing weight,
    so the first term is the program's main term.
    """
    total = float(sum(weights)) or 1.0
    rank = shares if shares is not None else weights
    order = sorted(range(len(comps)), key=lambda i: -rank[i])
    lines = []
    for i in order:
        comp = comps[i]
        spec = data.specs[comp.spec]
        if comp.gate >= 0:
            spec = gated(spec, (gate_names if gate_names is not None else data.gate_names)[comp.gate])
        weight = _round_sig(weights[i] / total * data.scales[comp.spec])
        if weight <= 0:
            continue
        lines.append(spec.text(weight))
    if not lines:
        lines = ["1 * [k == 0]"]
    body = "\n    + ".join(lines)
    uses = "uses syntax\n    " if needs_syntax(body) else ""
    source = f"program {name} {{\n    {uses}{body}\n}}\n"
    if not check:
        return source
    from attndsl.language.parser import parse

    compile_source(source, f"<{name}>")  # must validate
    return format_module(parse(source, f"<{name}>"))
