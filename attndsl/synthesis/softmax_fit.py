"""Fitting ``combine softmax`` programs to a head over the search's term pool.

The softmax form is log-linear: logit(q, k) = Σᵢ wᵢ·termᵢ(q, k) and each row
is a softmax over k ≤ q, so for a fixed set of terms the cross-entropy
−Σ A·log Â of the head's attention A is convex in the weights.  Per head:

1. **Sparse selection** (greedy, orthogonal-matching-pursuit style): start
   from the uniform program (all weights 0); at each step add the pool term
   whose cross-entropy gradient ``Σ (Â − A)·term`` is largest in magnitude,
   then refit every chosen weight by L-BFGS on the cross-entropy (with a
   small L2 penalty, so the problem stays strictly convex and weights stay
   finite when a term separates perfectly).
2. **Soft-IoU refinement** (optional): the chosen weights are polished by
   L-BFGS on the soft IoU itself (Σ min(A, Â), through the softmax); the
   refined weights are kept only if the IoU improves.
3. **Simplicity**: of the programs along the greedy path the shortest whose
   synthesis IoU is within ``tie`` of the best wins.
4. **Lexicons** (optional, `LexiconSpec`): after the terms are chosen, word
   tables are fitted jointly with them — a weight per frequent key word
   (``key_words(k)``: the head prefers or avoids these keys; ``near_words``,
   ``far_words`` and ``prev_words`` the same within two tokens, eight or more
   tokens back and at the previous token only, for heads whose taste in keys
   depends on distance), and per frequent query word on the sink and on the
   current token
   (``[k == 0] * sink_after(q)``, ``[k == q] * self_after(q)``: after these
   words the head parks on the first token, or stays on itself, more or
   less than usual); and, where asked for (`CONTEXT_LEXICONS`; by default
   while every sequence has at most 64 tokens), by context, since a key's
   vector carries the words before it and a query's the words before it —
   ``[k > 0] * after_words(k - 1)`` (the head prefers keys that follow these
   words: the noun after "the", whatever the noun; ``near_after`` and
   ``far_after`` the same within two tokens and eight or more back) and ``[k == 0] *
   sink_after_prev(q - 1)`` — and by query word, ``[k == q - 1] *
   prev_after(q)`` and ``[k > 0] * log(d + 1) * reach_after(q)`` (after these
   words the head reads the previous token, or looks further back, more or
   less than usual).  Each word's logit is one more convex weight (sparse
   indicator columns, the same L2 penalty as the terms'); each table
   keeps its ``entries`` largest weights, they are refitted, and the tables
   are kept only if together they raise the IoU by more than ``tie`` on the
   synthesis sequences set aside while they were chosen and fitted (every
   `TABLE_CHECK_EVERY`-th; hundreds of word weights can memorise the rest),
   then fitted on every sequence; words whose logit rounds below
   `MIN_WORD_WEIGHT` are not printed.
5. **Word pairs** (optional, `PairSpec`): a query-word table times a
   key-word table, ``c * [k > 0] * [k < q] * asks(q) * offers(k)`` — which
   keys *these* queries prefer, the bilinear form real attention has.  The
   rank-1 direction of the cross-entropy gradient over frequent (query word,
   key word) pairs gives the query side; the key side is then a convex fit
   with the query side fixed (``pair_rounds`` alternating fits of both sides
   may come first: on every 10th head of the sentence run two rounds gave
   0.8202 held-out against 0.8200 without, at several times the cost); each
   side keeps its ``lexicon_entries`` largest words; the pair stays only if it
   raises the IoU by more than ``tie``.  A second pair is fitted on top of
   the first.
6. **Tag pairs** (optional, `TagPairSpec`, where the sequences carry syntax): a weight per
   (query tag, key tag) pair on the keys before the query — part of speech or dependency
   label at q times the same at k, ``w * [k > 0] * [k < q] * [upos(q) == "VERB"] *
   [upos(k) == "NOUN"]``: which kinds of key each kind of query reads, the interaction that
   single-side syntax terms cannot express (tags are few and frequent, so each pair's weight
   is seen often).  A table with a word on one side (``lower``) is the same fit over (query
   tag, key word) pairs and prints as one word table per tag, ``[k > 0] * [k < q] *
   [upos(q) == "PRON"] * pron_reads(k)`` (or over (query word, key tag) pairs, ``[upos(k) ==
   "NOUN"] * noun_readers(q)``).  They are fitted with the word tables (the same
   indicator columns, penalty and set-aside check), each keeping its largest weights.
7. **Printing**: weights (times the term's scale) are rounded to three
   significant digits; terms whose rounded weight is 0 are dropped; the
   program is canonical ``.attn`` source that compiles back (its IoU is
   whatever the compiled program scores when the library re-scores it).

Everything here works on `attndsl.synthesis.search.SearchData` (term values already
evaluated once by the kernels), so fitting costs NumPy matrix–vector
products over the causal entries, not program evaluations.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

from attndsl.language import ir


@dataclass(frozen=True)
class LexiconSpec:
    """A word table the fit may learn: ``name(side)`` on the entries where ``where`` holds.

    ``where`` is DSL factor source (``""``: every entry); the printed term is
    ``1 * where * name(side)``, and each word's weight is its logit there.
    """

    name: str
    side: str  # "q", "k", "q - 1" or "k - 1": whose lower-cased token the table is read at
    where: str = ""


#: the lexicons `fit_softmax` learns by default: preferred key words (anywhere, within two tokens,
#: eight or more tokens back, at the previous token), and query words after which the head parks on
#: the first token or stays on itself more (or less) than usual
LEXICONS = (
    LexiconSpec("key_words", "k"),
    LexiconSpec("near_words", "k", "[k > 0] * [d <= 2]"),
    LexiconSpec("far_words", "k", "[k > 0] * [d >= 8]"),
    LexiconSpec("prev_words", "k", "[k == q - 1]"),
    LexiconSpec("sink_after", "q", "[k == 0]"),
    LexiconSpec("self_after", "q", "[k == q]"),
)

#: word tables by context and by query: keys by the word before them (anywhere, within two tokens, eight
#: or more tokens back), the sink by the word before the query, the previous token and the reach by the
#: query word (learned after `LEXICONS` where asked for)
CONTEXT_LEXICONS = (
    LexiconSpec("after_words", "k - 1", "[k > 0]"),
    LexiconSpec("near_after", "k - 1", "[k > 0] * [d <= 2]"),
    LexiconSpec("far_after", "k - 1", "[k > 0] * [d >= 8]"),
    LexiconSpec("sink_after_prev", "q - 1", "[k == 0]"),
    LexiconSpec("prev_after", "q", "[k == q - 1]"),
    LexiconSpec("reach_after", "q", "[k > 0] * log(d + 1)"),
)

@dataclass(frozen=True)
class TagPairSpec:
    """A full table over (query tag, key tag) pairs: one term per kept pair,
    ``w * where * [query_feature(q) == a] * [key_feature(k) == b]``.

    Parts of speech and dependency labels are few and occur everywhere, so every pair's weight
    is seen many times (unlike a word's): the table says which kinds of key each kind of query
    reads, the interaction that single-side syntax terms cannot express."""

    query_feature: str  # "upos", "dep" or "lower" (`WORD_FEATURE`: the table prints as word tables)
    key_feature: str
    where: str = "[k > 0] * [k < q]"

    def entries(self, settings: "SoftmaxSettings") -> int:
        """Pairs the table keeps at most: ``tag_pair_entries``, twice as many where one side is a word
        (they print as word tables, an entry each, not a term each)."""
        words = WORD_FEATURE in (self.query_feature, self.key_feature)
        return settings.tag_pair_entries * (2 if words else 1)


#: the feature whose values are words: a tag-pair table over it prints as word tables, one per tag
WORD_FEATURE = "lower"


def tag_pair_factors(spec: TagPairSpec, query_tag: str, key_tag: str) -> str:
    """DSL source of one pair's term (without its weight)."""
    from attndsl.language.printer import format_string

    return (f"{spec.where} * [{spec.query_feature}(q) == {format_string(query_tag)}] * "
            f"[{spec.key_feature}(k) == {format_string(key_tag)}]")


#: the tag-pair tables `fit_softmax` learns with the word tables when the sequences carry syntax
TAG_PAIRS = (
    TagPairSpec("upos", "upos"),
    TagPairSpec("upos", "dep"),
    TagPairSpec("upos", WORD_FEATURE),  # per query part of speech, the key words it reads: ``pron_reads(k)``
    TagPairSpec(WORD_FEATURE, "upos"),  # per key part of speech, the query words that read it: ``noun_readers(q)``
)


#: the conditions a `LexiconSpec` may use, as DSL source and as a mask over (q, k) positions
LEXICON_CONDITIONS = {
    "": lambda q, k: np.ones(len(q), dtype=bool),
    "[k == 0]": lambda q, k: k == 0,
    "[k > 0]": lambda q, k: k > 0,
    "[k > 0] * log(d + 1)": lambda q, k: (k > 0) * np.log1p(q - k),
    "[k == q]": lambda q, k: k == q,
    "[k == q - 1]": lambda q, k: k == q - 1,
    "[k > 0] * [d <= 2]": lambda q, k: (k > 0) & (q - k <= 2),
    "[k > 0] * [d >= 8]": lambda q, k: (k > 0) & (q - k >= 8),
    "[k > 0] * [k < q]": lambda q, k: (k > 0) & (k < q),
}

#: an earlier key in the query's own sentence
SAME_SENTENCE = "[k > 0] * [k < q] * [same_sent(q, k)]"

#: conditions that also read each entry's sentence index at q and at k (`WordData.sentences`)
SENTENCE_CONDITIONS = {
    SAME_SENTENCE: lambda q, k, sq, sk: (k > 0) & (k < q) & (sq == sk),
}

#: tag-pair tables learned beside `TAG_PAIRS` on running text (several sentences a sequence): which
#: kinds of key each kind of query reads within its own sentence, on top of what it reads anywhere
#: (on sentences the table would repeat the upos × upos one)
SENTENCE_TAG_PAIRS = (
    TagPairSpec("upos", "upos", SAME_SENTENCE),
)


@dataclass(frozen=True)
class PairSpec:
    """A rank-1 table of word pairs: the term ``c * where * query_name(q) * key_name(k)``.

    Real attention scores a key by the product of what the query asks for and what the key
    offers; a query-word table times a key-word table says which keys *these* queries prefer
    ("after 'he', names and 'dog'"), which key-only tables cannot.  With one side fixed the
    other is a linear term of the softmax, so each side's fit is convex (`_fit_pair`).
    """

    query_name: str
    key_name: str
    where: str = "[k > 0] * [k < q]"


#: the word-pair tables `fit_softmax` learns by default (each kept only where it raises the IoU)
PAIRS = (
    PairSpec("asks", "offers"),
    PairSpec("asks2", "offers2"),
)


#: word tables are checked on every this-many-th sequence, set aside while their words are chosen and fitted
TABLE_CHECK_EVERY = 4

#: a word's logit below this in magnitude (a factor of at most e^0.05 ≈ 1.05) is left out of the printed table
MIN_WORD_WEIGHT = 0.05


@dataclass(frozen=True)
class SoftmaxSettings:
    max_terms: int = 24
    l2: float = 1e-4  # per-weight penalty (the cross-entropy is a mean over rows)
    tie: float = 0.002  # IoU within this of the best counts as a tie (shorter wins)
    refine_iou: bool = True
    max_iter: int = 200
    #: L-BFGS iterations per greedy step (the path only ranks terms; the chosen set is fitted with max_iter)
    path_iter: int = 25
    #: L-BFGS iterations when `refit` starts from an earlier fit's weights (a warm start needs few)
    refit_iter: int = 40
    lexicons: tuple[LexiconSpec, ...] = ()  # word tables to learn (`LEXICONS`)
    lexicon_entries: int = 128  # words each table keeps at most
    #: frequent words each table may choose from (on every 10th head of the sentence run 512 gave the same
    #: held-out IoU with 128-word tables, 0.8253, at more cost)
    lexicon_candidates: int = 256
    lexicon_min_count: int = 4  # tokens a candidate word must have in the fit's sequences
    #: L-BFGS iterations of the joint fit over every candidate word (it only ranks the words; the
    #: kept ones are fitted with max_iter; it also bounds a word pair's side fits); on the sentence run
    #: 40 instead of 60 gave 0.8135 held-out against 0.8136 and synthesis 4 min 38 s against 5 min 7 s
    lexicon_rank_iter: int = 40
    #: per-word penalty; as the terms' since on every 10th head of the sentence run 1e-3 gave 0.8199 held-out,
    #: 3e-4 0.8217, 1e-4 0.8221 and 3e-5 0.8216 (64 words a table)
    lexicon_l2: float = 1e-4
    pairs: tuple[PairSpec, ...] = ()  # word-pair tables to learn after the word tables (`PAIRS`)
    tag_pairs: tuple["TagPairSpec", ...] = ()  # tag-pair tables learned with the word tables (`TAG_PAIRS`)
    tag_pair_entries: int = 48  # pairs each tag-pair table keeps at most (each is a printed term)
    #: alternating rounds (key side, then query side) before each pair table's key side is fitted
    #: (0: the query side stays the gradient's rank-1 direction)
    pair_rounds: int = 0


@dataclass(frozen=True)
class LearnedLexicon:
    """A fitted word table: its spec and (word, weight) entries, by decreasing |weight|."""

    spec: LexiconSpec
    entries: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class LearnedPair:
    """A fitted word-pair table: ``weight * where * query(q) * key(k)``, entries by decreasing |weight|."""

    spec: PairSpec
    query: tuple[tuple[str, float], ...]
    key: tuple[tuple[str, float], ...]
    weight: float = 1.0


@dataclass(frozen=True)
class SoftmaxFit:
    specs: tuple[int, ...]  # indices into SearchData.specs
    weights: tuple[float, ...]  # on the scaled values
    iou: float  # mean soft IoU on the data it was fitted on
    path_iou: tuple[float, ...]  # IoU after each greedy step
    lexicons: tuple[LearnedLexicon, ...] = field(default=())
    #: per term, the index of the gate it is multiplied by (into SearchData.gate_names), -1 for none;
    #: empty: no term is gated
    gates: tuple[int, ...] = field(default=())
    pairs: tuple[LearnedPair, ...] = field(default=())

    def gate_of(self, i: int) -> int:
        return self.gates[i] if self.gates else -1


#: pool terms the softmax fit may also use gated, ``[g] * term`` for every shared gate g (`GatedPool`):
#: the sink, the current and the previous tokens and broad recency, whose share in a real head
#: depends most on what the query (or key) is
GATED_BASES = (
    "[k == 0]",
    "[k == 0] * log(q + 2)",
    "[k == q]",
    "[k == q - 1]",
    "[k == q - 2]",
    "[k > 0]",
    "[k > 0] * exp(-0.5 * d)",
    "[k > 0] * pow(d + 1, -1)",
)


@dataclass(frozen=True, eq=False)
class GatedPool:
    """Gated candidates ``[gate g] * term b`` for the ``bases`` (pool indices), from the 0/1
    ``gates`` [G, E] of the same entries; candidate j of the pool's P terms and these is
    pool term j when j < P, else gate, base = divmod(j − P, len(bases))."""

    gates: np.ndarray  # uint8 or bool [G, E]
    bases: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.gates) * len(self.bases)


