"""Offline enumerative program search: the program writer that needs no network.

A head's program is grown by greedy forward selection over a pool of
candidate terms, with non-negative weights fitted to maximise the soft IoU on
synthesis sequences (the normative metric, not a surrogate of it):

1. **Term pool** (`term_pool`): a few hundred terms built from the DSL's
   features and selections — the attention sink ``[k == 0]``, the current
   token, fixed offsets ``[k == q - j]``, windows and decays over the distance
   ``d``, and for many key conditions (punctuation, sentence ends, commas,
   capitals, word starts, the sequence's most frequent words …) the raw
   condition, its nearest / first match and a distance-decayed version; copy
   and induction selections over ``same_tok`` / ``tok(k - 1) == tok(q)``;
   word and sentence structure (start of the current word / sentence, the
   previous word, earlier sentences).  Every term is evaluated **once** over
   the synthesis sequences with the Numba kernels (`attndsl.kernels`), and
   terms with identical values are merged.
2. **Greedy selection** (per head): start from the sink ``[k == 0]`` (the
   empty program already puts every row on key 0, so the sink could never
   show a gain of its own), then repeatedly screen every pool term — and
   every *gated* variant ``[g] * term`` of the terms already chosen, for a
   few query and key conditions g and for token sets made for this head
   (`head_gates`: query tokens after which it visits the sink / itself / the
   previous token more than usual, key tokens it prefers) — at several
   mixing fractions, in one parallel Numba pass that only touches the rows
   the term is active in, and add the best, until the gain is below
   ``min_gain`` or the program has ``max_terms`` terms.  After a full screen
   only the ``shortlist`` best pool terms are re-screened for the next steps
   (lazy greedy), with a full screen every ``full_screen_every`` steps.
   After each addition the weights are refined by coordinate ascent
   (multiplicative steps; dropping a term is one of them).  Screening runs
   on a seeded subsample of the synthesis sequences; the final weights are
   refined on all of them.
3. **Printing**: weights are rounded to three significant digits, terms are
   written by decreasing mean share of the row mass they get on the
   synthesis sequences (the first is the program's main term), and the program is written as canonical ``.attn`` source, compiled back with the
   validator (so every result round-trips through the parser), and its IoU
   is whatever that compiled program scores.

4. **Softmax** (``softmax_terms > 0``, ``attndsl synthesize --softmax-terms N``):
   the same evaluated pool is also fitted as a ``combine softmax`` program
   (`attndsl.synthesis.softmax_fit`: greedy selection by the cross-entropy gradient,
   convex L-BFGS fits, soft-IoU refinement, the shortest near-tie wins); it
   is a further candidate, and the pooled library picks per head, by
   synthesis IoU, between it and the linear programs.

5. **Short variant** (the library's short tier, `attndsl.synthesis.library.is_short`):
   the greedy path's state while it had at most three terms, its head token
   sets cut to their eight most useful words (by the lift they were chosen
   by), with weights refined again on the synthesis sequences — a candidate
   for people to read, beside the full program.

Terms are scaled so that their mean row sum is 1 where they are active, so a
weight reads roughly as the share of a row's mass the term gets; the printed
weight includes that scale.  Everything is deterministic for a seed (ties go
to the earlier term; kernels reduce in a fixed order).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
from numba import njit, prange

from attndsl.language import ir
from attndsl.extraction.batch import TokenBatch
from attndsl.extraction.features import TokenTable
from attndsl.synthesis.library import SHORT_MAX_ENTRIES, SHORT_MAX_TERMS
from attndsl.language.printer import format_module
from attndsl.language.validate import compile_source

# ------------------------------------------------------------------ term pool


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
    """Candidate terms (see the module docstring); ``tables`` supply frequent words."""
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
    source = "\n".join(f"program t{i} {{ {s.text()} }}" for i, s in enumerate(specs))
    return [p.terms[0] for p in compile_source(source, "<term pool>")]


# ------------------------------------------------------------------ the objective (Numba)

_JIT = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")


@njit(**_JIT)
def _row_min(A, score, lo, m):
    """Σ_k min(A, normalised score) over one row (fallback: all mass on key 0)."""
    z = 0.0
    for k in range(m):
        v = score[lo + k]
        if v > 0.0:
            z += v
    if z <= 0.0:
        return A[lo]  # min(A[q, 0], 1)
    inv = 1.0 / z
    total = 0.0
    for k in range(m):
        v = score[lo + k]
        if v > 0.0:
            w = v * inv
            a = A[lo + k]
            total += a if a < w else w
    return total


@njit(parallel=True, **_JIT)
def _base(A, score, row_start, row_len, row_seq, n_seq, out_rows, out_seq):
    """Σmin per row and per sequence for the program ``score``."""
    R = len(row_start)
    for r in prange(R):
        out_rows[r] = _row_min(A, score, row_start[r], row_len[r])
    for s in range(n_seq):
        out_seq[s] = 0.0
    for r in range(R):
        out_seq[row_seq[r]] += out_rows[r]


@njit(parallel=True, **_JIT)
def _screen(A, score, V, cand_term, cand_gate, gates, cand_ptr, cand_rows, cs,
            row_start, row_len, row_seq, base_rows, base_seq, two_n, out):
    """Mean IoU over sequences of ``score + cs[t, c] * value_t`` for every candidate t and step c.

    ``value_t = V[cand_term[t]] * gates[cand_gate[t]]`` (no gate when -1);
    only the rows ``cand_rows[cand_ptr[t]:cand_ptr[t+1]]`` (where the term
    can be non-zero) are recomputed; scores below 0 are clipped like the
    language does.
    """
    T, C = cs.shape
    n_seq = len(base_seq)
    for t in prange(T):
        delta = np.zeros((n_seq, C))
        z = np.empty(C)
        mins = np.empty(C)
        vt = cand_term[t]
        g = cand_gate[t]
        for i in range(cand_ptr[t], cand_ptr[t + 1]):
            r = cand_rows[i]
            lo = row_start[r]
            m = row_len[r]
            for c in range(C):
                z[c] = 0.0
                mins[c] = 0.0
            for k in range(m):
                v = V[vt, lo + k]
                if g >= 0 and gates[g, lo + k] == 0:
                    v = 0.0
                s = score[lo + k]
                for c in range(C):
                    x = s + cs[t, c] * v
                    if x > 0.0:
                        z[c] += x
            for k in range(m):
                v = V[vt, lo + k]
                if g >= 0 and gates[g, lo + k] == 0:
                    v = 0.0
                s = score[lo + k]
                a = A[lo + k]
                for c in range(C):
                    x = s + cs[t, c] * v
                    if x > 0.0 and z[c] > 0.0:
                        w = x / z[c]
                        mins[c] += a if a < w else w
            seq = row_seq[r]
            for c in range(C):
                mc = mins[c] if z[c] > 0.0 else A[lo]
                delta[seq, c] += mc - base_rows[r]
        for c in range(C):
            total = 0.0
            for s in range(n_seq):
                mm = base_seq[s] + delta[s, c]
                total += mm / (two_n[s] - mm)
            out[t, c] = total / n_seq


@njit(parallel=True, **_JIT)
def _active_rows(V, row_start, row_len, counts, mark):
    """mark[t, r] = term t is non-zero somewhere in row r; counts[t] = rows marked."""
    T = V.shape[0]
    R = len(row_start)
    for t in prange(T):
        c = 0
        for r in range(R):
            lo = row_start[r]
            hit = 0
            for k in range(row_len[r]):
                if V[t, lo + k] != 0.0:
                    hit = 1
                    break
            mark[t, r] = hit
            c += hit
        counts[t] = c


# ------------------------------------------------------------------ batch data


@dataclass(eq=False)
class SearchData:
    """Term values, gates and row layout of one set of sequences (subsample or full)."""

    batch: TokenBatch
    seq_indices: np.ndarray  # source sequence of each batch sequence
    specs: list[TermSpec]  # pool terms kept (distinct, non-zero)
    terms: list[ir.Term]
    values: np.ndarray  # float32 [T, entries], scaled
    scales: np.ndarray  # float64 [T]: value = scale * term
    rows_ptr: np.ndarray  # CSR of the rows each term is active in
    rows: np.ndarray
    gates: np.ndarray  # uint8 [G, entries]
    gate_names: tuple[str, ...]
    row_start: np.ndarray
    row_len: np.ndarray
    row_seq: np.ndarray
    two_n: np.ndarray

    @property
    def n_entries(self) -> int:
        return self.batch.n_entries

    @property
    def spec_index(self) -> dict[str, int]:
        cached = self.__dict__.get("_spec_index")
        if cached is None:
            cached = self.__dict__["_spec_index"] = {spec.factors: i for i, spec in enumerate(self.specs)}
        return cached

    def entry_tokens(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(q, k, batch token index of q, batch token index of k) of every causal entry (cached)."""
        cached = self.__dict__.get("_entry_tokens")
        if cached is None:
            seq, q, k = self.batch.entry_index()
            base = self.batch.offsets[seq]
            cached = self.__dict__["_entry_tokens"] = (q, k, base + q, base + k)
        return cached


