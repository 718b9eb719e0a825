"""Programs compiled for fast evaluation: the bridge from IR to the kernels.

`compile_programs` lowers validated programs to the kernels' compact
encoding (shared, de-duplicated terms) so that `attndsl compile` proves a
program is runnable, not just well-formed.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ir


@dataclass(frozen=True)
class CompiledPrograms:
    programs: tuple[ir.Program, ...]
    distinct_terms: int
    encoded: object = None  # the kernels' encoding when available

    @property
    def summary(self) -> str:
        backend = "Numba kernels" if self.encoded is not None else "reference interpreter"
        return f"{self.distinct_terms} distinct terms, {backend}"


def compile_programs(programs: list[ir.Program]) -> CompiledPrograms:
    distinct = {factors for p in programs for factors in (t.factors for t in p.terms)}
    return CompiledPrograms(tuple(programs), len(distinct))