class _Rows:
    """Row-wise softmax over the causal layout (rows are contiguous runs of entries)."""

    def __init__(self, row_start: np.ndarray, row_len: np.ndarray, row_seq: np.ndarray, two_n: np.ndarray):
        self.start = np.asarray(row_start, dtype=np.int64)
        self.len = np.asarray(row_len, dtype=np.int64)
        self.seq = np.asarray(row_seq, dtype=np.int64)
        self.two_n = np.asarray(two_n, dtype=np.float64)
        self.n_rows = len(self.start)

    def softmax(self, logits: np.ndarray) -> np.ndarray:
        logits = np.clip(logits, -ir.LOGIT_BOUND, ir.LOGIT_BOUND)
        top = np.maximum.reduceat(logits, self.start)
        e = np.exp(logits - np.repeat(top, self.len))
        return e / np.repeat(np.add.reduceat(e, self.start), self.len)

    def split(self, every: int) -> "tuple[np.ndarray, _Rows, np.ndarray, _Rows] | None":
        """Every ``every``-th sequence apart: (entries, rows) of the rest, then of those sequences;
        None when either part would hold fewer than two sequences."""
        n_seq = len(self.two_n)
        aside = np.arange(n_seq) % every == every - 1
        if aside.sum() < 2 or (~aside).sum() < 2:
            return None
        entry_seq = np.repeat(self.seq, self.len)
        parts = []
        for keep in (~aside, aside):
            row_kept = keep[self.seq]
            lens = self.len[row_kept]
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            renumber = np.cumsum(keep) - 1
            parts += [keep[entry_seq], _Rows(starts, lens, renumber[self.seq[row_kept]], self.two_n[keep])]
        return tuple(parts)

    def row_sum(self, x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, self.start)

    def iou(self, A: np.ndarray, ahat: np.ndarray) -> float:
        """Mean over sequences of Σmin / (2n − Σmin) (both row-stochastic)."""
        per_row = self.row_sum(np.minimum(A, ahat))
        per_seq = np.bincount(self.seq, weights=per_row, minlength=len(self.two_n))
        return float(np.mean(per_seq / (self.two_n - per_seq)))