@dataclass(frozen=True)
class HeadGate:
    """A gate made for one head from its own attention: a set of query or key tokens.

    ``side`` is ``"q"`` or ``"k"``; the condition is ``lower(side) in {words}``;
    ``pairs`` are the pool terms (factor source) it is always tried on;
    ``ranked`` holds the words most useful first (`truncated` keeps the best).
    """

    side: str
    words: tuple[str, ...]
    pairs: tuple[str, ...]
    ranked: tuple[str, ...] = ()

    def truncated(self, size: int) -> "HeadGate":
        """The gate with only its ``size`` most useful words."""
        if len(self.words) <= size:
            return self
        best = (self.ranked or self.words)[:size]
        return HeadGate(self.side, tuple(sorted(best)), self.pairs, tuple(best))

    @property
    def text(self) -> str:
        return f"lower({self.side}) in {{{', '.join(_quote(w) for w in self.words)}}}"

    def mask(self, data: SearchData) -> np.ndarray:
        """uint8 [entries]: the condition on every causal entry (ids bound to the data's batch)."""
        ids = [data.batch.vocabulary[w] for w in self.words if w in data.batch.vocabulary]
        _, _, tq, tk = data.entry_tokens()
        lower = data.batch.text_ids[1]
        tokens = tq if self.side == "q" else tk
        return np.isin(lower[tokens], np.asarray(ids, dtype=np.int64)).astype(np.uint8)


