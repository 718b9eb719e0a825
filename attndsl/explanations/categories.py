"""Head categories from programs: a small taxonomy, assigned from term shares.

The taxonomy (`CATEGORIES`, key → label, in display order):

============== ==============================================================
key            a head whose program mostly puts its mass on …
============== ==============================================================
sink           the first token (the attention sink, ``[k == 0]``)
self           the current token (``[k == q]``)
previous       the previous token (``[k == q - 1]``)
offset         a fixed distance back (``[k == q - 3]``)
local          recent tokens: a window or a decay with distance
induction      the token after an earlier copy of the current token
duplicate      an earlier copy of the current token (same text)
sentence       the start (or the tokens) of the current sentence
punctuation    punctuation, line breaks or a list of delimiters
word           the pieces or the start of the current word
syntactic      syntax: part of speech, dependency label, syntactic head
lexical        a list of words (not punctuation)
uniform        every key evenly (broad attention)
mixed          no single category takes most of the non-sink mass
============== ==============================================================

**How a head gets its category (deterministic).**  Each term of the head's
program (its *short* program when it has one) is evaluated alone with the
Numba kernels on synthesis sequences, and the program's attention on every
entry is split between the terms in proportion to their positive
contributions (rows that fall back go to the fallback's category).  A term's
*share* is the mean over rows (query 0 excluded: it can only look at itself)
of the mass attributed to it; shares of terms of the same kind
(`attndsl.explanations.anatomy`) add up to category shares, which sum to 1.  Then

- the *parked* mass is the sink terms' share plus the fallback's (rows the
  program's rule does not cover);
- parked ≥ `SINK_ONLY` (0.85) → the largest category overall (``sink`` for
  a sink head; the fallback's category for a program that almost always falls
  back);
- otherwise the largest non-sink category of the terms, if it holds at least
  `MAIN_SHARE` (0.5) of the mass that is not parked → that category; else
  ``mixed``.

One exception comes first: the copy rules (``induction``, ``duplicate``) can
only fire on rows whose token occurred before (a copy term positive on an
earlier key, k < q), which are rare in short text, so they are judged on the
rows where they fire, as TransformerLens' duplicate and induction scores
average over repeated tokens only.  On those rows, if the program's mass on
the keys the copy terms select is at least `COPY_FLOOR` (0.2) and at least
`COPY_SHARE` (0.5) of the mass not parked there, the head is a copy head (its
``share`` is then that on-copies share; ``purity`` stays its share of all
mass).

The sink and the fallback are treated apart because most heads park spare
attention on the first token, and a rule (an induction lookup, a copy) only
fires on some rows: a head that puts 60 % on the sink and 40 % on the previous
token is a previous-token head.  *Purity* is the share of all mass the main
category explains (for ``mixed``: the largest category's share).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from attndsl.language import ir
from attndsl.explanations.anatomy import TermKind, describe_term

CATEGORIES: dict[str, str] = {
    "sink": "first-token sink",
    "self": "self (current token)",
    "previous": "previous token",
    "offset": "fixed offset",
    "local": "local window / decay",
    "induction": "induction",
    "duplicate": "duplicate / copy",
    "sentence": "sentence start",
    "punctuation": "punctuation / delimiter",
    "word": "word / subword",
    "syntactic": "syntactic",
    "lexical": "lexical (word list)",
    "uniform": "broad / uniform",
    "mixed": "mixed",
}
#: sink share from which a head is a first-token sink
SINK_ONLY = 0.85
#: share of the non-sink mass the main category needs (else "mixed")
MAIN_SHARE = 0.5
#: category of the mass of rows that fall back
FALLBACK_CATEGORY = {"first": "sink", "self": "self", "previous": "previous", "uniform": "uniform"}
#: categories of rules that can only fire where the text repeats a token: judged on the rows where they fire
COPY_CATEGORIES = ("induction", "duplicate")
#: on the rows where a copy rule fires: the share of the mass not parked (sink, fallback) that must be on the
#: copies, and the least share of all mass on them, for the head to be a copy head
COPY_SHARE = 0.5
COPY_FLOOR = 0.2
#: synthesis sequences the shares are measured on (a seeded prefix of the synthesis split)
SHARE_SEQUENCES = 64


def term_category(kind: TermKind) -> str:
    """The taxonomy key of one analysed term (``other`` counts as ``mixed``)."""
    return "mixed" if kind.kind == "other" else kind.kind


@dataclass(frozen=True)
class TermShare:
    """One term of a program and the share of the row mass it carries."""

    index: int  # position in the program (-1: the fallback)
    kind: TermKind | None  # None for the fallback
    category: str
    share: float


@dataclass(frozen=True)
class ProgramShares:
    """Every term's share of a program's row mass on some sequences."""

    program: str
    terms: tuple[TermShare, ...]  # program order; the fallback last (index -1) when it takes mass
    n_rows: int
    #: copy category → (mass on the earlier keys its terms select, mass parked on the sink or the fallback —
    #: both means over the rows where one of its terms fires on an earlier key —, share of rows it fires on)
    active: dict = field(default_factory=dict)

    def by_category(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.terms:
            out[t.category] = out.get(t.category, 0.0) + t.share
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], list(CATEGORIES).index(kv[0]))))

    def ranked(self) -> list[TermShare]:
        """Terms by share, largest first (ties: program order)."""
        return sorted(self.terms, key=lambda t: (-t.share, t.index if t.index >= 0 else 1 << 30))


@dataclass(frozen=True)
class Category:
    """A head's category: the key, the share it rests on, and the purity."""

    key: str
    share: float  # share of all mass the category's terms carry (mixed: the largest category's)
    purity: float
    sink_share: float
    shares: dict  # category → share (sums to 1)

    @property
    def label(self) -> str:
        return CATEGORIES[self.key]


