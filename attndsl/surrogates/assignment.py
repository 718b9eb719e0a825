"""Assignments: which heads are replaced, and by which program.

An `Assignment` maps (layer, head) to a compiled `ir.Program`; it checks
itself against a model's shape and against the token features a program
needs, and groups its heads by layer for the attention function.
`compile_assignment` builds one from program sources or library names,
collecting every failure before any model runs; `Assignment.uniform` is the
uniform causal baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from attndsl.language import ir
from attndsl.errors import AttnError, UserError
from attndsl.extraction.features import TokenTable
from attndsl.headnames import head_label

UNIFORM_SOURCE = "program uniform {\n    fallback uniform\n    1\n}\n"


def uniform_program() -> ir.Program:
    """The uniform causal pattern (1/(q+1) on every k ≤ q): the baseline of the paper."""
    from attndsl.language.validate import compile_program

    return compile_program(UNIFORM_SOURCE, "<uniform>")


@dataclass(frozen=True)
class Assignment:
    """Which heads are replaced and by which program: (layer, head) → program.

    Build with `Assignment.of({(layer, head): program, ...})` or
    `Assignment.from_items([(layer, head, program), ...])`.  Distinct programs
    are evaluated once per batch however many heads share them.
    """

    items: tuple[tuple[int, int, ir.Program], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[tuple[int, int], ir.Program]) -> "Assignment":
        return cls.from_items((layer, head, program) for (layer, head), program in mapping.items())

    @classmethod
    def from_items(cls, items: Iterable[tuple[int, int, ir.Program]]) -> "Assignment":
        seen: dict[tuple[int, int], ir.Program] = {}
        for layer, head, program in items:
            if not isinstance(program, ir.Program):
                raise UserError(f"head {head_label(layer, head)}: expected a compiled program, got {type(program).__name__}")
            key = (int(layer), int(head))
            if key in seen:
                raise UserError(f"head {head_label(layer, head)} is assigned twice")
            seen[key] = program
        return cls(tuple((layer, head, program) for (layer, head), program in sorted(seen.items())))

    @classmethod
    def uniform(cls, heads: Iterable[tuple[int, int]]) -> "Assignment":
        """The uniform causal baseline in the given heads."""
        program = uniform_program()
        return cls.from_items((layer, head, program) for layer, head in heads)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def heads(self) -> list[tuple[int, int]]:
        return [(layer, head) for layer, head, _ in self.items]

    def programs(self) -> list[ir.Program]:
        """Distinct programs in first-use order (their index is the pattern index)."""
        index = self._program_index()
        return list(index)

    def _program_index(self) -> dict[ir.Program, int]:
        index: dict[ir.Program, int] = {}
        for _, _, program in self.items:
            index.setdefault(program, len(index))
        return index

    def check_tables(self, tables: Sequence[TokenTable]) -> None:
        """Raise `UserError` if a program needs syntax features the tables do not carry."""
        needs = sorted({p.name for _, _, p in self.items if p.uses_syntax})
        if needs and not all(t.has_syntax for t in tables):
            raise UserError(
                f"program(s) {', '.join(needs)} use syntax features but the token features of this input "
                "have none (extract the run with --syntax; text generated on the fly has no syntax)"
            )

    def by_layer(self) -> dict[int, tuple[list[int], list[int]]]:
        """layer → (head indices, pattern indices) of that layer's replaced heads."""
        index = self._program_index()
        out: dict[int, tuple[list[int], list[int]]] = {}
        for layer, head, program in self.items:
            heads, patterns = out.setdefault(layer, ([], []))
            heads.append(head)
            patterns.append(index[program])
        return out

    def check(self, n_layers: int, n_heads: int) -> None:
        """Raise `UserError` for heads outside the model."""
        problems = [
            f"head {head_label(layer, head)} does not exist (the model has {n_layers} layers × {n_heads} heads)"
            for layer, head, _ in self.items
            if not (0 <= layer < n_layers and 0 <= head < n_heads)
        ]
        if problems:
            shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
            raise UserError("bad head assignment:\n  " + "\n  ".join(shown))


def compile_assignment(entries: Iterable[tuple[int, int, str]], library: Mapping[str, ir.Program] | None = None) -> Assignment:
    """An assignment from (layer, head, program source or library name).

    A name found in ``library`` is taken from it; anything else is compiled as
    DSL source.  Every failure (unknown name, program that does not compile)
    is collected and raised as one `UserError` before any model runs.
    """
    from attndsl.language.validate import compile_program

    items, problems = [], []
    for layer, head, text in entries:
        if library is not None and text in library:
            items.append((layer, head, library[text]))
            continue
        try:
            items.append((layer, head, compile_program(text, f"<{head_label(layer, head)}>")))
        except AttnError as error:
            problems.append(f"head {head_label(layer, head)}: program does not compile:\n{error.render()}")
    if problems:
        raise UserError("bad head assignment:\n" + "\n".join(problems))
    return Assignment.from_items(items)