#: pool terms the head's query-token sets are tried on, by the mass they explain
_QUERY_PAIRS = {"sink": ("[k == 0]",), "self": ("[k == q]",), "previous": ("[k == q - 1]",)}
_KEY_PAIRS = ("[k > 0]", "[k > 0] * pow(d + 1, -1)", "[same_sent(q, k)] * [k > 0]", "[k > 0] * exp(-0.35 * d)")


def head_gates(data: SearchData, attention: np.ndarray, max_words: int = 24, min_count: int = 4) -> list[HeadGate]:
    """Token sets that this head treats differently (from the screening data only).

    For the sink, the current and the previous token: the query tokens after
    which the head puts clearly more mass there than on average (smoothed
    means, at least ``min_count`` rows).  For keys: the tokens whose share of
    the head's non-sink mass is at least twice their share of the keys.
    """
    A = np.asarray(attention, dtype=np.float64)
    q, k, tq, tk = data.entry_tokens()
    lower = data.batch.text_ids[1]
    id_text = {i: t for t, i in data.batch.vocabulary.items()}
    n_ids = len(data.batch.vocabulary)
    out = []
    rows = q >= 1
    for kind, where in (("sink", rows & (k == 0)), ("self", rows & (k == q)), ("previous", rows & (k == q - 1))):
        ids = lower[tq[where]]
        keep = ids >= 0
        ids, mass = ids[keep], A[where][keep]
        if not len(ids):
            continue
        count = np.bincount(ids, minlength=n_ids).astype(np.float64)
        total = np.bincount(ids, weights=mass, minlength=n_ids)
        overall = float(mass.mean())
        smoothed = (total + min_count * overall) / (count + min_count)
        lift = smoothed - overall
        good = np.flatnonzero((count >= min_count) & (lift > max(0.1, 0.3 * overall)))
        if len(good):
            good = good[np.argsort(-lift[good] * np.sqrt(count[good]), kind="stable")][:max_words]
            ranked = tuple(id_text[i] for i in good)
            out.append(HeadGate("q", tuple(sorted(ranked)), _QUERY_PAIRS[kind], ranked))
    where = k >= 1
    ids = lower[tk[where]]
    keep = ids >= 0
    ids, mass = ids[keep], A[where][keep]
    if len(ids) and mass.sum() > 0:
        count = np.bincount(ids, minlength=n_ids).astype(np.float64)
        share = np.bincount(ids, weights=mass, minlength=n_ids) / mass.sum()
        base = count / count.sum()
        lift = np.where(count > 0, share / np.maximum(base, 1e-12), 0.0)
        good = np.flatnonzero((count >= min_count * 4) & (lift >= 2.0))
        if len(good):
            good = good[np.argsort(-share[good], kind="stable")][:max_words]
            ranked = tuple(id_text[i] for i in good)
            out.append(HeadGate("k", tuple(sorted(ranked)), _KEY_PAIRS, ranked))
    return out