def measure_shares(program: ir.Program, batch) -> ProgramShares:
    """Each term's share of ``program``'s row mass on ``batch`` (see module docstring)."""
    from attndsl.kernels import combine, evaluate_terms

    n_terms = len(program.terms)
    kinds = [describe_term(t) for t in program.terms]
    seq, q, k = batch.entry_index()
    rows = (batch.offsets[seq] + q).astype(np.int64)
    keep_row = np.ones(batch.n_tokens, dtype=bool)
    keep_row[batch.offsets[:-1][np.asarray(batch.lengths) > 0]] = False  # query 0 of every sequence
    n_rows = int(keep_row.sum())
    if n_terms == 0 or batch.n_entries == 0 or n_rows == 0:
        fallback = FALLBACK_CATEGORY[program.fallback]
        return ProgramShares(program.name, (TermShare(-1, None, fallback, 1.0),), n_rows)
    values = evaluate_terms(program.terms, batch).values  # weight included, [T, entries]
    from attndsl.kernels import TermValues

    attention = combine(np.ones(n_terms), TermValues(tuple(program.terms), values, batch), program.fallback)
    total = np.zeros(batch.n_entries)
    for v in values:  # in term order, as the evaluators sum
        total = total + v
    clipped = np.maximum(np.where(np.isfinite(total), total, 0.0), 0.0)
    row_sum = np.bincount(rows, weights=clipped, minlength=batch.n_tokens)
    fell_back = row_sum[rows] <= 0
    positive = np.maximum(values, 0.0)
    pos_sum = positive.sum(axis=0)
    safe = np.where(pos_sum > 0, pos_sum, 1.0)
    entry_keep = keep_row[rows]
    shares = []
    row_mass = []  # per term: attributed mass of every row
    for i in range(n_terms):
        part = np.where(fell_back | (pos_sum <= 0), 0.0, attention * positive[i] / safe)
        shares.append(float(part[entry_keep].sum()) / n_rows)
        row_mass.append(np.bincount(rows, weights=np.where(entry_keep, part, 0.0), minlength=batch.n_tokens))
    fallback_rows = np.bincount(rows, weights=np.where(fell_back & entry_keep, attention, 0.0), minlength=batch.n_tokens)
    sink_rows = fallback_rows + sum((row_mass[i] for i in range(n_terms) if term_category(kinds[i]) == "sink"),
                                    np.zeros(batch.n_tokens))
    active = {}
    for category in COPY_CATEGORIES:
        members = [i for i in range(n_terms) if term_category(kinds[i]) == category]
        if not members:
            continue
        selected = np.zeros(batch.n_entries, dtype=bool)
        for i in members:
            selected |= (positive[i] > 0) & (k < q)  # a copy of the query itself is no copy
        fires = (np.bincount(rows, weights=selected.astype(np.float64), minlength=batch.n_tokens) > 0) & keep_row
        if fires.any():
            on_copies = np.bincount(rows, weights=np.where(selected, attention, 0.0), minlength=batch.n_tokens)
            active[category] = (float(on_copies[fires].mean()), float(sink_rows[fires].mean()),
                                float(fires.sum()) / n_rows)
    fallback_share = float(np.where(fell_back, attention, 0.0)[entry_keep].sum()) / n_rows
    terms = [TermShare(i, kinds[i], term_category(kinds[i]), shares[i]) for i in range(n_terms)]
    if fallback_share > 0:
        terms.append(TermShare(-1, None, FALLBACK_CATEGORY[program.fallback], fallback_share))
    return ProgramShares(program.name, tuple(terms), n_rows, active)


