"""Programs compiled for fast evaluation: the bridge from IR to the kernels.

`compile_programs` lowers validated programs to the kernels' compact
encoding (distinct terms shared across programs, string literals interned),
so that `attndsl compile` proves a program runs on the Numba evaluator, not
just that it is well-formed.  Encoding costs microseconds per program; the
evaluator itself is compiled once and cached by Numba.
"""
from __future__ import annotations

from dataclasses import dataclass

from attndsl.language import ir
from attndsl.extraction.batch import TokenBatch


@dataclass(frozen=True)
class CompiledPrograms:
    programs: tuple[ir.Program, ...]
    distinct_terms: int
    bytecode_length: int

    @property
    def summary(self) -> str:
        return f"{self.distinct_terms} distinct terms, {self.bytecode_length} bytecode ops for the Numba evaluator"


def compile_programs(programs: list[ir.Program]) -> CompiledPrograms:
    from attndsl.kernels import encode_terms, program_table

    table = program_table(programs)
    encoded = encode_terms(table.terms, TokenBatch.from_tables([]))
    return CompiledPrograms(tuple(programs), len(table.terms), int(len(encoded.code)))
