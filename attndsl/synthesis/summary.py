"""Head summaries: what one attention head does, as text an LLM can read.

Following the paper, a summary shows the head's highest-weight (query, key)
token pairs — the top ``top_fraction`` (about 2.5 %) of the causal entries of
the synthesis sequences — grouped in weight bands, each pair with its tokens,
positions, distance and a little context.  Beside them it gives statistics that
point at the usual mechanisms: mass on the first token (the attention sink), on
the current and previous token, mean distance, entropy, mass on punctuation,
on earlier copies of the query token and on the token after an earlier copy
(induction), and the key tokens that attract the most mass.  Two additions
make it more telling for small models: the soft IoU that the simplest fixed
patterns (all on key 0, previous token, current token, uniform) reach on the
same sequences — the score to beat, and a direct hint of the mechanism — and
how the non-sink mass spreads over distances.

`HeadSummary.render(max_chars)` re-renders the text within a character
budget, trimming the least informative parts first: example pairs of the
weakest bands, then of the strongest, then the key-token list.  Statistics,
the pattern scores and the band counts are always kept.

The input is deliberately plain — a list of (token table, n×n attention
matrix) for one head — so the summary does not depend on how attention is
stored.  Rows q = 0 are skipped in every statistic: their only key is k = 0.

Why this module is over 400 lines: the statistics and their budgeted rendering
are one unit — `render` trims by the same bands and lists the statistics
produce.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np

from attndsl.extraction.features import TokenTable

#: weight bands for the top pairs, highest first (lower bound inclusive)
BAND_EDGES = (1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.0)
_MAX_TOKEN_CHARS = 14


@dataclass(frozen=True)
class PairExample:
    """One high-weight entry A[q, k] of one sequence."""

    sequence: int
    query: int
    key: int
    weight: float
    query_token: str
    key_token: str
    context: str


@dataclass(frozen=True)
class Band:
    """The top pairs whose weight lies in [low, high)."""

    low: float
    high: float
    count: int
    count_on_first: int  # pairs whose key is position 0
    examples: tuple[PairExample, ...]


@dataclass(frozen=True)
class KeyToken:
    """A key token text and the share of the head's non-sink mass it receives."""

    token: str
    share: float  # of all mass on keys k >= 1
    lift: float  # share / the token's share of causal (q, k >= 1) pairs
    occurrences: int


@dataclass(frozen=True)
class HeadSummary:
    layer: int
    head: int
    n_sequences: int
    n_tokens: int
    n_rows: int  # query rows the statistics average over (q >= 1)
    n_top_pairs: int
    stats: dict[str, float]
    bands: tuple[Band, ...]
    top_keys: tuple[KeyToken, ...]
    text: str

    def as_dict(self) -> dict:
        return asdict(self)

    def render(self, max_chars: int | None = None) -> str:
        """The summary text within ``max_chars`` characters when it can be (see the module docstring)."""
        return fit_text(self, max_chars)


#: statistic name → the sentence that explains it in the text
_STAT_LINES = {
    "mass_first": "mass on key 0 (the sink)",
    "mass_self": "mass on k = q (itself)",
    "mass_previous": "mass on k = q-1 (previous token)",
    "mean_distance": "mean distance d = q-k",
    "mean_distance_no_first": "mean d ignoring key 0",
    "entropy": "row entropy (nats)",
    "entropy_normalised": "entropy / log(q+1) (1 = uniform)",
    "punct_share": "non-sink mass on punctuation keys",
    "punct_base_rate": "keys that are punctuation (base rate)",
    "mass_same_token": "mass on earlier copies of the query token (rows that have one)",
    "mass_induction": "mass where tok(k-1) == tok(q), induction (rows that have one)",
    "mass_same_word": "mass on earlier tokens of the query's word",
    "mass_same_sentence": "mass on keys in the query's sentence",
}

#: fixed patterns whose soft IoU the summary reports (statistic name → label)
_PATTERN_LINES = {
    "iou_sink": "all on key 0",
    "iou_previous": "previous token (self at q = 0)",
    "iou_self": "current token",
    "iou_uniform": "uniform over k <= q",
}

