"""The one loader of ``.attn`` files: read, parse and check, once, for every caller.

`read_attn(path)` reads a program file (unreadable or not UTF-8: an
`AttnError` naming it), parses it (a syntax error: an `AttnError`) and checks
it, keeping the problems instead of raising them, so each caller decides:

- `AttnFile.compiled` — the compiled programs, or an `AttnError` with every
  problem (the library, the replace stage, the report's heatmaps);
- `AttnFile.sources` — each program's canonical source, even when some do not
  check (the report lists a library it cannot compile);
- `AttnFile.problems` — for ``attndsl compile``, which adds its own
  (an empty file, syntax features without a provider) before raising.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from attndsl.errors import AttnError


@dataclass(frozen=True)
class AttnFile:
    """A parsed and checked ``.attn`` file (parsed on demand where its IR came from the cache,
    `attndsl.pipeline.ircache`)."""

    path: Path
    text: str
    programs: tuple  # compiled `ir.Program`s of the programs that check, in file order
    problems: tuple  # `Diagnostic`s found by the checker
    cached_sources: dict | None = None  # name → canonical source, from the cache

    @cached_property
    def module(self):
        """The syntax tree (`attndsl.language.ast.Module`)."""
        from attndsl.language.parser import parse

        return parse(self.text, str(self.path))

    def compiled(self) -> list:
        """Every program compiled; an `AttnError` with all problems if any."""
        if self.problems:
            raise AttnError(list(self.problems))
        return list(self.programs)

    def by_name(self) -> dict:
        """Program name → compiled program (`compiled`)."""
        return {program.name: program for program in self.compiled()}

    def sources(self) -> dict[str, str]:
        """Program name → canonical source text, for every program of the file."""
        from attndsl.language.printer import format_program

        if self.cached_sources is not None:
            return dict(self.cached_sources)
        return {program.name: format_program(program) for program in self.module.programs}


def read_attn(path: str | Path) -> AttnFile:
    """Read, parse and check ``path`` (see the module docstring).

    Text read before is not parsed again (the last few files are kept by
    content), and a file with an up-to-date IR cache beside it
    (`attndsl.pipeline.ircache`: the synthesis stage writes one for its library) is not parsed at
    all unless its syntax tree is asked for."""
    from attndsl.language.parser import read_source

    text = read_source(str(path))
    return _parsed(str(path), text)


@lru_cache(maxsize=4)
def _parsed(path: str, text: str) -> AttnFile:
    from attndsl.language.parser import parse
    from attndsl.language.validate import check
    from attndsl.pipeline import ircache

    cached = ircache.load(path, text)
    if cached is not None:
        programs, sources = cached
        return AttnFile(Path(path), text, programs, (), sources)
    module = parse(text, path)
    programs, problems = check(module, text)
    attn = AttnFile(Path(path), text, tuple(programs), tuple(problems))
    attn.__dict__["module"] = module  # parsed already
    return attn