def _row_layout(lengths: np.ndarray):
    lengths = np.asarray(lengths, dtype=np.int64)
    tri = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths * (lengths + 1) // 2, out=tri[1:])
    row_seq = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    q = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]) if len(lengths) else np.zeros(0, np.int64)
    row_start = tri[row_seq] + q * (q + 1) // 2
    return row_start, q + 1, row_seq


def _gate_masks(batch: TokenBatch, gate_names: Sequence[str]) -> np.ndarray:
    """uint8 [G, entries]: each gate evaluated as a term over the batch."""
    from attndsl.kernels import evaluate_terms

    specs = [TermSpec(f"[{g}]", "gate") for g in gate_names]
    values = evaluate_terms(compile_terms(specs), batch).values
    return (values != 0).astype(np.uint8)


def prepare(
    tables: Sequence[TokenTable],
    seq_indices: Sequence[int],
    specs: Sequence[TermSpec],
    gate_names: Sequence[str] = GATES,
    scales: np.ndarray | None = None,
) -> SearchData:
    """Evaluate every distinct term once over the sequences, scale, index active rows.

    Without ``scales`` terms that are zero everywhere or equal to an earlier
    term are dropped and each term's scale is computed here; with ``scales``
    (one per spec, e.g. from the screening subsample) every spec is kept and
    scaled by it, so weights mean the same on both sets.
    """
    from attndsl.kernels import evaluate_terms

    batch = TokenBatch.from_tables(tables)
    specs = list(specs)
    terms = compile_terms(specs)
    raw = evaluate_terms(terms, batch).values  # float64 [T, E]
    row_start, row_len, row_seq = _row_layout(batch.lengths)
    keep, seen = [], set()
    dedupe = scales is None
    for t in range(len(terms)):
        v = raw[t]
        if dedupe:
            if not np.any(v > 0):
                continue
            key = np.round(v, 9).tobytes()
            if key in seen:
                continue
            seen.add(key)
        keep.append(t)
    raw = raw[keep]
    specs = [specs[t] for t in keep]
    terms = [terms[t] for t in keep]
    # scale: mean row sum over the rows where the term is active becomes 1
    if scales is None:
        row_sums = np.add.reduceat(np.clip(raw, 0, None), row_start, axis=1) if raw.size else np.zeros((0, 0))
        scales = np.ones(len(terms))
        for t in range(len(terms)):
            active = row_sums[t] > 0
            if active.any():
                scales[t] = 1.0 / float(row_sums[t][active].mean())
    else:
        scales = np.asarray(scales, dtype=np.float64)
        if len(scales) != len(terms):
            raise ValueError("one scale per term spec is required")
    values = np.ascontiguousarray((raw * scales[:, None]).astype(np.float32))
    counts = np.zeros(len(terms), dtype=np.int64)
    mark = np.zeros((len(terms), len(row_start)), dtype=np.uint8)
    if len(terms):
        _active_rows(values, row_start, row_len, counts, mark)
    rows_ptr = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum(counts, out=rows_ptr[1:])
    rows = np.flatnonzero(mark.ravel()) % max(len(row_start), 1)
    lengths = batch.lengths.astype(np.float64)
    return SearchData(
        batch=batch,
        seq_indices=np.asarray(seq_indices, dtype=np.int64),
        specs=specs,
        terms=terms,
        values=values,
        scales=scales,
        rows_ptr=rows_ptr,
        rows=rows.astype(np.int64),
        gates=_gate_masks(batch, gate_names) if gate_names else np.zeros((0, batch.n_entries), np.uint8),
        gate_names=tuple(gate_names),
        row_start=row_start,
        row_len=row_len,
        row_seq=row_seq,
        two_n=2.0 * lengths,
    )