#: distance bins of the non-sink mass (statistic name → label)
_DISTANCE_BINS = (("dist_0", "d=0", 0, 0), ("dist_1", "d=1", 1, 1), ("dist_2", "d=2", 2, 2),
                  ("dist_3_4", "d=3-4", 3, 4), ("dist_5_8", "d=5-8", 5, 8), ("dist_9", "d>=9", 9, 1 << 30))


def summarize_head(
    examples: Sequence[tuple[TokenTable, np.ndarray]],
    layer: int,
    head: int,
    top_fraction: float = 0.025,
    max_pairs: int = 24,
    max_chars: int = 2200,
    n_top_keys: int = 8,
) -> HeadSummary:
    """Summarise one head from its attention on synthesis sequences.

    ``examples`` holds, per sequence, the token table and the head's n×n
    attention matrix (causal, row-stochastic).  The text stays under about
    ``max_chars`` characters by showing fewer example pairs when needed.
    """
    if not 0 < top_fraction <= 1:
        raise ValueError("top_fraction must be in (0, 1]")
    tables, matrices = [], []
    for i, (table, attention) in enumerate(examples):
        a = np.asarray(attention, dtype=np.float64)
        n = len(table)
        if a.shape != (n, n):
            raise ValueError(f"sequence {i}: attention has shape {a.shape}, token table has {n} tokens")
        tables.append(table)
        matrices.append(np.tril(np.nan_to_num(a, nan=0.0)))

    stats, n_rows = _statistics(tables, matrices)
    top_keys = _top_keys(tables, matrices, n_top_keys)
    pairs = _top_pairs(matrices, top_fraction)
    n_tokens = sum(len(t) for t in tables)

    bands = _bands(pairs, tables, max_pairs)
    summary = HeadSummary(layer, head, len(tables), n_tokens, n_rows, len(pairs), stats, bands, top_keys, "")
    return replace(summary, text=fit_text(summary, max_chars))


# ------------------------------------------------------------------ statistics