def _fit_ce(V: np.ndarray, A: np.ndarray, rows: _Rows, w0: np.ndarray, s: SoftmaxSettings,
            S: "sparse.csr_matrix | None" = None, offset: np.ndarray | None = None) -> np.ndarray:
    """Weights minimising mean cross-entropy + l2·|w|² for the term values V [m, E] (and the
    sparse word indicators S [L, E] after them, with penalty ``lexicon_l2``); ``offset`` [E],
    logits held fixed, is added to theirs."""
    m = len(V)
    lam = np.full(len(w0), s.l2)
    lam[m:] = s.lexicon_l2
    St = None if S is None else S.T.tocsr()

    def f(w):
        logits = _logits(V, w, St, len(A))
        if offset is not None:
            logits = logits + offset
        clipped = np.clip(logits, -ir.LOGIT_BOUND, ir.LOGIT_BOUND)
        top = np.maximum.reduceat(clipped, rows.start)
        shifted = clipped - np.repeat(top, rows.len)
        e = np.exp(shifted)
        z = np.add.reduceat(e, rows.start)
        log_p = shifted - np.repeat(np.log(z), rows.len)
        p = e / np.repeat(z, rows.len)
        loss = -float(A @ log_p) / rows.n_rows + float(lam @ (w * w))
        r = p - A
        grad = np.concatenate([V @ r, S @ r if S is not None else np.zeros(0)]) / rows.n_rows + 2 * lam * w
        return loss, grad

    result = minimize(f, w0, jac=True, method="L-BFGS-B", options=dict(maxiter=s.max_iter))
    return result.x


def _columns(values: np.ndarray, specs: Sequence[int], gates: Sequence[int], gate_values: np.ndarray | None) -> np.ndarray:
    """float64 [m, E]: pool term ``specs[i]``, times gate ``gates[i]`` where it is not −1."""
    V = np.asarray(np.asarray(values)[list(specs)], dtype=np.float64)
    for i, g in enumerate(gates):
        if g >= 0:
            V[i] *= gate_values[g]
    return V


def _logits(V: np.ndarray, w: np.ndarray, St, n: int) -> np.ndarray:
    m = len(V)
    out = w[:m] @ V if m else np.zeros(n)
    return out if St is None else out + St @ w[m:]