# ------------------------------------------------------------------ one head


@dataclass(frozen=True)
class SearchSettings:
    """What decides the search's results (recorded in the run manifest)."""

    max_terms: int = 8
    min_gain: float = 0.001
    screen_sequences: int = 96  # synthesis sequences the greedy screening runs on
    fractions: tuple[float, ...] = (0.03, 0.08, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95)
    shortlist: int = 48  # pool terms re-screened after a full screen (lazy greedy)
    full_screen_every: int = 3  # steps between full screens of the pool
    refine_steps: tuple[float, ...] = (0.0, 0.5, 0.75, 1.33, 2.0)
    refine_rounds: int = 2
    use_gates: bool = True
    n_words: int = 16
    seed: int = 0
    softmax_terms: int = 0  # > 0: also fit a `combine softmax` program with at most this many terms


    def as_dict(self) -> dict:
        from dataclasses import asdict

        out = asdict(self)
        if not out["softmax_terms"]:  # off: manifests of linear-only runs stay as they were
            del out["softmax_terms"]
        return out


@dataclass(frozen=True)
class Component:
    """One term of a found program: a pool term, optionally gated."""

    spec: int  # index into SearchData.specs
    gate: int = -1  # index into SearchData.gate_names, -1 for none


@dataclass(frozen=True)
class SearchResult:
    """A head's program from the search, and the greedy path that led to it.

    ``source`` is canonical ``.attn`` text of one program named ``name``;
    ``path`` holds the sources after each greedy step (the last is ``source``);
    ``fit_iou`` is the objective on the synthesis sequences the final weights
    were fitted on (the library re-scores every program exactly).
    """

    layer: int
    head: int
    name: str
    source: str
    fit_iou: float
    path: tuple[str, ...]
    path_iou: tuple[float, ...]
    seconds: float
    softmax_source: str = ""  # the `combine softmax` fit (`attndsl.synthesis.softmax_fit`), when asked for
    softmax_fit_iou: float = 0.0
    short_source: str = ""  # the short variant (module docstring, step 5), named ``{name}_short``
    short_fit_iou: float = 0.0

    def as_dict(self) -> dict:
        return {
            "layer": self.layer, "head": self.head, "name": self.name, "source": self.source,
            "fit_iou": self.fit_iou, "path": list(self.path), "path_iou": list(self.path_iou),
            "seconds": self.seconds, "softmax_source": self.softmax_source, "softmax_fit_iou": self.softmax_fit_iou,
            "short_source": self.short_source, "short_fit_iou": self.short_fit_iou,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SearchResult":
        return cls(int(d["layer"]), int(d["head"]), d["name"], d["source"], float(d["fit_iou"]),
                   tuple(d["path"]), tuple(float(x) for x in d["path_iou"]), float(d.get("seconds", 0.0)),
                   d.get("softmax_source", ""), float(d.get("softmax_fit_iou", 0.0)),
                   d.get("short_source", ""), float(d.get("short_fit_iou", 0.0)))


class _HeadFit:
    """Greedy selection and weight refinement of one head on one SearchData."""

    def __init__(self, data: SearchData, attention: np.ndarray, settings: SearchSettings,
                 head_gates: Sequence[HeadGate] = ()):
        self.d = data
        self.A = np.ascontiguousarray(attention, dtype=np.float64)
        self.s = settings
        self.n_seq = len(data.batch)
        self.head_gates = tuple(head_gates)
        masks = [g.mask(data) for g in self.head_gates]
        self.gates = np.ascontiguousarray(np.vstack([data.gates] + masks)) if masks else data.gates
        self.gate_names = data.gate_names + tuple(g.text for g in self.head_gates)
        self.comps: list[Component] = []
        self.weights: list[float] = []
        self.ranking: list[int] | None = None  # pool terms by gain at the last full screen
        self.steps = 0
        self.score = np.zeros(data.n_entries)
        self.base_rows = np.zeros(len(data.row_start))
        self.base_seq = np.zeros(self.n_seq)
        self.objective = self._rebase()

    # values of one component
    def value(self, comp: Component) -> np.ndarray:
        v = self.d.values[comp.spec].astype(np.float64)
        if comp.gate >= 0:
            v = v * self.gates[comp.gate]
        return v

    def mass_shares(self) -> list[float]:
        """Mean over rows of the share of the row's (clipped) mass each component contributes."""
        d = self.d
        total = np.add.reduceat(np.clip(self.score, 0, None), d.row_start)
        active = total > 0
        out = []
        for comp, w in zip(self.comps, self.weights):
            part = np.add.reduceat(w * self.value(comp), d.row_start)
            out.append(float(np.mean(part[active] / total[active])) if active.any() else 0.0)
        return out

    def _rebase(self) -> float:
        _base(self.A, self.score, self.d.row_start, self.d.row_len, self.d.row_seq, self.n_seq,
              self.base_rows, self.base_seq)
        return float(np.mean(self.base_seq / (self.d.two_n - self.base_seq)))

    def _rebuild(self) -> None:
        score = np.zeros(self.d.n_entries)
        for comp, w in zip(self.comps, self.weights):
            score += w * self.value(comp)
        self.score = score
        self.objective = self._rebase()

    def screen(self, candidates: list[Component], cs: np.ndarray) -> np.ndarray:
        d = self.d
        cand_term = np.array([c.spec for c in candidates], dtype=np.int64)
        cand_gate = np.array([c.gate for c in candidates], dtype=np.int64)
        ptr = np.zeros(len(candidates) + 1, dtype=np.int64)
        parts = []
        for i, c in enumerate(candidates):
            rows = d.rows[d.rows_ptr[c.spec]:d.rows_ptr[c.spec + 1]]
            parts.append(rows)
            ptr[i + 1] = ptr[i] + len(rows)
        cand_rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        out = np.zeros(cs.shape)
        gates = self.gates if len(self.gates) else np.zeros((1, 1), np.uint8)
        _screen(self.A, self.score, d.values, cand_term, cand_gate, gates, ptr, cand_rows,
                np.ascontiguousarray(cs, dtype=np.float64), d.row_start, d.row_len, d.row_seq,
                self.base_rows, self.base_seq, d.two_n, out)
        return out

    def candidates(self, full: bool = True) -> list[Component]:
        if full or self.ranking is None:
            out = [Component(t) for t in range(len(self.d.specs))]
        else:
            out = [Component(t) for t in self.ranking[: self.s.shortlist]]
        n_shared = len(self.d.gate_names)
        if self.s.use_gates:
            chosen = {c.spec for c in self.comps}
            for spec in sorted(chosen):
                out.extend(Component(spec, g) for g in range(len(self.gate_names)))
            # head-specific token sets always paired with the terms they were made for
            for i, gate in enumerate(self.head_gates):
                for factors in gate.pairs:
                    spec = self.d.spec_index.get(factors)
                    if spec is not None and spec not in chosen:
                        out.append(Component(spec, n_shared + i))
        return out

    def step(self) -> bool:
        """Add the best candidate; False when nothing gains at least ``min_gain``."""
        full = self.ranking is None or self.steps % self.s.full_screen_every == 0
        self.steps += 1
        cands = self.candidates(full)
        total = float(sum(self.weights))
        if total <= 0:
            cs = np.ones((len(cands), 1))
            fractions = np.array([1.0])
        else:
            fractions = np.asarray(self.s.fractions)
            cs = np.tile(fractions / (1 - fractions) * total, (len(cands), 1))
        result = self.screen(cands, cs)
        if full:
            pool = [i for i, c in enumerate(cands) if c.gate < 0]
            gains = result[pool].max(axis=1)
            self.ranking = [cands[pool[i]].spec for i in np.argsort(-gains, kind="stable")]
        best = int(np.argmax(result))
        t, c = divmod(best, result.shape[1])
        gain = float(result[t, c]) - self.objective
        if gain < self.s.min_gain:
            return False
        comp, w = cands[t], float(cs[t, c])
        if comp in self.comps:
            self.weights[self.comps.index(comp)] += w
        else:
            self.comps.append(comp)
            self.weights.append(w)
        self._rebuild()
        return True

    def refine(self, rounds: int | None = None) -> None:
        """Coordinate ascent on the weights (multiplicative steps; 0 drops a term)."""
        steps = np.asarray(self.s.refine_steps, dtype=np.float64)
        for _ in range(self.s.refine_rounds if rounds is None else rounds):
            improved = False
            for j in range(len(self.comps)):
                if j >= len(self.comps):
                    break
                w = self.weights[j]
                multipliers = steps if len(self.comps) > 1 else steps[steps > 0]
                cs = ((multipliers - 1.0) * w)[None, :]
                result = self.screen([self.comps[j]], cs)[0]
                best = int(np.argmax(result))
                if result[best] > self.objective + 1e-9:
                    self.weights[j] = w * float(multipliers[best])
                    improved = True
                    self._rebuild()
            if any(w <= 0 for w in self.weights):
                keep = [i for i, w in enumerate(self.weights) if w > 0]
                self.comps = [self.comps[i] for i in keep]
                self.weights = [self.weights[i] for i in keep]
                self._rebuild()
            if not improved:
                break


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
    source = f"program {name} {{\n    {body}\n}}\n"
    if not check:
        return source
    from attndsl.language.parser import parse

    compile_source(source, f"<{name}>")  # must validate
    return format_module(parse(source, f"<{name}>"))


def search_head(
    layer: int,
    head: int,
    screen_data: SearchData,
    screen_attention: np.ndarray,
    settings: SearchSettings,
    full_data: SearchData | None = None,
    full_attention: np.ndarray | None = None,
    name: str | None = None,
) -> SearchResult:
    """Greedy search for one head (``*_attention``: the head's column of the causal block)."""
    start = time.perf_counter()
    name = name or f"L{layer}_H{head}"
    gates = head_gates(screen_data, screen_attention) if settings.use_gates else []
    fit = _HeadFit(screen_data, screen_attention, settings, gates)
    # start from the sink: the empty program already is "all on key 0" (the fallback),
    # so the sink term could never show a gain of its own
    fit.comps, fit.weights = [Component(_sink_index(screen_data))], [1.0]
    fit._rebuild()
    path = [program_source(f"{name}_step1", screen_data, fit.comps, fit.weights, fit.gate_names,
                           check=False, shares=fit.mass_shares())]
    path_iou = [fit.objective]
    short_state = (list(fit.comps), list(fit.weights))  # the path's last state with at most SHORT_MAX_TERMS terms
    short_open = True
    for step in range(settings.max_terms - 1):
        if not fit.step():
            break
        fit.refine()
        if short_open and len(fit.comps) <= SHORT_MAX_TERMS:
            short_state = (list(fit.comps), list(fit.weights))
        else:  # the first state past the bound ends the short path
            short_open = False
        path.append(program_source(f"{name}_step{len(path) + 1}", screen_data, fit.comps, fit.weights,
                                   fit.gate_names, check=False, shares=fit.mass_shares()))
        path_iou.append(fit.objective)
    comps, weights, objective = fit.comps, fit.weights, fit.objective
    data, gate_names, shares = screen_data, fit.gate_names, fit.mass_shares()
    if full_data is not None and full_attention is not None:
        final = _HeadFit(full_data, full_attention, settings, gates)
        final.comps, final.weights = list(comps), list(weights)
        final._rebuild()
        final.refine(rounds=1)
        comps, weights, objective = final.comps, final.weights, final.objective
        data, gate_names, shares = full_data, final.gate_names, final.mass_shares()
    source = program_source(name, data, comps, weights, gate_names, shares=shares)
    short_source, short_iou = _short_program(f"{name}_short", short_state, gates, settings,
                                             full_data if full_data is not None else screen_data,
                                             full_attention if full_attention is not None else screen_attention)
    soft_source, soft_iou = "", 0.0
    if settings.softmax_terms > 0:
        soft_source, soft_iou = _search_softmax(f"{name}_softmax", screen_data, screen_attention, settings,
                                                full_data, full_attention)
    return SearchResult(layer, head, name, source, float(objective), tuple(path), tuple(path_iou),
                        time.perf_counter() - start, soft_source, soft_iou, short_source, short_iou)


def _short_program(name: str, state, gates: Sequence[HeadGate], settings: SearchSettings, data: SearchData,
                   attention: np.ndarray) -> tuple[str, float]:
    """The short variant: ``state`` (components, weights of at most SHORT_MAX_TERMS terms) with
    head token sets cut to SHORT_MAX_ENTRIES words, weights refined on ``data``."""
    comps, weights = state
    short_gates = [g.truncated(SHORT_MAX_ENTRIES) for g in gates]  # same order: component gate indices hold
    fit = _HeadFit(data, attention, settings, short_gates)
    fit.comps, fit.weights = list(comps), list(weights)
    fit._rebuild()
    fit.refine()
    return program_source(name, data, fit.comps, fit.weights, fit.gate_names, shares=fit.mass_shares()), \
        float(fit.objective)


def _search_softmax(name: str, screen_data: SearchData, screen_attention: np.ndarray, settings: SearchSettings,
                    full_data: SearchData | None, full_attention: np.ndarray | None) -> tuple[str, float]:
    """A `combine softmax` program over the same pool: selected and fitted on the
    screening sequences, weights refitted on every synthesis sequence."""
    from attndsl.synthesis.softmax_fit import SoftmaxSettings, fit_softmax, refit, softmax_source

    s = SoftmaxSettings(max_terms=settings.softmax_terms)
    d = screen_data
    fit = fit_softmax(d.values, screen_attention, d.row_start, d.row_len, d.row_seq, d.two_n, s)
    if full_data is not None and full_attention is not None:
        d = full_data
        fit = refit(d.values, full_attention, d.row_start, d.row_len, d.row_seq, d.two_n, fit, s)
    texts = [d.specs[i].factors for i in fit.specs]
    scales = [float(d.scales[i]) for i in fit.specs]
    return softmax_source(name, texts, fit.weights, scales), float(fit.iou)


def _sink_index(data: SearchData) -> int:
    for i, spec in enumerate(data.specs):
        if spec.factors == "[k == 0]":
            return i
    raise ValueError("the term pool has no sink term")


# ------------------------------------------------------------------ many heads


def search_heads(
    source,
    tables: Sequence[TokenTable],
    seq_indices: Sequence[int],
    heads: Sequence[tuple[int, int]],
    settings: SearchSettings = SearchSettings(),
    on_result: Callable[[SearchResult], None] | None = None,
    progress: bool = True,
) -> list[SearchResult]:
    """Search every head in ``heads`` on the synthesis sequences ``seq_indices``.

    ``source`` is an `attndsl.synthesis.scoring.AttentionSource`; ``tables[i]`` is the
    token table of sequence ``seq_indices[i]``.  ``on_result`` is called as
    each head finishes (the synthesis stage saves it there, for resuming).
    """
    from tqdm.auto import tqdm

    seq_indices = np.asarray(seq_indices, dtype=np.int64)
    if len(seq_indices) != len(tables):
        raise ValueError("one token table per sequence index is required")
    if len(seq_indices) == 0 or not heads:
        return []
    rng = np.random.default_rng(settings.seed)
    n_screen = min(settings.screen_sequences, len(seq_indices))
    chosen = np.sort(rng.choice(len(seq_indices), size=n_screen, replace=False))
    specs = term_pool(tables, settings.n_words)
    gate_names = GATES if settings.use_gates else ()
    screen = prepare([tables[i] for i in chosen], seq_indices[chosen], specs, gate_names)
    full = None
    if n_screen < len(seq_indices):
        full = prepare(tables, seq_indices, screen.specs, gate_names, scales=screen.scales)
    screen_block = np.asarray(source.causal_block(seq_indices[chosen]), dtype=np.float32)
    full_block = np.asarray(source.causal_block(seq_indices), dtype=np.float32) if full is not None else None
    n_heads = source.n_heads
    results = []
    for layer, head in tqdm(heads, desc="search", unit="head", disable=not progress):
        col = layer * n_heads + head
        result = search_head(
            layer, head, screen, screen_block[:, col], settings,
            full, full_block[:, col] if full_block is not None else None,
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