def _statistics(tables: list[TokenTable], matrices: list[np.ndarray]) -> tuple[dict[str, float], int]:
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def add(name: str, values: np.ndarray) -> None:
        sums[name] += float(np.sum(values))
        counts[name] += int(np.size(values))

    n_rows = 0
    punct_keys = all_keys = 0
    for table, a in zip(tables, matrices):
        n = len(table)
        if n < 2:
            continue
        rows = np.arange(1, n)
        n_rows += len(rows)
        body = a[1:]  # rows q >= 1
        q = rows[:, None]
        k = np.arange(n)[None, :]
        causal = k <= q
        add("mass_first", body[:, 0])
        add("mass_self", body[np.arange(n - 1), rows])
        add("mass_previous", body[np.arange(n - 1), rows - 1])
        dist = np.where(causal, q - k, 0)
        add("mean_distance", np.sum(body * dist, axis=1))
        rest = body[:, 1:].sum(axis=1)
        ok = rest > 1e-9
        if ok.any():
            add("mean_distance_no_first", np.sum(body[:, 1:] * dist[:, 1:], axis=1)[ok] / rest[ok])
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.sum(np.where(body > 0, body * np.log(body), 0.0), axis=1)
        add("entropy", ent)
        add("entropy_normalised", ent / np.log(rows + 1))
        punct = np.asarray(table.punct, dtype=bool)
        if ok.any():
            add("punct_share", (body[:, 1:] * punct[None, 1:]).sum(axis=1)[ok] / rest[ok])
        punct_keys += int(np.sum(np.where(causal[:, 1:], punct[None, 1:], False)))
        all_keys += int(np.sum(causal[:, 1:]))

        ids = np.asarray(table.token_id)
        same = (ids[None, :] == ids[rows][:, None]) & (k < q)
        has = same.any(axis=1)
        if has.any():
            add("mass_same_token", np.sum(body * same, axis=1)[has])
        prev_ids = np.concatenate([[-1], ids[:-1]])  # tok(k-1), padding at k = 0
        induct = (prev_ids[None, :] == ids[rows][:, None]) & (k >= 1) & (k <= q)
        has = induct.any(axis=1)
        if has.any():
            add("mass_induction", np.sum(body * induct, axis=1)[has])
        word = np.asarray(table.word)
        same_word = (word[None, :] == word[rows][:, None]) & (k < q)
        has = same_word.any(axis=1)
        if has.any():
            add("mass_same_word", np.sum(body * same_word, axis=1)[has])
        sent = np.asarray(table.sent)
        add("mass_same_sentence", np.sum(body * ((sent[None, :] == sent[rows][:, None]) & causal), axis=1))

        # soft IoU of fixed patterns on this sequence (all rows, q = 0 included), as the scorer defines it
        full = np.arange(n)
        for name, target in (("iou_sink", np.zeros(n, dtype=np.int64)),
                             ("iou_previous", np.maximum(full - 1, 0)), ("iou_self", full)):
            low = float(a[full, target].sum())
            add(name, np.array([low / (2 * n - low)]))
        uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
        low = float(np.minimum(a, uniform).sum())
        add("iou_uniform", np.array([low / (2 * n - low)]))
        if ok.any():
            for name, _, lo, hi in _DISTANCE_BINS:
                in_bin = causal & (dist >= lo) & (dist <= hi) & (k >= 1)
                add(name, (body * in_bin).sum(axis=1)[ok] / rest[ok])

    names = list(_STAT_LINES) + list(_PATTERN_LINES) + [b[0] for b in _DISTANCE_BINS]
    stats = {name: (sums[name] / counts[name] if counts[name] else float("nan")) for name in names}
    stats["punct_base_rate"] = punct_keys / all_keys if all_keys else float("nan")
    stats["rows_with_earlier_copy"] = float(counts["mass_same_token"])
    stats["rows_with_induction_key"] = float(counts["mass_induction"])
    return stats, n_rows


def _top_keys(tables: list[TokenTable], matrices: list[np.ndarray], limit: int) -> tuple[KeyToken, ...]:
    """Key token texts ranked by the non-sink mass they receive (rows q >= 1)."""
    mass: dict[str, float] = defaultdict(float)
    pairs: dict[str, int] = defaultdict(int)
    occurrences: dict[str, int] = defaultdict(int)
    for table, a in zip(tables, matrices):
        n = len(table)
        if n < 2:
            continue
        received = a[1:, 1:].sum(axis=0)  # key k >= 1 over rows q >= 1
        as_key = n - np.arange(1, n)  # rows q >= k that can see key k
        for k in range(1, n):
            token = table.tok[k]
            mass[token] += float(received[k - 1])
            pairs[token] += int(as_key[k - 1])
            occurrences[token] += 1
    total_mass = sum(mass.values())
    total_pairs = sum(pairs.values())
    if total_mass <= 0 or total_pairs == 0:
        return ()
    ranked = sorted(mass, key=lambda t: (-mass[t], t))[:limit]
    out = []
    for token in ranked:
        share = mass[token] / total_mass
        base = pairs[token] / total_pairs
        out.append(KeyToken(token, share, share / base if base else float("nan"), occurrences[token]))
    return tuple(out)


# ------------------------------------------------------------------ top pairs


def _top_pairs(matrices: list[np.ndarray], top_fraction: float) -> list[tuple[float, int, int, int]]:
    """(weight, sequence, q, k) of the highest causal entries in rows q >= 1."""
    weights, where = [], []
    for s, a in enumerate(matrices):
        n = a.shape[0]
        if n < 2:
            continue
        q, k = np.tril_indices(n)
        keep = q >= 1
        q, k = q[keep], k[keep]
        weights.append(a[q, k])
        where.append(np.stack([np.full(len(q), s), q, k], axis=1))
    if not weights:
        return []
    w = np.concatenate(weights)
    idx = np.concatenate(where)
    count = max(1, math.ceil(top_fraction * len(w)))
    chosen = np.argpartition(-w, count - 1)[:count] if count < len(w) else np.arange(len(w))
    # deterministic order: weight descending, then sequence, query, key
    order = sorted(chosen.tolist(), key=lambda i: (-w[i], idx[i, 0], idx[i, 1], idx[i, 2]))
    return [(float(w[i]), int(idx[i, 0]), int(idx[i, 1]), int(idx[i, 2])) for i in order if w[i] > 0]


