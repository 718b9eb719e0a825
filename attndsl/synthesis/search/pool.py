"""The term pool of the enumerative search: candidate terms as DSL source.

`term_pool` builds a few hundred terms from the DSL's features and selections
(see `attndsl.synthesis.search` step 1); `GATES` are the shared query and key
conditions tried as ``[g] * term`` on the terms a program already has.
When every sequence carries spaCy syntax (`TokenTable.has_syntax`) the pool
and the gates gain syntax terms (`SYNTAX_KEY_CONDITIONS`, `SYNTAX_RELATIONS`,
`SYNTAX_GATES`): part of speech and dependency label of the key, k as the
query's syntactic head or dependent, siblings, the subject and object of the
query's verb.  Terms stay source text until `compile_terms` compiles them
with the validator; `needs_syntax` says which need ``uses syntax``.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from attndsl.language import ir
from attndsl.extraction.features import TokenTable
from attndsl.language.validate import compile_source


@dataclass(frozen=True)
class TermSpec:
    """One candidate term: its factors as DSL source (``""`` is the constant 1)."""

    factors: str
    family: str

    def text(self, weight: float = 1.0) -> str:
        from attndsl.language.printer import format_number

        w = format_number(weight)
        return w if not self.factors else f"{w} * {self.factors}"


#: conditions on the key used as raw indicators, nearest/first selections and decays
KEY_CONDITIONS = (
    "punct(k)",
    'tok(k) in {".", "!", "?"}',
    'tok(k) == ","',
    'tok(k) == "\\""',
    "newline(k)",
    "cap(k)",
    "word_start(k)",
    "not word_start(k)",
    "alpha(k)",
    "punct(k - 1)",
    'tok(k - 1) in {".", "!", "?"}',
    "punct(k + 1)",
    "sent_pos(k) == 0",
    "cap(k) and not sent_pos(k) == 0",
    "len(k) >= 5",
)

#: gates tried on the terms a program already has: ``[g] * term`` (query side and key side)
GATES = (
    "punct(q)",
    "not punct(q)",
    "word_start(q)",
    "not word_start(q)",
    "cap(q)",
    "alpha(q)",
    'tok(q) in {".", "!", "?"}',
    'tok(q) == ","',
    "sent_pos(q) == 0",
    "q <= 3",
    "q > 3",
    "q <= 8",
    "len(q) >= 5",
    "punct(q - 1)",
    "newline(q)",
    "punct(k)",
    'tok(k) in {".", "!", "?"}',
    'tok(k) == ","',
    "alpha(k)",
    "punct(k - 1)",
    "sent_pos(k) == 0",
    "len(k) >= 5",
    "not punct(k)",
    "word_start(k)",
    "not word_start(k)",
    "cap(k)",
    "same_sent(q, k)",
    "not same_sent(q, k)",
)


#: part-of-speech and dependency conditions on the key (spaCy's universal POS and English labels)
SYNTAX_KEY_CONDITIONS = tuple(
    [f'upos(k) == "{tag}"' for tag in ("NOUN", "VERB", "PRON", "DET", "ADP", "ADJ", "AUX", "PROPN", "ADV", "CCONJ")]
    + [f'dep(k) == "{label}"' for label in ("nsubj", "dobj", "ROOT", "pobj", "prep", "amod", "poss", "conj")]
)

#: relations between q and k in the dependency tree (``head(p)`` is the position of p's head; -1 for none)
SYNTAX_RELATIONS = (
    "[k == head(q)]",  # k is q's syntactic head
    "[head(k) == q] * [k < q]",  # k depends on q
    "[head(k) == head(q)] * [k < q]",  # k is a sibling of q
    "[k == head(q) or head(k) == q]",  # q and k are linked either way
    '[dep(k) == "nsubj" and head(k) == head(q)]',  # the subject of the verb q attaches to
    '[dep(k) == "nsubj" and head(k) == q]',  # the subject of q (a verb)
    '[dep(k) == "dobj" and head(k) == head(q)]',  # the object of the verb q attaches to
    '[dep(k) == "dobj" and head(k) == q]',  # the object of q
    '[dep(k) == "det" and head(k) == q]',  # q's determiner
    'nearest(upos(k) == "VERB" and k < q)',
    'nearest(upos(k) == "NOUN" and k < q)',
)

#: query-side syntax gates
SYNTAX_GATES = tuple(f'upos(q) == "{tag}"' for tag in ("NOUN", "VERB", "DET", "ADP", "PRON", "ADJ")) + (
    'dep(q) == "ROOT"',
)

_SYNTAX_USE = re.compile(r"\b(upos|dep|head)\(")


def needs_syntax(text: str) -> bool:
    """Whether DSL source ``text`` reads a syntax feature (the program needs ``uses syntax``)."""
    return bool(_SYNTAX_USE.search(text))


def gate_conditions(tables: Sequence[TokenTable] = ()) -> tuple[str, ...]:
    """The shared gates for these sequences: `GATES`, and `SYNTAX_GATES` when all carry syntax."""
    return GATES + (SYNTAX_GATES if _with_syntax(tables) else ())


def _with_syntax(tables: Sequence[TokenTable]) -> bool:
    return bool(tables) and all(t.has_syntax for t in tables)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def frequent_words(tables: Iterable[TokenTable], limit: int = 16, min_count: int = 20) -> list[str]:
    """The most frequent lower-cased alphabetic word-start tokens (ties: alphabetical)."""
    counts: Counter[str] = Counter()
    for table in tables:
        for low, start, alpha in zip(table.lower, table.word_start, table.alpha):
            if start and alpha and low.strip():
                counts[low] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, c in ranked[:limit] if c >= min_count]


def term_pool(tables: Sequence[TokenTable] = (), n_words: int = 16) -> list[TermSpec]:
    """Candidate terms (see the module docstring); ``tables`` supply frequent words, and syntax
    terms join when every table carries syntax."""
    specs: list[TermSpec] = []
    seen: set[str] = set()

    def add(factors: str, family: str) -> None:
        if factors not in seen:
            seen.add(factors)
            specs.append(TermSpec(factors, family))

    # positions
    add("[k == 0]", "sink")
    # a sink whose share grows or shrinks along the sequence
    add("[k == 0] * log(q + 2)", "sink")
    add("[k == 0] * pow(q + 1, 0.5)", "sink")
    add("[k == 0] * q", "sink")
    add("[k == 0] * pow(q + 1, -0.5)", "sink")
    add("[k == q]", "self")
    for j in range(1, 9):
        add(f"[k == q - {j}]", "offset")
    add("[k == 1]", "position")
    add("[k == 2]", "position")
    add("[k > 0] * [k <= 3]", "position")
    for p in (0.5, 1, 2):
        add(f"[k > 0] * pow(k, -{p})", "position")
    add("", "uniform")
    add("[k > 0]", "uniform")
    for w in (2, 3, 4, 6, 8, 12, 16, 24, 32):
        add(f"[k > 0] * [d <= {w}]", "window")
    for a in (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2.5):
        add(f"[k > 0] * exp(-{a} * d)", "decay")
    for p in (0.5, 1, 1.5, 2, 3):
        add(f"[k > 0] * pow(d + 1, -{p})", "decay")
    for a in (0.1, 0.3):
        add(f"[k > 0] * [d >= 2] * exp(-{a} * d)", "decay")

    # key conditions
    conditions = list(KEY_CONDITIONS)
    words = frequent_words(tables, n_words) if tables else []
    conditions += [f"lower(k) == {_quote(w)}" for w in words]
    for c in conditions:
        family = "word" if c.startswith("lower(k)") else "key"
        add(f"[{c}]", family)
        add(f"[{c}] * [k > 0] * pow(d + 1, -1)", family)
        add(f"nearest({c} and k < q)", family)
        if family == "key":
            add(f"nearest({c})", family)
            add(f"first({c} and k > 0)", family)
            add(f"[{c}] * [same_sent(q, k)]", family)

    if _with_syntax(tables):
        for c in SYNTAX_KEY_CONDITIONS:
            add(f"[{c}]", "syntax")
            add(f"[{c}] * [k > 0] * pow(d + 1, -1)", "syntax")
            add(f"nearest({c} and k < q)", "syntax")
            add(f"[{c}] * [same_sent(q, k)]", "syntax")
        for relation in SYNTAX_RELATIONS:
            add(relation, "syntax")

    # copies and induction
    for name in ("same_tok", "same_lower"):
        add(f"nearest({name}(q, k) and k < q)", "copy")
        add(f"spread({name}(q, k) and k < q)", "copy")
        add(f"first({name}(q, k))", "copy")
    add("nearest(tok(k - 1) == tok(q) and k < q)", "induction")
    add("spread(tok(k - 1) == tok(q) and k < q)", "induction")
    add("first(tok(k - 1) == tok(q) and k < q)", "induction")
    add("nearest(same_tok(k, q - 1) and k < q - 1)", "copy")
    add("nearest(tok(k + 1) == tok(q) and k < q - 1)", "copy")
    add("sim(q, k) * [k < q]", "copy")
    add("sim(q, k) * [k > 0] * [k < q]", "copy")

    # words and sentences
    add("first(same_word(q, k))", "word")
    add("spread(same_word(q, k))", "word")
    add("[same_word(q, k)] * [k < q]", "word")
    add("nearest(word_start(k) and not same_word(q, k))", "word")
    add("nearest(word_start(k) and word(k) == word(q) - 2)", "word")
    add("first(same_sent(q, k))", "sentence")
    add("spread(same_sent(q, k))", "sentence")
    add("[same_sent(q, k)] * [k > 0]", "sentence")
    add("[same_sent(q, k)] * [k > 0] * pow(d + 1, -1)", "sentence")
    add("[not same_sent(q, k)] * [k > 0]", "sentence")
    add("first(sent(k) == sent(q) - 1)", "sentence")
    add("nearest(sent(k) == sent(q) - 1)", "sentence")
    add("[sent(k) == sent(q) - 1]", "sentence")
    add("[k > 0] * [sent_pos(k) <= 1] * [same_sent(q, k)]", "sentence")
    return specs


def gated(spec: TermSpec, gate: str) -> TermSpec:
    """``[gate] * term``."""
    factors = f"[{gate}]" if not spec.factors else f"[{gate}] * {spec.factors}"
    return TermSpec(factors, spec.family + "+gate")


def compile_terms(specs: Sequence[TermSpec]) -> list[ir.Term]:
    """The IR term (weight 1) of each spec, compiled by the validator."""
    if not specs:
        return []
    source = "\n".join(f"program t{i} {{ {'uses syntax ' if needs_syntax(s.factors) else ''}{s.text()} }}"
                       for i, s in enumerate(specs))
    return [p.terms[0] for p in compile_source(source, "<term pool>")]
