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
   previous word, earlier sentences); and, when every sequence carries spaCy
   syntax, part of speech and dependency label of the key, k as the query's
   syntactic head or dependent, siblings, the subject and object of the
   query's verb (`pool.SYNTAX_KEY_CONDITIONS`, `pool.SYNTAX_RELATIONS`).  Every term is evaluated **once** over
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

4. **Softmax** (by default 24 terms, ``attndsl synthesize --softmax-terms N``;
   0 turns it off): the same evaluated pool is also fitted as a ``combine
   softmax`` program (`attndsl.synthesis.softmax_fit`: greedy selection by the
   cross-entropy gradient, convex L-BFGS fits, learned word tables for
   preferred key words and for query words before the sink / the current
   token, and, where the sequences carry syntax, tag-pair tables — which
   kinds of key (part of speech, dependency label, word) each kind of
   query reads —, soft-IoU refinement, the shortest near-tie wins).  Terms are chosen
   on the screening subsample; the word tables are learned, and every weight
   refitted, on all synthesis sequences (a table needs each word several
   times, and 96 short sentences hold too few).  It is a further
   candidate, and the pooled library picks per head, by synthesis IoU,
   between it and the linear programs.

5. **Short variant** (the library's short tier, `attndsl.synthesis.library.is_short`):
   the greedy path's state while it had at most three terms, its head token
   sets cut to their eight most useful words (by the lift they were chosen
   by), with weights refined again on the synthesis sequences — a candidate
   for people to read, beside the full program.

Terms are scaled so that their mean row sum is 1 where they are active, so a
weight reads roughly as the share of a row's mass the term gets; the printed
weight includes that scale.  Everything is deterministic for a seed (ties go
to the earlier term; kernels reduce in a fixed order).

Modules: `pool` (the term pool and shared gates), `data` (terms evaluated and
indexed over a set of sequences), `gates` (token sets made for one head),
`greedy` (the greedy fit of one head, and the search over many heads),
`printing` (a fit as canonical source); the objective kernels live with the
other Numba kernels, in `attndsl.kernels.objective`.
"""
from __future__ import annotations

from attndsl.synthesis.search.pool import GATES, KEY_CONDITIONS, TermSpec, compile_terms, frequent_words, gated, term_pool
from attndsl.synthesis.search.data import Component, SearchData, prepare
from attndsl.synthesis.search.gates import HeadGate, head_gates
from attndsl.synthesis.search.printing import program_source
from attndsl.synthesis.search.greedy import (
    SearchResult, SearchSettings, _HeadFit, _short_program, _sink_index, running_text, search_head,
    search_heads,
)

__all__ = [
    "GATES", "KEY_CONDITIONS", "TermSpec", "compile_terms", "frequent_words", "gated", "term_pool",
    "Component", "SearchData", "prepare", "HeadGate", "head_gates", "program_source",
    "SearchResult", "SearchSettings", "running_text", "search_head", "search_heads",
]