def _bands(pairs, tables: list[TokenTable], max_pairs: int) -> tuple[Band, ...]:
    grouped: list[list] = [[] for _ in range(len(BAND_EDGES) - 1)]
    for pair in pairs:
        weight = pair[0]
        for b in range(len(BAND_EDGES) - 1):
            if weight >= BAND_EDGES[b + 1]:
                grouped[b].append(pair)
                break
    # examples per band ∝ sqrt(pairs in it): the few strongest pairs stay visible
    total = sum(math.sqrt(len(g)) for g in grouped) or 1.0
    bands = []
    for b, group in enumerate(grouped):
        if not group:
            continue
        budget = max(3, round(max_pairs * math.sqrt(len(group)) / total))
        chosen = _diverse(_distinct(group, tables), budget)
        examples = tuple(_example(tables, s, q, k, w) for w, s, q, k in chosen)
        high = BAND_EDGES[b]
        bands.append(Band(BAND_EDGES[b + 1], high, len(group), sum(1 for p in group if p[3] == 0), examples))
    return tuple(bands)


def _distinct(group: list, tables: list[TokenTable]) -> list:
    """Drop pairs that look the same as one already kept.

    Stories often open alike ("Once upon a time"), so the same pair at the
    same positions with the same neighbours recurs; showing it twice wastes
    the prompt.
    """
    seen, out = set(), []
    for pair in group:
        _, s, q, k = pair
        toks = tables[s].tok
        signature = (q, k, tuple(toks[max(k - 2, 0): k + 2]), tuple(toks[max(q - 2, 0): q + 1]))
        if signature not in seen:
            seen.add(signature)
            out.append(pair)
    return out


