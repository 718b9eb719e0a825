"""Ragged token batches: the input of the Numba kernels and the scorer.

A `TokenBatch` is many `TokenTable`s laid end to end: every feature column of
every sequence concatenated into one flat array, plus ``offsets`` (token
offsets, int64[S+1]).  Text features (``tok``, ``lower``, ``upos``, ``dep``)
are interned into integer ids through one vocabulary owned by the batch, so at
run time every text comparison is an integer comparison.  The empty string
maps to the padding id -1, exactly as in the reference interpreter (a token
whose text is "" therefore equals the padding read outside the sequence).

Literals of a program are bound to the batch's ids when the program is encoded
for that batch (`TokenBatch.literal_id`); a literal that no token of the batch
carries gets a fresh id that matches nothing but itself.

Causal entries
--------------
Program outputs and head attention are stored over the *causal entries* of a
batch only (pairs k ≤ q).  For sequences of lengths n_s the entry index of
(s, q, k) is ``tri_offsets[s] + q*(q+1)//2 + k`` where ``tri_offsets`` is the
cumulative sum of n_s*(n_s+1)//2 starting at 0 (`attndsl.extraction.layout`).  The
attention store uses the same layout, so program outputs and recorded
attention line up entry by entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from attndsl.language import ir, ops
from attndsl.extraction.features import TokenTable, charset_mask
from attndsl.extraction.layout import causal_entries, causal_layout  # noqa: F401  (re-exported)

#: id of the empty string / of text read outside the sequence (interpreter convention)
PAD_ID = -1

# Row orders: the feature table's (`attndsl.language.ops`), one row per feature.
#: row order of `TokenBatch.text_ids`
TEXT_COLUMNS = ops.token_features(ops.TEXT)
#: row order of `TokenBatch.numbers` (``pos`` is the index within the sequence)
NUMBER_COLUMNS = ops.token_features(ops.NUMBER)
#: row order of `TokenBatch.flags`
FLAG_COLUMNS = ops.token_features(ops.BOOL)
#: row order of `TokenBatch.same_keys`: what ``same_*`` compares (the values of the
#: token feature its `ops.Feature.column` names; text as its id)
SAME_COLUMNS = ops.features(ops.BOOL, cross=True)


@dataclass(frozen=True, eq=False)
class TokenBatch:
    """Token features of S sequences, concatenated (see the module docstring)."""

    lengths: np.ndarray  # int64[S]
    offsets: np.ndarray  # int64[S+1] token offsets
    tri_offsets: np.ndarray  # int64[S+1] causal-entry offsets (`causal_layout`)
    text_ids: np.ndarray  # int64[len(TEXT_COLUMNS), N]
    numbers: np.ndarray  # float64[len(NUMBER_COLUMNS), N] (head = -1 without syntax)
    flags: np.ndarray  # uint8[len(FLAG_COLUMNS), N]
    same_keys: np.ndarray  # int64[len(SAME_COLUMNS), N]
    charset: np.ndarray  # uint64[N] character buckets of ``lower`` (for ``sim``)
    vocabulary: dict[str, int]  # text -> id ("" -> PAD_ID)
    has_syntax: bool
    _absent_literals: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_tables(cls, tables: Sequence[TokenTable]) -> "TokenBatch":
        tables = list(tables)
        lengths = np.array([len(t) for t in tables], dtype=np.int64)
        offsets = np.zeros(len(tables) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        vocabulary: dict[str, int] = {ir.PAD_STRING: PAD_ID}
        has_syntax = bool(tables) and all(t.has_syntax for t in tables)

        def intern(values) -> list[int]:
            out = []
            for v in values:
                i = vocabulary.get(v)
                if i is None:
                    i = vocabulary[v] = len(vocabulary) - 1  # ids 0, 1, 2 ... ("" holds -1)
                out.append(i)
            return out

        syntax_ok = [has_syntax or not ops.FEATURE[name].syntax for name in TEXT_COLUMNS + NUMBER_COLUMNS]
        text_ok, number_ok = syntax_ok[:len(TEXT_COLUMNS)], syntax_ok[len(TEXT_COLUMNS):]
        same_text = [TEXT_COLUMNS.index(ops.FEATURE[name].column) if ops.FEATURE[name].column in TEXT_COLUMNS
                     else -1 for name in SAME_COLUMNS]
        text_ids = np.full((len(TEXT_COLUMNS), total), PAD_ID, dtype=np.int64)
        numbers = np.full((len(NUMBER_COLUMNS), total), ir.PAD_NUMBER, dtype=np.float64)
        flags = np.zeros((len(FLAG_COLUMNS), total), dtype=np.uint8)
        same_keys = np.zeros((len(SAME_COLUMNS), total), dtype=np.int64)
        charset = np.zeros(total, dtype=np.uint64)
        for t, table in enumerate(tables):
            a, b = int(offsets[t]), int(offsets[t + 1])
            if a == b:
                continue
            for row, name in enumerate(TEXT_COLUMNS):  # interned in row order: ids are stable
                if text_ok[row]:
                    text_ids[row, a:b] = intern(table.column(name))
            for row, name in enumerate(NUMBER_COLUMNS):
                if number_ok[row]:
                    numbers[row, a:b] = table.column(name)
            for row, name in enumerate(FLAG_COLUMNS):
                flags[row, a:b] = np.asarray(table.column(name), dtype=bool)
            for row, name in enumerate(SAME_COLUMNS):
                key = ops.FEATURE[name].column
                same_keys[row, a:b] = text_ids[same_text[row], a:b] if same_text[row] >= 0 else table.column(key)
            charset[a:b] = [charset_mask(s) for s in table.lower]
        return cls(
            lengths=lengths,
            offsets=offsets,
            tri_offsets=causal_layout(lengths),
            text_ids=text_ids,
            numbers=numbers,
            flags=flags,
            same_keys=same_keys,
            charset=charset,
            vocabulary=vocabulary,
            has_syntax=has_syntax,
        )

    # ------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_entries(self) -> int:
        """Number of causal entries (pairs k ≤ q over all sequences)."""
        return int(self.tri_offsets[-1])

    @property
    def max_length(self) -> int:
        return int(self.lengths.max()) if len(self.lengths) else 0

    # ------------------------------------------------------------ literals
    def literal_id(self, value: str) -> int:
        """The id a program literal is bound to in this batch.

        Text the batch contains gets its vocabulary id ("" gets the padding
        id); other text gets an id past the vocabulary, the same one every
        time for the same text, so it equals only itself.
        """
        found = self.vocabulary.get(value)
        if found is not None:
            return found
        found = self._absent_literals.get(value)
        if found is None:
            found = self._absent_literals[value] = len(self.vocabulary) - 1 + len(self._absent_literals)
        return found

    # ------------------------------------------------------------ entry maps
    def entry_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sequence, q, k) of every causal entry (cached)."""
        cached = self.__dict__.get("_entry_index")
        if cached is None:
            cached = causal_entries(self.lengths)
            object.__setattr__(self, "_entry_index", cached)
        return cached
