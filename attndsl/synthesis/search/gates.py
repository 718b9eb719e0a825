"""Head gates: token sets made for one head from its own attention.

`head_gates` finds the query tokens after which a head visits the sink, itself
or the previous token clearly more than on average, and the key tokens it
prefers; each becomes a `HeadGate` (``lower(q|k) in {...}``) that the greedy
fit tries on the pool terms it was made for and on the terms already chosen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attndsl.synthesis.search.data import SearchData
from attndsl.synthesis.search.pool import _quote


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