def _diverse(group: list, budget: int) -> list:
    """Pick examples spread over sequences, mostly with keys other than 0.

    Pairs on key 0 are all alike; one or two of them show the pattern, the
    rest of the budget goes to pairs that show structure.  Sequences are visited round-robin
    so one long sequence cannot fill a band.
    """
    first = [p for p in group if p[3] == 0][:2]
    others = [p for p in group if p[3] != 0]
    by_sequence: dict[int, list] = defaultdict(list)
    for p in others:
        by_sequence[p[1]].append(p)
    picked: list = []
    queues = [by_sequence[s] for s in sorted(by_sequence)]
    limit = budget - min(len(first), max(1, budget // 4) if others else budget)
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    picked.extend(first[: budget - len(picked)])
    return sorted(picked, key=lambda p: (-p[0], p[1], p[2], p[3]))


def show_token(token: str, limit: int = _MAX_TOKEN_CHARS) -> str:
    """A token as a short quoted literal (newlines and tabs escaped)."""
    text = token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace('"', '\\"')
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f'"{text}"'


def _plain(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t")[:_MAX_TOKEN_CHARS]


def _example(tables: list[TokenTable], s: int, q: int, k: int, w: float) -> PairExample:
    toks = tables[s].tok

    def span(lo: int, hi: int) -> list[str]:
        out = []
        for i in range(max(lo, 0), hi + 1):
            piece = _plain(toks[i])
            if i == k and i == q:
                piece = f"[«{piece}»]"
            elif i == k:
                piece = f"[{piece}]"
            elif i == q:
                piece = f"«{piece}»"
            out.append(piece)
        return out

    if q - k <= 6:
        context = " ".join(span(k - 2, q))
    else:
        context = " ".join(span(k - 2, k + 1)) + " … " + " ".join(span(q - 2, q))
    if k > 2:
        context = "… " + context
    return PairExample(s, q, k, w, toks[q], toks[k], context)


# ------------------------------------------------------------------ text


def fit_text(summary: HeadSummary, max_chars: int | None = None) -> str:
    """Render ``summary`` within ``max_chars``, dropping the least informative parts first.

    Order: example pairs of the weakest band first (each band keeps its
    strongest example as long as possible), then the key-token list (down to
    three tokens, then none), then the last example of every band.  What is
    left when even that does not fit is returned as is (statistics and band
    counts are never cut), so callers must budget for it.
    """
    shown = [len(b.examples) for b in summary.bands]
    n_keys = len(summary.top_keys)
    text = _render(summary, shown, n_keys)
    if max_chars is None:
        return text
    while len(text) > max_chars:
        band = next((i for i in range(len(shown) - 1, -1, -1) if shown[i] > 1), None)
        if band is not None:
            shown[band] -= 1
        elif n_keys > 3:
            n_keys = 3
        elif n_keys:
            n_keys = 0
        elif any(shown):
            shown[max(i for i, c in enumerate(shown) if c)] = 0
        else:
            break
        text = _render(summary, shown, n_keys)
    return text


def _render(summary: HeadSummary, shown: Sequence[int] | None = None, n_keys: int | None = None) -> str:
    s = summary.stats
    shown = [len(b.examples) for b in summary.bands] if shown is None else shown
    n_keys = len(summary.top_keys) if n_keys is None else n_keys
    lines = [
        f"Layer {summary.layer}, head {summary.head}: attention on {summary.n_sequences} sequences, "
        f"{summary.n_tokens} tokens ({summary.n_rows} query rows, q >= 1).",
        "",
        "Statistics (means over query rows q >= 1):",
    ]
    for name, label in _STAT_LINES.items():
        value = s.get(name, float("nan"))
        if math.isnan(value):
            continue
        extra = ""
        if name == "mass_same_token":
            extra = f" [{int(s['rows_with_earlier_copy'])} rows]"
        elif name == "mass_induction":
            extra = f" [{int(s['rows_with_induction_key'])} rows]"
        lines.append(f"- {label}: {value:.3f}{extra}")
    patterns = [(label, s.get(name, float("nan"))) for name, label in _PATTERN_LINES.items()]
    patterns = [(label, value) for label, value in patterns if not math.isnan(value)]
    if patterns:
        lines.append("Soft IoU of fixed patterns on these sequences (1 = perfect; a good program beats the best one):")
        lines.append("  " + "; ".join(f"{label} {value:.3f}" for label, value in patterns))
    bins = [(label, s.get(name, float("nan"))) for name, label, _, _ in _DISTANCE_BINS]
    if not any(math.isnan(v) for _, v in bins):
        lines.append("Non-sink mass by distance d = q-k: " + ", ".join(f"{label} {v:.2f}" for label, v in bins))
    if summary.top_keys and n_keys:
        lines.append("")
        lines.append("Key tokens receiving the most non-sink mass (share of that mass; lift = share / how often the token is a key):")
        lines.append(
            "  " + ", ".join(f"{show_token(kt.token)} {kt.share:.2f} (lift {kt.lift:.1f})"
                             for kt in summary.top_keys[:n_keys])
        )
    lines.append("")
    lines.append(
        f"Top {summary.n_top_pairs} (query, key) pairs by weight, by band. Format: weight  q=POS QUERY <- k=POS KEY (d=q-k) | "
        "context with [key] and «query»:"
    )
    for band, n_shown in zip(summary.bands, shown):
        sink = f", {band.count_on_first} on key 0" if band.count_on_first else ""
        lines.append(f"weight {band.low:.1f}-{band.high:.1f}: {band.count} pairs{sink}")
        for ex in band.examples[:n_shown]:
            lines.append(
                f"  {ex.weight:.2f}  q={ex.query} {show_token(ex.query_token)} <- k={ex.key} {show_token(ex.key_token)} "
                f"(d={ex.query - ex.key}) | {ex.context}"
            )
    return "\n".join(lines)