def _refine_iou(V: np.ndarray, A: np.ndarray, rows: _Rows, w0: np.ndarray, s: SoftmaxSettings,
                S: "sparse.csr_matrix | None" = None) -> np.ndarray:
    """Polish weights on −Σ min(A, Â) (a subgradient through the softmax)."""
    St = None if S is None else S.T.tocsr()

    def f(w):
        p = rows.softmax(_logits(V, w, St, len(A)))
        loss = -float(np.minimum(A, p).sum()) / rows.n_rows
        g = -(p < A).astype(np.float64) / rows.n_rows  # d loss / d p
        dlogit = p * (g - np.repeat(rows.row_sum(p * g), rows.len))
        return loss, np.concatenate([V @ dlogit, S @ dlogit if S is not None else np.zeros(0)])

    result = minimize(f, w0, jac=True, method="L-BFGS-B", options=dict(maxiter=s.max_iter // 2))
    return result.x


@dataclass(frozen=True, eq=False)
class WordData:
    """What lexicons are fitted from: each causal entry's positions and lower-cased token ids.

    ``q``, ``k``: positions; ``q_word``, ``k_word``: ids into ``words`` (−1 for none).
    """

    q: np.ndarray
    k: np.ndarray
    q_word: np.ndarray
    k_word: np.ndarray
    words: Sequence[str]  # id -> lower-cased text
    #: lower-cased token ids at offsets before q or k, by side ("q - 1", "k - 1", "k - 2" …;
    #: −1 where the offset falls before the sequence)
    context: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: ids (into ``words``) of each entry's syntax tags, by feature and side ("upos(q)", "dep(k)" …);
    #: empty without syntax
    tags: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: each entry's ``sent`` (sentence index) at q and at k, for the conditions that read it
    #: (`SENTENCE_CONDITIONS`); None where the sequences do not say
    sentences: tuple[np.ndarray, np.ndarray] | None = None

    def factor(self, where: str) -> np.ndarray:
        """float64 [E]: a `LexiconSpec`'s ``where`` at every entry (one of `LEXICON_CONDITIONS` or
        `SENTENCE_CONDITIONS`)."""
        condition = LEXICON_CONDITIONS.get(where)
        if condition is not None:
            return np.asarray(condition(self.q, self.k), dtype=np.float64)
        condition = SENTENCE_CONDITIONS.get(where)
        if condition is not None and self.sentences is not None:
            return np.asarray(condition(self.q, self.k, *self.sentences), dtype=np.float64)
        raise ValueError(f"lexicon condition {where!r} is not one the fit knows for these sequences")

    def mask(self, where: str) -> np.ndarray:
        """The entries where a `LexiconSpec`'s ``where`` is not 0."""
        return self.factor(where) != 0

    def side(self, spec: LexiconSpec) -> np.ndarray:
        """Each entry's word id at the spec's side (−1 for none)."""
        return self.words_at(spec.side)

    def words_at(self, side: str) -> np.ndarray:
        """Each entry's word id at ``side`` ("q", "k" or a `context` offset; −1 for none)."""
        match side:
            case "q":
                return self.q_word
            case "k":
                return self.k_word
            case _ if side in self.context:
                return self.context[side]
        raise ValueError(f"word table side {side!r} is not one these words know")

    def tag_pair_ids(self, spec: "TagPairSpec") -> np.ndarray | None:
        """int64 [E]: each entry's (query tag, key tag) pair as one id (−1 where ``where`` does
        not hold or a tag is missing); None without these tags."""
        qt, kt = self.tags.get(f"{spec.query_feature}(q)"), self.tags.get(f"{spec.key_feature}(k)")
        if qt is None or kt is None:
            return None
        n = len(self.words) + 1
        ok = self.mask(spec.where) & (qt >= 0) & (kt >= 0)
        return np.where(ok, qt * n + kt, -1)

    def tag_pair_candidates(self, spec: "TagPairSpec", settings: SoftmaxSettings) -> list[tuple[str, str]]:
        """Pairs of tags seen on at least ``lexicon_min_count`` entries, most frequent first."""
        ids = self.tag_pair_ids(spec)
        if ids is None:
            return []
        values, counts = np.unique(ids[ids >= 0], return_counts=True)
        n = len(self.words) + 1
        pairs = [((self.words[v // n], self.words[v % n]), c) for v, c in zip(values, counts)
                 if c >= settings.lexicon_min_count]
        words = [spec.query_feature == WORD_FEATURE, spec.key_feature == WORD_FEATURE]
        pairs = [(pair, c) for pair, c in pairs if all(pair)  # words as word tables take them
                 and all(not is_word or (len(x) <= 64 and x == x.lower()) for x, is_word in zip(pair, words))]
        pairs.sort(key=lambda item: (-item[1], item[0]))
        return [pair for pair, _ in pairs]

    def tag_pair_columns(self, spec: "TagPairSpec", chosen: Sequence[tuple[str, str]]) -> "sparse.csr_matrix":
        """[len(chosen), E]: 1 where the entry's tag pair is chosen[j]."""
        ids = self.tag_pair_ids(spec)
        n = len(self.words) + 1
        query, key = self.ids([a for a, _ in chosen]), self.ids([b for _, b in chosen])
        known = np.flatnonzero((query >= 0) & (key >= 0))
        row = _lookup_rows(ids, dict(zip((query[known] * n + key[known]).tolist(), known.tolist())))
        entries = np.flatnonzero(row >= 0)
        factor = self.factor(spec.where)
        return sparse.csr_matrix((factor[entries], (row[entries], entries)), shape=(len(chosen), len(ids)))

    def any_candidates(self, spec, settings: SoftmaxSettings) -> list:
        return self.tag_pair_candidates(spec, settings) if isinstance(spec, TagPairSpec) else self.candidates(spec, settings)

    def any_columns(self, spec, chosen) -> "sparse.csr_matrix":
        return self.tag_pair_columns(spec, chosen) if isinstance(spec, TagPairSpec) else self.columns(spec, chosen)

    def candidates(self, spec: LexiconSpec, settings: SoftmaxSettings) -> list[str]:
        """The ``lexicon_candidates`` most frequent usable words at the spec's side (each token
        counted once, position 0 left out; ties alphabetical)."""
        diagonal = (self.k == self.q) & (self.q > 0)
        ids = self.side(spec)[diagonal]
        ids = ids[ids >= 0]
        counts = np.bincount(ids, minlength=len(self.words))
        usable = [i for i in np.flatnonzero(counts >= settings.lexicon_min_count)
                  if 0 < len(self.words[i]) <= 64 and self.words[i] == self.words[i].lower()]
        usable.sort(key=lambda i: (-counts[i], self.words[i]))
        return [self.words[i] for i in usable[: settings.lexicon_candidates]]

    def columns(self, spec: LexiconSpec, chosen: Sequence[str]) -> "sparse.csr_matrix":
        """[len(chosen), E]: entry e has word j at the spec's side, valued ``where`` there (1 for a
        condition that holds)."""
        side = self.side(spec)
        row = self.positions(side, chosen)
        factor = self.factor(spec.where)
        row[factor == 0] = -1
        entries = np.flatnonzero(row >= 0)
        return sparse.csr_matrix((factor[entries], (row[entries], entries)), shape=(len(chosen), len(side)))

    def ids(self, chosen: Sequence[str]) -> np.ndarray:
        """Word ids of ``chosen`` (−2 for a word these sequences do not hold)."""
        index = {w: j for j, w in enumerate(self.words)}
        return np.asarray([index.get(w, -2) for w in chosen], dtype=np.int64)

    def positions(self, word_of_entry: np.ndarray, chosen: Sequence[str]) -> np.ndarray:
        """int64 [E]: the index in ``chosen`` of each entry's word id ``word_of_entry`` (−1 for a
        word not chosen, or none)."""
        ids = self.ids(chosen)
        known = ids >= 0
        lookup = np.full(len(self.words) + 1, -1, dtype=np.int64)  # the last: an entry without a word
        lookup[ids[known]] = np.flatnonzero(known)
        return lookup[np.where(word_of_entry >= 0, word_of_entry, len(self.words))]

    def table_values(self, side: str, table: dict[str, float]) -> np.ndarray:
        """float64 [E]: each entry's weight in ``table`` of its word at ``side`` (0 for other words)."""
        full = np.zeros(len(self.words) + 1)
        ids = self.ids(list(table))
        known = ids >= 0
        full[ids[known]] = np.asarray(list(table.values()), dtype=np.float64)[known]
        word = self.words_at(side)
        return full[np.where(word >= 0, word, len(self.words))]

    def scaled_columns(self, side: str, chosen: Sequence[str], where: str, scale: np.ndarray) -> "sparse.csr_matrix":
        """[len(chosen), E]: entry e has word j at ``side`` where ``where`` holds, valued ``scale[e]``."""
        spec = LexiconSpec("_", side, where)
        indicators = self.columns(spec, chosen)
        return indicators.multiply(scale[None, :]).tocsr()


def _lookup_rows(ids: np.ndarray, lookup: dict[int, int]) -> np.ndarray:
    """int64 [E]: lookup[ids[e]] (−1 for ids not in it)."""
    if not lookup:
        return np.full(len(ids), -1, dtype=np.int64)
    keys = np.fromiter(lookup.keys(), dtype=np.int64, count=len(lookup))
    vals = np.fromiter(lookup.values(), dtype=np.int64, count=len(lookup))
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    return np.where(keys[at] == ids, vals[at], -1)


def _stack(blocks: Sequence["sparse.csr_matrix"]) -> "sparse.csr_matrix | None":
    blocks = [b for b in blocks if b.shape[0]]
    return sparse.vstack(blocks, format="csr") if blocks else None


def _fit_lexicons(V: np.ndarray, A: np.ndarray, rows: _Rows, w: np.ndarray, iou: float, words: WordData,
                  s: SoftmaxSettings) -> tuple[np.ndarray, float, tuple[LearnedLexicon, ...], "sparse.csr_matrix | None"]:
    """Word tables fitted jointly with the chosen terms V; each keeps its largest weights, and
    they stay only if they raise the IoU by more than ``tie`` on sequences they were not
    fitted on (every `TABLE_CHECK_EVERY`-th sequence is set aside to choose and fit the words
    without it; the kept words are then fitted on every sequence, warm-started from that fit
    with ``refit_iter`` iterations: on every 10th head of the sentence run the same held-out IoU
    as 200 iterations).  Hundreds of word weights
    fit noise too: without the check a head that reads no words gains tables that only
    memorise its synthesis sequences."""
    n = len(A)
    m = len(V)
    tables = []
    for spec in s.lexicons + s.tag_pairs:
        cands = words.any_candidates(spec, s)
        if cands:
            tables.append((spec, cands))
    if not tables:
        return w, iou, (), None
    S = _stack([words.any_columns(spec, cands) for spec, cands in tables])
    split = rows.split(TABLE_CHECK_EVERY)
    if split is not None:
        fit_entries, fit_rows, check_entries, check_rows = split
        V_fit, A_fit, S_fit = V[:, fit_entries], A[fit_entries], S[:, fit_entries]
    else:
        V_fit, A_fit, S_fit, fit_rows = V, A, S, rows
    joint = _fit_ce(V_fit, A_fit, fit_rows, np.concatenate([w, np.zeros(S.shape[0])]),
                    replace(s, max_iter=s.lexicon_rank_iter), S_fit)
    kept: list[tuple[LexiconSpec, list[str]]] = []
    at = m
    for spec, cands in tables:
        weights = joint[at: at + len(cands)]
        at += len(cands)
        order = [j for j in np.argsort(-np.abs(weights), kind="stable") if abs(weights[j]) >= MIN_WORD_WEIGHT]
        if order:
            limit = spec.entries(s) if isinstance(spec, TagPairSpec) else s.lexicon_entries
            kept.append((spec, [cands[j] for j in order[:limit]]))
    best = (w, iou, (), None)
    if not kept:
        return best
    S = _stack([words.any_columns(spec, chosen) for spec, chosen in kept])
    start = np.concatenate([w, np.zeros(S.shape[0])])
    if split is not None:  # the words' gain on the sequences set aside, against the terms alone
        w_fit = _fit_ce(V_fit, A_fit, fit_rows, start, s, S[:, fit_entries])
        V_check, A_check = V[:, check_entries], A[check_entries]
        without = check_rows.iou(A_check, check_rows.softmax(w @ V_check))
        with_tables = check_rows.iou(A_check, check_rows.softmax(_logits(V_check, w_fit, S[:, check_entries].T.tocsr(),
                                                                         len(A_check))))
        if with_tables <= without + s.tie:
            return best
        start = w_fit
    w2 = _fit_ce(V, A, rows, start, s if split is None else replace(s, max_iter=s.refit_iter), S)
    iou2 = rows.iou(A, rows.softmax(_logits(V, w2, S.T.tocsr(), n)))
    if iou2 <= iou + s.tie:
        return best
    return w2, iou2, _learned(kept, w2[m:]), S


def _pair_value(words: WordData, spec: PairSpec, query: dict[str, float], key: dict[str, float]) -> np.ndarray:
    """float64 [E]: ``where * query(q) * key(k)`` at every entry."""
    return words.mask(spec.where) * words.table_values("q", query) * words.table_values("k", key)


def _fit_pair(V: np.ndarray, A: np.ndarray, rows: _Rows, w: np.ndarray, iou: float, S, words: WordData,
              spec: PairSpec, s: SoftmaxSettings) -> tuple[np.ndarray, np.ndarray, float, "LearnedPair | None"]:
    """One word-pair table fitted on top of the terms V (weights ``w[:len(V)]``) and the word
    indicators S (weights after them): the rank-1 direction of the cross-entropy gradient over
    frequent (query word, key word) pairs gives the query side, ``pair_rounds`` alternating
    convex fits of the key side and the query side may follow, then the key side is fitted
    with the query side fixed; each table keeps its ``lexicon_entries`` largest words.  While a
    side is fitted (with the terms) the word tables' logits are held fixed, an offset, so each
    step reads the side's few hundred columns rather than every table's; the pair's column
    is then fitted jointly with everything.  (On every 10th head of the sentence run: the
    same held-out IoU as refitting the tables in every step, the side fits in about half the time.)
    Returns (V with the pair's column appended, weights [terms, pair, words], IoU, pair) or
    the arguments unchanged (V, w, iou, None) when the pair does not raise the IoU by more
    than ``tie``."""
    n, m = len(A), len(V)
    unchanged = (V, w, iou, None)  # the side fits below refit w too: a rejected pair must not leave that behind
    mask = words.mask(spec.where)
    q_cands = words.candidates(LexiconSpec(spec.query_name, "q"), s)
    k_cands = words.candidates(LexiconSpec(spec.key_name, "k"), s)
    if not q_cands or not k_cands or not mask.any():
        return unchanged
    St = None if S is None else S.T.tocsr()
    residual = (rows.softmax(_logits(V, w, St, n)) - A) * mask

    qpos, kpos = words.positions(words.q_word, q_cands), words.positions(words.k_word, k_cands)
    both = mask & (qpos >= 0) & (kpos >= 0)
    gradient = np.zeros((len(q_cands), len(k_cands)))
    np.add.at(gradient, (qpos[both], kpos[both]), residual[both])
    u = np.linalg.svd(-gradient, full_matrices=False)[0]
    query = dict(zip(q_cands, u[:, 0]))
    key: dict[str, float] = dict(zip(k_cands, np.zeros(len(k_cands))))
    words_logits = None if St is None else St @ w[m:]  # the word tables' logits, held fixed while a side is fitted
    quick = replace(s, max_iter=s.lexicon_rank_iter)

    def fit_side(side: str, cands: Sequence[str], other: np.ndarray, start: np.ndarray, settings) -> np.ndarray:
        nonlocal w
        C = words.scaled_columns(side, cands, spec.where, other)
        out = _fit_ce(V, A, rows, np.concatenate([w[:m], start]), settings, C, offset=words_logits)
        w = np.concatenate([out[:m], w[m:]])
        return out[m:]

    for _ in range(s.pair_rounds):
        b = fit_side("k", k_cands, words.table_values("q", query), np.asarray(list(key.values())), quick)
        key = dict(zip(k_cands, b))
        a = fit_side("q", q_cands, words.table_values("k", key), np.asarray(list(query.values())), quick)
        query = dict(zip(q_cands, a))
    top = max(abs(x) for x in query.values())
    if top <= 0:
        return unchanged
    query = {word: x / top for word, x in query.items()}  # queries in [-1, 1]; the key side holds the logits
    query = _largest(query, s.lexicon_entries, MIN_WORD_WEIGHT)
    if not query:
        return unchanged
    k_keep = list(_largest({wd: x * top for wd, x in key.items()}, s.lexicon_entries, 0.0)) or list(k_cands)
    b = fit_side("k", k_keep, words.table_values("q", query), np.asarray([key[wd] * top for wd in k_keep]),
                 s if s.pair_rounds else quick)
    key = _largest(dict(zip(k_keep, b)), s.lexicon_entries, MIN_WORD_WEIGHT)
    if not key:
        return unchanged
    column = _pair_value(words, spec, query, key)
    V2 = np.vstack([V, column[None, :]])
    w2 = _fit_ce(V2, A, rows, np.concatenate([w[:m], [1.0], w[m:]]), replace(s, max_iter=s.refit_iter), S)
    iou2 = rows.iou(A, rows.softmax(_logits(V2, w2, St, n)))
    if iou2 <= iou + s.tie:
        return unchanged
    pair = LearnedPair(spec, tuple(query.items()), tuple(key.items()))
    return V2, w2, iou2, pair


def _largest(table: dict[str, float], entries: int, floor: float) -> dict[str, float]:
    """The ``entries`` words of largest |weight| (at least ``floor``), by decreasing |weight|."""
    ranked = sorted(table.items(), key=lambda item: (-abs(item[1]), item[0]))
    return {word: float(x) for word, x in ranked[:entries] if abs(x) >= floor and abs(x) > 0}


def _fit_pairs(V: np.ndarray, A: np.ndarray, rows: _Rows, w: np.ndarray, iou: float, S, words: WordData,
               s: SoftmaxSettings) -> tuple[np.ndarray, np.ndarray, float, tuple["LearnedPair", ...]]:
    """Every pair table of ``s.pairs`` in turn, each on top of the ones kept before it; the
    kept pairs' columns follow V, so the weights are [terms, pairs, words]."""
    pairs: list[LearnedPair] = []
    for spec in s.pairs:
        V, w, iou, pair = _fit_pair(V, A, rows, w, iou, S, words, spec, s)
        if pair is not None:
            pairs.append(pair)
    return V, w, iou, tuple(pairs)


def _with_weights(pairs: Sequence["LearnedPair"], weights: Sequence[float]) -> tuple["LearnedPair", ...]:
    return tuple(replace(pair, weight=float(x)) for pair, x in zip(pairs, weights))


def _learned(kept, weights) -> tuple[LearnedLexicon, ...]:
    out, at = [], 0
    for spec, chosen in kept:
        entries = tuple((word, float(x)) for word, x in zip(chosen, weights[at: at + len(chosen)]))
        at += len(chosen)
        out.append(LearnedLexicon(spec, entries))
    return tuple(out)


def fit_softmax(values: np.ndarray, attention: np.ndarray, row_start, row_len, row_seq, two_n,
                settings: SoftmaxSettings = SoftmaxSettings(), candidates: Sequence[int] | None = None,
                words: WordData | None = None, gated: GatedPool | None = None) -> SoftmaxFit:
    """Greedy sparse softmax fit of ``attention`` [E] from pool ``values`` [T, E] (and the
    ``gated`` candidates), with the word tables of ``settings.lexicons`` when ``words``
    describes the same entries."""
    rows = _Rows(row_start, row_len, row_seq, two_n)
    A = np.asarray(attention, dtype=np.float64)
    V_all = np.asarray(values)  # kept in its own dtype (float32 from the search): only chosen rows are widened
    pool = np.arange(len(V_all)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    V_pool = V_all if candidates is None else V_all[pool]
    gate_values = None
    if gated is not None and gated.size:
        gate_values = np.asarray(gated.gates, dtype=V_all.dtype)
        bases = V_all[list(gated.bases)]
    chosen: list[tuple[int, int]] = []  # (pool term, gate or -1)
    w = np.zeros(0)
    p = rows.softmax(np.zeros(len(A)))
    stepwise = replace(settings, max_iter=settings.path_iter)
    path: list[tuple[tuple[tuple[int, int], ...], np.ndarray, float]] = []
    for _ in range(settings.max_terms):
        r = (p - A).astype(V_pool.dtype)
        grad = np.abs(V_pool @ r).astype(np.float64)  # ranks the terms only
        keys = [(int(j), -1) for j in pool]
        if gate_values is not None:  # [G, B]: Σ (Â − A)·gate·base
            grad = np.concatenate([grad, np.abs(gate_values @ (bases * r).T).astype(np.float64).ravel()])
            keys += [(b, g) for g in range(len(gate_values)) for b in gated.bases]
        if chosen:
            taken = set(chosen)
            grad[[i for i, key in enumerate(keys) if key in taken]] = -1.0
        best = int(np.argmax(grad))
        if grad[best] <= 1e-9:
            break
        chosen.append(keys[best])
        V = _columns(V_all, [c for c, _ in chosen], [g for _, g in chosen], gate_values)
        w = _fit_ce(V, A, rows, np.append(w, 0.0), stepwise)
        p = rows.softmax(w @ V)
        path.append((tuple(chosen), w.copy(), rows.iou(A, p)))
    if not path:
        return SoftmaxFit((), (), rows.iou(A, p), ())
    best_iou = max(iou for _, _, iou in path)
    picked, w, iou = next(item for item in path if item[2] >= best_iou - settings.tie)
    specs = tuple(c for c, _ in picked)
    gates = tuple(g for _, g in picked) if any(g >= 0 for _, g in picked) else ()
    V = _columns(V_all, specs, gates or [-1] * len(specs), gate_values)
    w = _fit_ce(V, A, rows, w, settings)  # the chosen terms, fitted to convergence
    iou = rows.iou(A, rows.softmax(w @ V))
    lexicons: tuple[LearnedLexicon, ...] = ()
    S = None
    if (settings.lexicons or settings.tag_pairs) and words is not None:
        w, iou, lexicons, S = _fit_lexicons(V, A, rows, w, iou, words, settings)
    pairs: tuple[LearnedPair, ...] = ()
    if settings.pairs and words is not None:
        V, w, iou, pairs = _fit_pairs(V, A, rows, w, iou, S, words, settings)
    if settings.refine_iou:
        refined = _refine_iou(V, A, rows, w, settings, S)
        refined_iou = rows.iou(A, rows.softmax(_logits(V, refined, None if S is None else S.T.tocsr(), len(A))))
        if refined_iou > iou:
            w, iou = refined, refined_iou
    m, at = len(specs), len(specs) + len(pairs)
    lexicons = _learned([(lex.spec, [word for word, _ in lex.entries]) for lex in lexicons], w[at:]) if lexicons else ()
    return SoftmaxFit(specs, tuple(float(x) for x in w[:m]), iou, tuple(i for _, _, i in path), lexicons, gates,
                      _with_weights(pairs, w[m:at]))


def refit(values: np.ndarray, attention: np.ndarray, row_start, row_len, row_seq, two_n, fit: SoftmaxFit,
          settings: SoftmaxSettings = SoftmaxSettings(), words: WordData | None = None,
          learn_lexicons: bool = False, gates: np.ndarray | None = None) -> SoftmaxFit:
    """The same terms (and word tables, on ``words``), weights fitted again on other data
    (e.g. every synthesis sequence).  With ``learn_lexicons`` the word tables of
    ``settings.lexicons`` are learned here, on this data, instead of kept from ``fit``: the
    term selection can run on a small screening set while the tables, which need many
    occurrences of each word, see every sequence.  ``gates`` [G, E]: the gates of these
    entries, needed when ``fit`` has gated terms."""
    if not fit.specs:
        return fit
    rows = _Rows(row_start, row_len, row_seq, two_n)
    A = np.asarray(attention, dtype=np.float64)
    if fit.gates and gates is None:
        raise ValueError("the fit has gated terms: pass the gates of these entries")
    V = _columns(values, fit.specs, fit.gates or [-1] * len(fit.specs), gates)
    learn = learn_lexicons and bool(settings.lexicons or settings.pairs or settings.tag_pairs) and words is not None
    lexicons = fit.lexicons if words is not None and not learn else ()
    pairs = fit.pairs if words is not None and not learn else ()
    if pairs:  # kept tables: each pair is one column, its weight refitted
        V = np.vstack([V] + [_pair_value(words, p.spec, dict(p.query), dict(p.key))[None, :] for p in pairs])
    kept = [(lex.spec, [word for word, _ in lex.entries]) for lex in lexicons]
    S = _stack([words.any_columns(spec, chosen) for spec, chosen in kept]) if kept else None
    start = np.concatenate([np.asarray(fit.weights), [p.weight for p in pairs]]
                           + [np.asarray([x for _, x in lex.entries]) for lex in lexicons])
    warm = replace(settings, max_iter=settings.refit_iter)
    w = _fit_ce(V, A, rows, start, warm, S)
    iou = rows.iou(A, rows.softmax(_logits(V, w, None if S is None else S.T.tocsr(), len(A))))
    if learn:
        if settings.lexicons or settings.tag_pairs:
            w, iou, learned, S = _fit_lexicons(V, A, rows, w, iou, words, settings)
            kept = [(lex.spec, [word for word, _ in lex.entries]) for lex in learned]
        if settings.pairs:
            V, w, iou, pairs = _fit_pairs(V, A, rows, w, iou, S, words, settings)
    St = None if S is None else S.T.tocsr()
    if settings.refine_iou:
        refined = _refine_iou(V, A, rows, w, warm, S)
        refined_iou = rows.iou(A, rows.softmax(_logits(V, refined, St, len(A))))
        if refined_iou > iou:
            w, iou = refined, refined_iou
    m, at = len(fit.specs), len(fit.specs) + len(pairs)
    return SoftmaxFit(fit.specs, tuple(float(x) for x in w[:m]), iou, fit.path_iou, _learned(kept, w[at:]) if kept else (),
                      fit.gates, _with_weights(pairs, w[m:at]))


def _table_name(tag: str, role: str, spec: TagPairSpec, taken: set[str]) -> str:
    """A lexicon name, unique among ``taken``: the key words a query tag reads (``noun_reads``), or
    the query words that read a key tag (``noun_readers``)."""
    import re

    stem = re.sub(r"[^a-z0-9]+", "_", tag.lower()).strip("_") or "tag"
    feature = spec.key_feature if role == "readers" else spec.query_feature
    name = f"{stem}_{role}" if feature == "upos" else f"{feature}_{stem}_{role}"
    if name[0].isdigit():
        name = f"t_{name}"
    out, n = name, 2
    while out in taken:
        out, n = f"{name}{n}", n + 1
    return out


def _round_sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}") if x else 0.0


def softmax_source(name: str, specs_text: Sequence[str], weights: Sequence[float], scales: Sequence[float],
                   lexicons: Sequence[LearnedLexicon] = (), pairs: Sequence[LearnedPair] = ()) -> str:
    """Canonical ``.attn`` source of a softmax fit (terms by decreasing |weight|, then one term
    per word table, then the tag-pair tables, then one term per word-pair table)."""
    return softmax_program(name, specs_text, weights, scales, lexicons, pairs)[0]


def softmax_program(name: str, specs_text: Sequence[str], weights: Sequence[float], scales: Sequence[float],
                    lexicons: Sequence[LearnedLexicon] = (), pairs: Sequence[LearnedPair] = ()) -> tuple[str, ir.Program]:
    """`softmax_source` and its IR (what compiling that source gives: the source is parsed once here,
    and a program with its tables takes about a tenth of a second to parse)."""
    from attndsl.language.parser import parse
    from attndsl.language.printer import format_module, format_number, format_string
    from attndsl.errors import AttnError
    from attndsl.language.validate import check
    from attndsl.synthesis.search.pool import needs_syntax

    printed = [(_round_sig(w * sc), text) for w, sc, text in zip(weights, scales, specs_text)]
    printed = [(w, text) for w, text in printed if w != 0.0]
    printed.sort(key=lambda item: -abs(item[0]))
    def declaration(name: str, entries) -> str:
        rows = ",\n        ".join(f"{format_string(word)}: {format_number(x)}" for word, x in entries)
        return f"lexicon {name} {{\n        {rows}\n    }}"

    declarations = []
    for lexicon in [lex for lex in lexicons if not isinstance(lex.spec, TagPairSpec)]:
        entries = [(word, _round_sig(x, 2)) for word, x in lexicon.entries]
        entries = sorted([(word, x) for word, x in entries if abs(x) >= MIN_WORD_WEIGHT], key=lambda e: -abs(e[1]))
        if not entries:
            continue
        declarations.append(declaration(lexicon.spec.name, entries))
        where = f"{lexicon.spec.where} * " if lexicon.spec.where else ""
        printed.append((1.0, f"{where}{lexicon.spec.name}({lexicon.spec.side})"))
    names = {lexicon.spec.name for lexicon in lexicons if isinstance(lexicon.spec, LexiconSpec)}
    names |= {table for pair in pairs for table in (pair.spec.query_name, pair.spec.key_name)}
    for lexicon in [lex for lex in lexicons if isinstance(lex.spec, TagPairSpec)]:
        spec = lexicon.spec
        terms = [(_round_sig(x, 2), a, b) for (a, b), x in lexicon.entries]
        terms = sorted([t for t in terms if abs(t[0]) >= MIN_WORD_WEIGHT], key=lambda t: (-abs(t[0]), t[1], t[2]))
        if WORD_FEATURE not in (spec.query_feature, spec.key_feature):
            printed.extend((x, tag_pair_factors(spec, a, b)) for x, a, b in terms)
            continue
        # one word table per tag: ``where * [upos(q) == "NOUN"] * noun_reads(k)`` (or per key tag, read at q)
        by_key = spec.key_feature == WORD_FEATURE
        groups: dict[str, list[tuple[str, float]]] = {}
        for x, a, b in terms:
            tag, word = (a, b) if by_key else (b, a)
            groups.setdefault(tag, []).append((word, x))
        for tag, entries in groups.items():
            if len(declarations) + 2 * len(pairs) >= ir.MAX_LEXICONS:  # no room for another table: a term a pair
                printed.extend((x, tag_pair_factors(spec, *((tag, word) if by_key else (word, tag))))
                               for word, x in entries)
                continue
            table = _table_name(tag, "reads" if by_key else "readers", spec, names)
            names.add(table)
            declarations.append(declaration(table, entries))
            side, other = ("q", "k") if by_key else ("k", "q")
            feature = spec.query_feature if by_key else spec.key_feature
            printed.append((1.0, f"{spec.where} * [{feature}({side}) == {format_string(tag)}] * {table}({other})"))
    for pair in pairs:
        weight = _round_sig(pair.weight)
        tables = [(pair.spec.query_name, pair.query), (pair.spec.key_name, pair.key)]
        tables = [(table, [(word, _round_sig(x, 2)) for word, x in entries]) for table, entries in tables]
        tables = [(table, [(word, x) for word, x in entries if x != 0.0]) for table, entries in tables]
        if weight == 0.0 or not all(entries for _, entries in tables):
            continue
        declarations.extend(declaration(table, entries) for table, entries in tables)
        printed.append((weight, f"{pair.spec.where} * {pair.spec.query_name}(q) * {pair.spec.key_name}(k)"))
    if not printed:
        printed = [(1.0, "")]
    lines = []
    for i, (w, text) in enumerate(printed):
        body = format_number(abs(w)) + (f" * {text}" if text else "")
        sign = "-" if w < 0 else ("" if i == 0 else "+")
        lines.append(f"{sign} {body}".strip() if i else f"{sign}{body}")
    if any(needs_syntax(text) for _, text in printed):
        declarations.insert(0, "uses syntax")
    head = "".join(f"    {d}\n" for d in ["combine softmax", *declarations])
    source = f"program {name} {{\n{head}    " + "\n    ".join(lines) + "\n}\n"
    module = parse(source, f"<{name}>")
    programs, problems = check(module, source)
    if problems:  # must validate
        raise AttnError(problems)
    return format_module(module), programs[0]
