"""LLM proposes, search fits: new weights for a program's own terms.

An LLM is better at naming a head's structure (which conditions, selections
and distances matter) than at choosing numbers.  `WeightFitter.fit` keeps a
program's terms exactly as written — fallback and ``uses syntax`` too — and
refits their weights on synthesis sequences with the offline search's own
non-negative fitting (`attndsl.synthesis.search`: the normative soft IoU as objective,
coordinate ascent with multiplicative steps, a step of 0 dropping a term).

It is a thin wrapper: each term becomes a `search.TermSpec` (a term the LLM
gave a negative weight is fitted as ``(-1) * term`` with a non-negative
coefficient, so its sign is kept), `search.prepare` evaluates them once with
the kernels, and `search._HeadFit.refine` fits.  Two starts are tried — the
LLM's weights and equal row-mass shares — and the better objective wins.
The objective treats all-zero rows as the search does (mass on key 0); the
fitted program keeps its own fallback, and callers re-score it exactly.
Programs of another form than the linear one (when the language has them)
are not fitted (None).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from attndsl.extraction.features import TokenTable


@dataclass(frozen=True)
class FitSettings:
    rounds: int = 8  # coordinate-ascent rounds (each weight can move by up to 2x per round)
    digits: int = 3  # significant digits of the printed weights


class WeightFitter:
    """Fits the weights of programs for any head, on one fixed set of synthesis sequences."""

    def __init__(self, tables: Sequence[TokenTable], seq_indices: Sequence[int] | None = None,
                 settings: FitSettings = FitSettings()):
        self.tables = list(tables)
        self.seq_indices = np.arange(len(self.tables)) if seq_indices is None else np.asarray(seq_indices)
        self.settings = settings
        if not self.tables:
            raise ValueError("no synthesis sequences to fit weights on")

    def fit(self, source: str, attention: np.ndarray, name: str | None = None) -> str | None:
        """``source`` (one program) with fitted weights, as canonical source; None if it cannot be fitted.

        ``attention`` is the head's causal entries over the fitter's sequences
        (`attndsl.extraction.batch.causal_layout` order, as `AttentionSource.causal_block`
        returns one head's column).
        """
        from attndsl.language.parser import parse
        from attndsl.language.printer import format_factor, format_program
        from attndsl.synthesis.search import Component, SearchSettings, TermSpec, _HeadFit, prepare
        from attndsl.language.validate import compile_source

        (program,) = parse(source, "<fit>").programs
        if getattr(program, "form", "linear") != "linear" or not program.terms:
            return None
        specs, signs = [], []
        for term in program.terms:
            factors = " * ".join(format_factor(f) for f in term.factors)
            sign = -1.0 if term.weight < 0 else 1.0
            if sign < 0:
                factors = f"(-1) * {factors}" if factors else "(-1)"
            specs.append(TermSpec(factors, "llm"))
            signs.append(sign)
        data = prepare(self.tables, self.seq_indices, specs, gate_names=(), scales=np.ones(len(specs)))
        attention = np.asarray(attention, dtype=np.float64)
        if attention.shape != (data.n_entries,):
            raise ValueError(f"attention has {attention.shape} entries, the sequences have {data.n_entries}")
        settings = SearchSettings(refine_rounds=self.settings.rounds)
        comps = [Component(i) for i in range(len(specs))]
        starts = [[abs(t.weight) for t in program.terms]]
        row_sums = np.abs(np.add.reduceat(data.values.astype(np.float64), data.row_start, axis=1))
        equal = []
        for t in range(len(specs)):
            active = row_sums[t] > 0
            equal.append(1.0 / float(row_sums[t][active].mean()) if active.any() else 1.0)
        starts.append(equal)
        best = None
        for weights in starts:
            if not all(math.isfinite(w) and w > 0 for w in weights):
                continue
            fitter = _HeadFit(data, attention, settings)
            fitter.comps, fitter.weights = list(comps), list(weights)
            fitter._rebuild()
            fitter.refine()
            if best is None or fitter.objective > best[0] + 1e-12:
                best = (fitter.objective, list(fitter.comps), list(fitter.weights))
        if best is None:
            return None
        _, kept, weights = best
        total = sum(weights)
        if not kept or total <= 0:
            return None
        terms = []
        for comp, weight in zip(kept, weights):
            value = _round_sig(weight / total, self.settings.digits)
            if value <= 0:
                continue
            original = program.terms[comp.spec]
            terms.append(replace(original, weight=signs[comp.spec] * value))
        if not terms:
            return None
        fitted = replace(program, name=name or program.name, terms=tuple(terms))
        text = format_program(fitted) + "\n"
        compile_source(text, "<fitted>")  # must validate, like every program the search prints
        return text


def _round_sig(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}") if x else 0.0


def head_column(dense: Sequence[np.ndarray], layer: int, head: int) -> np.ndarray:
    """One head's causal entries from per-sequence [layers, heads, n, n] arrays (causal-layout order)."""
    parts = []
    for matrix in dense:
        a = np.asarray(matrix)[layer, head]
        q, k = np.tril_indices(a.shape[0])
        parts.append(a[q, k])
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)

