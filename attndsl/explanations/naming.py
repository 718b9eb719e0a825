"""Names that say what a program does, derived from its main terms.

A search program used to be called after the head it was written for
(``L5_H5``, ``L18_H6_step2``); `program_name` calls it after what it does
(``sink_prev``, ``induction``, ``last_punct_sent_start``): one slug per term
(`term_slug`), the terms with the largest share of the row mass first (or by
weight when no shares are known), at most `MAX_SLUGS`.  Programs an LLM or a
person wrote keep their own names unless those are head names.  `name_library`
renames a whole library, unique within it (``prev_2``, ``prev_3`` …); the
head each program was written for stays in its metadata (``layer``,
``head``), so nothing is lost.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from attndsl.language import ir
from attndsl.explanations.anatomy import TermKind, describe_term

MAX_SLUGS = 3
#: names that point at a head rather than at behaviour
HEAD_NAME = re.compile(r"^(L\d+_?H\d+|head_?\d+_\d+|layer\d+_head\d+)(_.*)?$", re.IGNORECASE)
_KEYWORDS = {"program", "uses", "syntax", "fallback", "and", "or", "not", "in", "q", "k", "d"}
_SENTENCE_END = {".", "!", "?"}


def _slug_text(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def term_slug(kind: TermKind) -> str:
    """A short identifier for one analysed term."""
    sel = kind.selection
    match kind.kind:
        case "sink":
            slug = "sink"
        case "self":
            slug = "self"
        case "previous":
            slug = "prev"
        case "offset":
            slug = f"back{kind.offset}"
        case "local":
            slug = f"window{kind.window + 1}" if kind.window is not None else "recent"
            if "wordstart" in kind.tags:
                slug = "word_" + slug
            if kind.decays:
                slug += "_decay"
        case "induction":
            slug = "induction"
        case "duplicate":
            slug = "copies" if sel == "spread" else ("similar" if kind.feature == "sim" else "dup")
        case "punctuation":
            if kind.words and set(kind.words) <= _SENTENCE_END:
                slug = "sent_end"
            elif kind.words:
                slug = "delims"
            else:
                slug = "newline" if kind.feature == "newline" else "punct"
            if kind.negated:
                slug = "non_" + slug
            slug = {"nearest": "last_", "first": "first_"}.get(sel, "") + slug
        case "lexical":
            first = _slug_text(kind.words[0]) if kind.words else ""
            slug = ("words_" + first) if first else "words"
            slug = {"nearest": "last_"}.get(sel, "") + slug
        case "sentence":
            slug = "sent_start" if sel == "first" else "sentence"
        case "word":
            if kind.feature == "word_start" and "word" not in kind.tags:
                slug = "word_starts"
            else:
                slug = "word_start" if sel == "first" else "word_pieces"
        case "syntactic":
            first = _slug_text(kind.words[0]) if kind.words else ""
            slug = f"{kind.feature or 'syntax'}_{first}" if first else "syntax"
        case "uniform":
            slug = "uniform"
        case _:
            slug = "misc"
    return slug[:24].strip("_") or "misc"


def program_name(program: ir.Program, shares=None) -> str:
    """A behaviour name for ``program`` (not yet unique; see `name_library`)."""
    kinds = [describe_term(t) for t in program.terms]
    if shares is not None:
        order = [t.index for t in shares.ranked() if t.index >= 0]
        order += [i for i in range(len(kinds)) if i not in order]
    else:
        order = sorted(range(len(kinds)), key=lambda i: (-abs(program.terms[i].weight), i))
    slugs: list[str] = []
    for i in order:
        slug = term_slug(kinds[i])
        if slug not in slugs:
            slugs.append(slug)
        if len(slugs) == MAX_SLUGS:
            break
    name = "_or_".join(slugs) if any(k.query_conditions for k in kinds) and len(slugs) > 1 else "_".join(slugs)
    name = name or f"fallback_{program.fallback}"
    if len(slugs) < len({term_slug(k) for k in kinds}):
        name += "_etc"
    if not re.match(r"[A-Za-z_]", name) or name in _KEYWORDS:
        name = "p_" + name
    return name


def keeps_own_name(name: str, origin: str) -> bool:
    """LLM- and user-written programs keep their names unless the name is a head's."""
    return origin != "search" and not HEAD_NAME.match(name)


def name_library(programs: Sequence, shares_by_name: dict | None = None) -> list:
    """``LibraryProgram``s renamed after what they do, unique within the list (order kept)."""
    from attndsl.synthesis.prompts import rename_program

    shares_by_name = shares_by_name or {}
    wanted = []
    for p in programs:
        if keeps_own_name(p.name, p.origin):
            wanted.append(p.name)
        else:
            wanted.append(program_name(p.program(), shares_by_name.get(p.name)))
    used: set[str] = set(n for n, p in zip(wanted, programs) if keeps_own_name(p.name, p.origin))
    out = []
    taken: set[str] = set()
    for p, name in zip(programs, wanted):
        base, n = name, 1
        while name in taken or (name in used and not keeps_own_name(p.name, p.origin)):
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        if name != p.name:
            p = dataclasses.replace(p, name=name, source=rename_program(p.source, name))  # metadata kept
        out.append(p)
    return out


#: causal entries the shares behind the names are measured on at most: what the first 64 sequences of
#: ≤ 64 tokens hold, so runs of short sequences are untouched
NAMING_ENTRIES = 64 * 2080


def rename_library(library, synthesis_tables, sequences: int = 64, max_entries: int = NAMING_ENTRIES):
    """The naming hook of the library build: `name_library` over a `attndsl.synthesis.library.Library`,
    ordering each program's terms by their share on the first ``sequences`` synthesis sequences
    (long sequences: the first of them that hold at most ``max_entries`` causal entries, times 64 /
    longest beyond 64 tokens, at least one)."""
    from dataclasses import replace

    from attndsl.extraction.batch import TokenBatch
    from attndsl.explanations.categories import measure_shares
    from attndsl.synthesis.search.greedy import entries_budget

    tables = list(synthesis_tables)[:sequences]
    # long sequences: the budget times 64 / longest, as the search's (names only, never scores)
    max_entries = entries_budget(None, max_entries, [len(t) for t in tables])
    sizes = np.cumsum([len(t) * (len(t) + 1) // 2 for t in tables])
    batch = TokenBatch.from_tables(tables[:max(1, int(np.searchsorted(sizes, max_entries, side="right")))])
    shares = {p.name: measure_shares(p.program(), batch) for p in library.programs if not keeps_own_name(p.name, p.origin)}
    return replace(library, programs=tuple(name_library(library.programs, shares)))
