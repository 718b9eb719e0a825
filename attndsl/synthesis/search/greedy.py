"""Greedy fitting of one head, and the search over many heads.

`_HeadFit` holds one head's program on one `SearchData` (its components,
weights, the summed score and the objective's per-row and per-sequence sums)
and implements the greedy step (screen every candidate at several mixing
fractions in one objective-kernel pass, `attndsl.kernels.objective`) and the
coordinate-ascent refinement; `search_head` runs it on the screening
subsample, refines on all synthesis sequences and adds the short and softmax
variants; `search_heads` prepares the data once and searches each head.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from attndsl.extraction.features import TokenTable
from attndsl.kernels.objective import base_mins, screen_candidates
from attndsl.synthesis.scoring import soft_iou_from_sums
from attndsl.synthesis.library import SHORT_MAX_ENTRIES, SHORT_MAX_TERMS
from attndsl.synthesis.search.data import Component, SearchData, attention_block, prepare
from attndsl.synthesis.search.gates import HeadGate, head_gates
from attndsl.synthesis.search.pool import gate_conditions, term_pool
from attndsl.synthesis.search.pool import gated as gated_spec
from attndsl.synthesis.search.printing import program_source
from attndsl.headnames import head_file_stem

if TYPE_CHECKING:
    from attndsl.language import ir


#: causal entries of one 64-token sequence
_ENTRIES_64 = 64 * 65 // 2
SCREEN_ENTRIES = 96 * _ENTRIES_64
#: the screening budget beyond `BUDGET_TOKENS` tokens, before `entries_budget` scales it by 64 / longest:
#: three quarters of `SCREEN_ENTRIES`, so that 256-token synthesis of SmolLM2's 270 heads fits 5 minutes
#: on two cores (3 min 18 s – 4 min 19 s, held-out IoU 0.545; the whole budget: 5 min 34 s, 0.548)
LONG_SCREEN_ENTRIES = 72 * _ENTRIES_64
FULL_ENTRIES = 352 * _ENTRIES_64
#: the longest sequences the default budgets are sized for (longer ones scale them down)
BUDGET_TOKENS = 64
#: the share of the program's mass a candidate term may take, tried at each greedy step
FRACTIONS = (0.03, 0.08, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95)
#: the shares tried beyond `BUDGET_TOKENS` tokens (`SearchSettings.resolved_for`)
LONG_FRACTIONS = (0.05, 0.2, 0.5, 0.9)


def running_text(tables) -> bool:
    """Whether most of these sequences hold more than one sentence (text packed from several
    sentences, as against one sentence a sequence, where a stray sentence break is rare)."""
    tables = list(tables)
    several = sum(1 for t in tables if len(t) and int(np.max(t.sent)) > 0)
    return 2 * several > len(tables)


def entries_budget(budget: int | None, default: int, lengths) -> int:
    """The causal entries a search set may hold: ``budget`` when one is given, else ``default``
    while every sequence has at most `BUDGET_TOKENS` tokens, and ``default · 64 / longest``
    beyond (for long sequences).

    Why scale: the search's time per head grows with the entries it screens (at 256 tokens the
    unscaled budget cost about 5 s per head, 22 minutes for SmolLM2's 270 heads), so long
    sequences get a budget of the same number of rows of the longest length as 64-token
    sequences get 64-token rows; rows stay whole
    (`attndsl.synthesis.search.data.row_subsample`).  Runs of ≤ 64-token sequences are untouched."""
    if budget is not None:
        return int(budget)
    longest = int(max(lengths, default=0))
    if longest <= BUDGET_TOKENS:
        return default
    return max(1, default * BUDGET_TOKENS // longest)


def screen_budget(budget: int | None, lengths) -> int:
    """The screening set's causal entries: ``budget`` when one is given, else `entries_budget` of
    `SCREEN_ENTRIES`, or of `LONG_SCREEN_ENTRIES` when a sequence has more than `BUDGET_TOKENS` tokens."""
    long = int(max(lengths, default=0)) > BUDGET_TOKENS
    return entries_budget(budget, LONG_SCREEN_ENTRIES if long else SCREEN_ENTRIES, lengths)


@dataclass(frozen=True)
class SearchSettings:
    """What decides the search's results (recorded in the run manifest)."""

    max_terms: int = 8
    min_gain: float = 0.001
    screen_sequences: int = 96  # synthesis sequences the greedy screening runs on
    fractions: tuple[float, ...] = FRACTIONS  # `LONG_FRACTIONS` beyond `BUDGET_TOKENS` tokens (`resolved_for`)
    shortlist: int = 48  # pool terms re-screened after a full screen (lazy greedy)
    full_screen_every: int = 3  # steps between full screens of the pool
    refine_steps: tuple[float, ...] = (0.0, 0.5, 0.75, 1.33, 2.0)
    refine_rounds: int = 2
    use_gates: bool = True
    n_words: int = 16
    seed: int = 0
    softmax_terms: int = 24  # > 0: also fit a `combine softmax` program with at most this many terms (0: off)
    #: word tables the softmax fit may learn (`attndsl.synthesis.softmax_fit.LEXICONS`) and their size (on
    #: every 10th head of the sentence run 64 words gave 0.8221 held-out, 128 0.8246, 256 0.8252)
    softmax_lexicons: bool = True
    lexicon_entries: int = 128
    #: word-pair tables (query words × key words, `attndsl.synthesis.softmax_fit.PAIRS`) the softmax fit may
    #: learn; None (the default): `resolved_for` (2 while every sequence has ≤ `BUDGET_TOKENS` tokens and
    #: none carries syntax, else 0: with syntax the tag-pair tables say most of it for less; on every 10th
    #: head of the sentence run, tag-pair tables with word pairs 0.8313 held-out, without 0.8310, and the
    #: softmax fits took 21 s against 13 s)
    word_pairs: int | None = None
    #: the context and query word tables (`attndsl.synthesis.softmax_fit.CONTEXT_LEXICONS`); None (the
    #: default): on while every sequence has ≤ `BUDGET_TOKENS` tokens, off beyond (`resolved_for`)
    context_tables: bool | None = None
    #: (query tag, key tag) pairs each of the softmax program's tag-pair tables keeps at most
    #: (`attndsl.synthesis.softmax_fit.TAG_PAIRS`; a pair of tags is a printed term, and a table with words
    #: on one side keeps twice as many, printed as word tables; 0: none), learned where the sequences carry
    #: syntax; None (the default): `resolved_for` (48 while every sequence has ≤ `BUDGET_TOKENS` tokens,
    #: 96 if the text is also running text, else 0).  On every 10th head of the sentence run (held-out
    #: IoU, word pairs off): 0.8252 without, 0.8280 with the upos × word table alone, 0.8310 with upos × upos and upos × dep beside it, 0.8319
    #: with the default four tables (24 / 32 pairs: 0.8313 / 0.8315); on all 270 heads 0.8212.
    #: On running text (`running_text`), every 10th head of text packed to 64 tokens: 0.7076 held-out
    #: with 48, 0.7096 with 96 (on sentences the 96 cost more time than the 5-minute budget has).
    tag_pair_entries: int | None = None
    #: the tag-pair tables of `attndsl.synthesis.softmax_fit.SENTENCE_TAG_PAIRS` (which kinds of key
    #: each kind of query reads in its own sentence) beside the others; None (the default): on for
    #: running text of ≤ `BUDGET_TOKENS` tokens with syntax (`resolved_for`).  On every 10th head of
    #: text packed to 64 tokens: 0.7076 held-out without, 0.7097 with (0.7077 with upos × upos and
    #: upos × dep replaced by their same-sentence versions instead).
    sentence_tables: bool | None = None
    #: the softmax fit may also use the shared gates on a few base terms
    #: (`attndsl.synthesis.softmax_fit.GATED_BASES`: sink, self, previous tokens, recency)
    softmax_gates: bool = True
    #: softmax fits run at once, beside the search of the next heads (`search_heads`); results do not
    #: depend on it.  None (the default): in worker processes, one per core attndsl may use
    #: (`attndsl.threads.configured`, ``attndsl --threads N``); on threads (`fit_processes` off, or a
    #: platform that does not fork), one, as a second fit thread waits for the GIL (sentence run, all
    #: 270 heads on two cores: 4 min 25 s on one thread, 2 min 54 s in two processes, 3 min 1 s in three)
    softmax_workers: int | None = None
    #: fit in worker processes where the platform forks (`attndsl.synthesis.search.fit_workers`), else on threads
    fit_processes: bool = True
    #: causal entries the screening set may hold; beyond it a seeded subset of whole rows is kept
    #: (`attndsl.synthesis.search.data.row_subsample`).  None (the default): `entries_budget` of
    #: `SCREEN_ENTRIES`, the most a screen of 96 sequences of ≤ 64 tokens holds, so runs of short
    #: sequences are untouched, scaled down for longer ones (`screen_budget`).
    max_screen_entries: int | None = None
    #: the same for the full synthesis set the weights are refined on (`FULL_ENTRIES`: 352 × 64-token
    #: sequences fit)
    max_full_entries: int | None = None

    def resolved_for(self, lengths, syntax: bool = False, running: bool = False) -> "SearchSettings":
        """These settings with the automatic choices made for sequences of ``lengths`` tokens.

        Beyond `BUDGET_TOKENS` tokens, like the search budgets (`entries_budget`), the
        costliest parts get smaller, to keep 256-token synthesis of SmolLM2's 270 heads within
        5 minutes on two cores: word pairs, tag-pair tables and the context / query tables are
        off unless asked for (at 256 tokens word pairs and context tables took synthesis from
        6 min 52 s to 8 min 32 s, held-out IoU 0.549 → 0.562), and the linear search tries
        the 4 `LONG_FRACTIONS` instead of the 8 default `FRACTIONS` (its screening is most of a head's time there; the softmax
        programs, which win almost every head, do not depend on it).  Where every sequence
        carries ``syntax``, word pairs are off too: the tag-pair tables say most of what they
        said, at a fraction of the cost.  On ``running`` text (`running_text`: sequences of several
        sentences, where the 5-minute budget for 500 sentences does not bind) the tag-pair
        tables keep 96 pairs instead of 48, and the same-sentence tables join them."""
        short = int(max(lengths, default=0)) <= BUDGET_TOKENS
        auto_pairs = 2 if short and not syntax else 0
        auto_entries = (96 if running else 48) if short else 0
        auto_sentence = short and syntax and running
        return replace(self, word_pairs=auto_pairs if self.word_pairs is None else self.word_pairs,
                       tag_pair_entries=auto_entries if self.tag_pair_entries is None else self.tag_pair_entries,
                       sentence_tables=auto_sentence if self.sentence_tables is None else self.sentence_tables,
                       context_tables=short if self.context_tables is None else self.context_tables,
                       fractions=LONG_FRACTIONS if not short and self.fractions == FRACTIONS else self.fractions)

    def resolved_for_tables(self, tables) -> "SearchSettings":
        """`resolved_for` the lengths, syntax and running text of these token tables."""
        tables = list(tables)
        return self.resolved_for([len(t) for t in tables], syntax=all(t.has_syntax for t in tables),
                                 running=running_text(tables))

    def as_dict(self) -> dict:
        from dataclasses import asdict

        out = asdict(self)
        del out["softmax_workers"], out["fit_processes"]  # how the work is spread, not what it computes
        if not out["softmax_terms"]:  # off: no softmax settings in the manifest
            for key in ("softmax_terms", "softmax_lexicons", "lexicon_entries", "word_pairs", "context_tables",
                        "softmax_gates", "tag_pair_entries", "sentence_tables"):
                del out[key]
        if not out.get("sentence_tables", True):  # off, as before the setting existed: manifests stay as they were
            del out["sentence_tables"]
        for key in ("max_screen_entries", "max_full_entries"):
            if out[key] is None:  # at their defaults: manifests stay as they were
                del out[key]
        if out.get("context_tables") is True:  # on, as before the setting existed: manifests stay as they were
            del out["context_tables"]
        return out


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
        self.n_seq = data.n_seq
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
        base_mins(self.A, self.score, self.d.row_start, self.d.row_len, self.d.row_seq, self.n_seq,
                  self.base_rows, self.base_seq)
        # soft IoU per sequence from its Σ min; both rows sum to n (two_n / 2 is exact)
        n = 0.5 * self.d.two_n
        return float(np.mean(soft_iou_from_sums(self.base_seq, n, n)))

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
        screen_candidates(self.A, self.score, d.values, cand_term, cand_gate, gates, ptr, cand_rows,
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


def search_head(
    layer: int,
    head: int,
    screen_data: SearchData,
    screen_attention: np.ndarray,
    settings: SearchSettings,
    full_data: SearchData | None = None,
    full_attention: np.ndarray | None = None,
    name: str | None = None,
    softmax: bool = True,
) -> SearchResult:
    """Greedy search for one head (``*_attention``: the head's column of the causal block).

    ``softmax=False`` leaves the softmax program out (``softmax_source`` empty): `search_heads`
    fits it in a worker (`softmax_for_head`, `attndsl.synthesis.search.fit_workers`) while the
    next head's search runs."""
    start = time.perf_counter()
    name = name or head_file_stem(layer, head)
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
    if softmax and settings.softmax_terms > 0:
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
    """A `combine softmax` program over the same pool (and word tables): selected and fitted on
    the screening sequences, weights refitted on every synthesis sequence."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the fit is thousands of small matrix-vector products and L-BFGS updates, where
    # OpenBLAS's thread pool costs more than it gives (measured on 2 cores: the softmax fit of three
    # heads of the default run took 7.5 s with the default pool and 0.7 s with one thread).
    from attndsl.synthesis.library import remember_compiled

    with threadpool_limits(limits=1, user_api="blas"):
        source, iou, program = _softmax_program(name, screen_data, screen_attention, settings, full_data, full_attention)
    remember_compiled(source, program)  # the library need not parse it again
    return source, iou


def softmax_for_head(result: SearchResult, screen_data: SearchData, screen_attention: np.ndarray,
                     settings: SearchSettings, full_data: SearchData | None,
                     full_attention: np.ndarray | None) -> "tuple[SearchResult, ir.Program]":
    """``result`` (from ``search_head(..., softmax=False)``) with its softmax program fitted,
    and that program's IR (for `attndsl.synthesis.library.remember_compiled`, which the caller
    does: a worker process's memory is not the library's).

    Only NumPy, SciPy and the parser run here (no Numba kernels, whose threading layer may not
    take calls from two threads at once, nor survive a fork), so `search_heads` can run it beside
    the next head's search (`attndsl.synthesis.search.fit_workers`); the caller limits BLAS to
    one thread."""
    start = time.perf_counter()
    source, iou, program = _softmax_program(f"{result.name}_softmax", screen_data, screen_attention, settings,
                                            full_data, full_attention)
    return replace(result, softmax_source=source, softmax_fit_iou=iou,
                   seconds=result.seconds + time.perf_counter() - start), program


def _softmax_program(name: str, screen_data: SearchData, screen_attention: np.ndarray, settings: SearchSettings,
                     full_data: SearchData | None, full_attention: np.ndarray | None) -> "tuple[str, float, ir.Program]":
    from attndsl.synthesis.softmax_fit import (
        CONTEXT_LEXICONS, GATED_BASES, LEXICONS, PAIRS, SENTENCE_TAG_PAIRS, TAG_PAIRS, GatedPool, SoftmaxSettings,
        fit_softmax, refit, softmax_program,
    )

    # `search_heads` has made the automatic choices already; a direct call gets the short-sequence ones
    settings = settings.resolved_for([BUDGET_TOKENS], syntax=screen_data.batch.has_syntax)
    tables = LEXICONS + (CONTEXT_LEXICONS if settings.context_tables else ())
    s = SoftmaxSettings(max_terms=settings.softmax_terms, lexicons=tables if settings.softmax_lexicons else (),
                        lexicon_entries=settings.lexicon_entries,
                        pairs=PAIRS[: settings.word_pairs] if settings.softmax_lexicons else (),
                        tag_pairs=(TAG_PAIRS + (SENTENCE_TAG_PAIRS if settings.sentence_tables else ())
                                   if settings.softmax_lexicons and settings.tag_pair_entries > 0 else ()),
                        tag_pair_entries=max(settings.tag_pair_entries, 1))
    d = screen_data
    gated = None
    if settings.softmax_gates and len(d.gate_names):
        index = d.spec_index
        gated = GatedPool(d.gates, tuple(index[b] for b in GATED_BASES if b in index))
    two_stage = full_data is not None and full_attention is not None
    fit = fit_softmax(d.values, screen_attention, d.row_start, d.row_len, d.row_seq, d.two_n, s,
                      words=word_data(d) if (s.lexicons or s.pairs) and not two_stage else None, gated=gated)
    if two_stage:  # word tables are learned on every synthesis sequence, where words occur often enough
        d = full_data  # the same terms and gates as the screening set (`search_heads` prepares it so)
        fit = refit(d.values, full_attention, d.row_start, d.row_len, d.row_seq, d.two_n, fit, s,
                    words=word_data(d) if s.lexicons or s.pairs else None, learn_lexicons=True, gates=d.gates)
    texts = [d.specs[i].factors if fit.gate_of(j) < 0 else gated_spec(d.specs[i], d.gate_names[fit.gate_of(j)]).factors
             for j, i in enumerate(fit.specs)]
    scales = [float(d.scales[i]) for i in fit.specs]
    source, program = softmax_program(name, texts, fit.weights, scales, fit.lexicons, fit.pairs)
    return source, float(fit.iou), program


def word_data(data: SearchData):
    """The `attndsl.synthesis.softmax_fit.WordData` of a search set (cached on it: every head shares it)."""
    from attndsl.extraction.batch import NUMBER_COLUMNS, TEXT_COLUMNS
    from attndsl.synthesis.softmax_fit import WordData

    cached = data.__dict__.get("_word_data")
    if cached is None:
        q, k, tq, tk = data.entry_tokens()
        lower = data.batch.text_ids[1]
        words = [""] * len(data.batch.vocabulary)
        for text, i in data.batch.vocabulary.items():
            if i >= 0:
                words[i] = text

        def before(pos, tok, back):  # the word ``back`` tokens before each entry's q or k (−1 before the start)
            return np.where(pos >= back, lower[np.maximum(tok - back, 0)], -1)

        context = {f"{side} - {back}": before(pos, tok, back) for side, pos, tok in (("q", q, tq), ("k", k, tk))
                   for back in (1, 2)}
        tags = {}
        if data.batch.has_syntax:
            for feature in ("upos", "dep", "lower"):
                ids = data.batch.text_ids[TEXT_COLUMNS.index(feature)]
                tags[f"{feature}(q)"], tags[f"{feature}(k)"] = ids[tq], ids[tk]
        sent = data.batch.numbers[NUMBER_COLUMNS.index("sent")]
        cached = data.__dict__["_word_data"] = WordData(q, k, lower[tq], lower[tk], words, context, tags,
                                                        (sent[tq], sent[tk]))
    return cached


def _sink_index(data: SearchData) -> int:
    for i, spec in enumerate(data.specs):
        if spec.factors == "[k == 0]":
            return i
    raise ValueError("the term pool has no sink term")


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
    each head finishes, in head order (the synthesis stage saves it there, for
    resuming).  Softmax programs are fitted in ``settings.softmax_workers`` worker
    processes (or threads, `attndsl.synthesis.search.fit_workers`) beside the search of
    the next heads; the results are the same.
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
    gate_names = gate_conditions(tables) if settings.use_gates else ()
    screen_tables = [tables[i] for i in chosen]
    lengths = [len(t) for t in tables]
    settings = settings.resolved_for_tables(tables)
    screen = prepare(screen_tables, seq_indices[chosen], specs, gate_names,
                     max_entries=screen_budget(settings.max_screen_entries, lengths),
                     seed=settings.seed)
    full = None
    if n_screen < len(seq_indices):
        full = prepare(tables, seq_indices, screen.specs, gate_names, scales=screen.scales,
                       max_entries=entries_budget(settings.max_full_entries, FULL_ENTRIES, lengths),
                       seed=settings.seed + 1)
    screen_block = attention_block(source, screen, screen_tables)
    # beyond `BUDGET_TOKENS` tokens the linear search screens half the softmax fit's rows (its
    # screening is most of a head's time there, and the softmax programs, which win almost every
    # head, do not depend on it); the same terms and scales, so weights mean the same
    linear, linear_block = screen, screen_block
    if settings.softmax_terms > 0 and max(lengths) > BUDGET_TOKENS:
        linear = prepare(screen_tables, seq_indices[chosen], screen.specs, gate_names, scales=screen.scales,
                         max_entries=max(1, screen.values.shape[1] // 2),
                         seed=settings.seed + 2)
        linear_block = attention_block(source, linear, screen_tables)
    full_block = attention_block(source, full, tables) if full is not None else None
    n_heads = source.n_heads
    results: list[SearchResult] = []

    def finish(result: SearchResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    if settings.softmax_terms <= 0:
        for layer, head in tqdm(heads, desc="search", unit="head", disable=not progress):
            col = layer * n_heads + head
            finish(search_head(layer, head, screen, screen_block[:, col], settings,
                               full, full_block[:, col] if full_block is not None else None))
        return results
    # The softmax fit (NumPy / SciPy, most of a head's time) runs in worker processes (threads where
    # the platform does not fork: `fit_workers`) while the main thread searches the next heads (Numba
    # kernels, which stay in this process); results are still saved in head order.  Every head's fit is
    # the same as when run alone: BLAS is held to one thread, and nothing is shared but read-only data.
    from collections import deque

    from threadpoolctl import threadpool_limits

    from attndsl.synthesis.library import remember_compiled
    from attndsl.synthesis.search.fit_workers import FitJob, FitWorkers

    for data in (screen, full):  # built here, once, before the workers start: they only read them
        if data is not None:
            word_data(data)

    def fitted(future) -> SearchResult:
        result, program = pool.result(future)
        remember_compiled(result.softmax_source, program)  # the library need not parse it again
        return result

    pending: deque = deque()
    job = FitJob(screen, screen_block, full, full_block, settings)
    with threadpool_limits(limits=1, user_api="blas"), FitWorkers(job, settings.softmax_workers,
                                                                   settings.fit_processes) as pool:
        workers = pool.workers
        try:
            for layer, head in tqdm(heads, desc="search", unit="head", disable=not progress):
                col = layer * n_heads + head
                full_col = full_block[:, col] if full_block is not None else None
                result = search_head(layer, head, linear, linear_block[:, col], settings, full, full_col,
                                     softmax=False)
                pending.append(pool.submit(result, col))
                while pending and (len(pending) > workers or pending[0].done()):
                    finish(fitted(pending.popleft()))
        except BaseException:  # Ctrl-C or an error: the heads already searched are finished and saved first
            for future in pending:
                try:
                    finish(fitted(future))
                except Exception:
                    break
            raise
        while pending:
            finish(fitted(pending.popleft()))
    return results