def categorise(shares: ProgramShares) -> Category:
    """The head category from a program's term shares (rule in the module docstring)."""
    order = list(CATEGORIES)
    by = shares.by_category()
    total = sum(by.values()) or 1.0
    by = {k: v / total for k, v in by.items()}
    terms_by: dict[str, float] = {}
    fallback = 0.0
    for t in shares.terms:
        if t.index < 0:
            fallback += t.share / total
        else:
            terms_by[t.category] = terms_by.get(t.category, 0.0) + t.share / total
    sink = terms_by.get("sink", 0.0)
    parked = sink + fallback
    copies = [(share, key) for key, (share, parked_there, _) in shares.active.items()
              if share >= COPY_FLOOR and share >= COPY_SHARE * (1.0 - parked_there)]
    if copies:  # a copy rule that dominates the rows where it can fire
        share, key = max(copies, key=lambda sk: (sk[0], -order.index(sk[1])))
        return Category(key, share, by.get(key, 0.0), by.get("sink", 0.0), by)
    if parked >= SINK_ONLY:
        key, value = min(by.items(), key=lambda kv: (-kv[1], order.index(kv[0])))
        return Category(key, value, value, by.get("sink", 0.0), by)
    rest = {k: v for k, v in terms_by.items() if k != "sink"}
    main, value = min(rest.items(), key=lambda kv: (-kv[1], order.index(kv[0]))) if rest else ("mixed", 0.0)
    if main != "mixed" and value >= MAIN_SHARE * (1.0 - parked):
        return Category(main, value, value, by.get("sink", 0.0), by)
    top = max(by.values()) if by else 0.0
    return Category("mixed", top, top, by.get("sink", 0.0), by)


def share_batch(store, count: int = SHARE_SEQUENCES):
    """The synthesis sequences shares are measured on (the first ``count`` of the split)."""
    from attndsl.extraction.batch import TokenBatch

    synth = store.synthesis_indices or list(range(store.n_sequences))
    return TokenBatch.from_tables(store.tables(synth[:count]))


def categorise_programs(programs: Sequence[ir.Program], batch) -> dict[str, tuple[ProgramShares, Category]]:
    """Shares and category of every program, by name."""
    out = {}
    for program in programs:
        shares = measure_shares(program, batch)
        out[program.name] = (shares, categorise(shares))
    return out
