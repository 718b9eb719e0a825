"""Token feature tables: what a program can read about each token.

A `TokenTable` describes one sequence of model tokens.  It is built from the
text and each token's character span (`table_from_spans`), so every tokenizer
family (byte-level BPE, SentencePiece, with or without BOS) reduces to
"give me ids and spans" (see `attndsl.extraction.tokens` for Hugging Face tokenizers).

Definitions (normative; the DSL reference repeats them):

- ``tok``: the token's text with its leading spaces removed (the space marker
  of BPE/SentencePiece), unless that leaves nothing; special tokens (BOS) use
  their literal text such as ``<s>``.  ``lower`` is ``tok`` lower-cased.
- words: maximal runs of letters/digits/underscore (with an inner apostrophe,
  as in ``don't``), and every other non-space character on its own.  A token
  is a ``word_start`` if a word begins inside its span; ``word`` is the index
  of the last word begun at or before the token (0 before the first word).
- sentences: a sentence begins at the first word of the text and at the first
  word after a run of ``.``, ``!``, ``?`` (optionally followed by closing
  quotes or brackets) or after a newline; ``sent`` is counted like ``word``.
- ``word_pos`` / ``sent_pos``: the token's index within its word / sentence.
- ``punct``: every non-space character is punctuation or a symbol;
  ``alpha``: every non-space character is a letter; ``digit``: every non-space
  character is a digit; ``cap``: the first letter is upper-case;
  ``newline``: the token contains a newline; ``space``: the token is all
  whitespace; ``len``: characters in ``tok``; ``seq_start``: position 0;
  ``stopword``: ``lower`` is one of the fixed English stop words `STOPWORDS`.
- ``sim(a, b)``: Jaccard overlap of the two tokens' character buckets
  (a–z → 26 buckets, 0–9 → 10, any other character → one of 28 by code point),
  computed on ``lower``; 0 when either is out of range or both are empty.
- syntax (optional): ``upos`` (universal part of speech), ``dep`` (dependency
  label), ``head`` (position of the first token of the syntactic head word;
  -1 where the token has no word).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, fields
from typing import Iterable, Sequence

import numpy as np

from attndsl.language import ops

_WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|_+|[^\s\w]", re.UNICODE)
_SENT_END_RE = re.compile(r"[.!?]+[\"'”’)\]]*|\n")

#: ``stopword(p)``: English function words (articles, pronouns, auxiliaries,
#: prepositions, conjunctions, common adverbs), lower-cased; fixed, so a
#: program means the same everywhere
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
""".split())


@dataclass(frozen=True, eq=False)
class TokenTable:
    """Features of one token sequence, one entry per model token."""

    tok: tuple[str, ...]
    token_id: np.ndarray  # int64
    start: np.ndarray  # int64 character offsets into the text (start == end for BOS)
    end: np.ndarray
    word_start: np.ndarray  # bool
    punct: np.ndarray
    alpha: np.ndarray
    digit: np.ndarray
    cap: np.ndarray
    newline: np.ndarray
    space: np.ndarray
    word: np.ndarray  # int64
    sent: np.ndarray
    word_pos: np.ndarray
    sent_pos: np.ndarray
    upos: tuple[str, ...] | None = None
    dep: tuple[str, ...] | None = None
    head: np.ndarray | None = None
    text: str = field(default="", repr=False)

    def __len__(self) -> int:
        return len(self.tok)

    @property
    def lower(self) -> tuple[str, ...]:
        return tuple(t.lower() for t in self.tok)

    @property
    def length(self) -> np.ndarray:
        return np.array([len(t) for t in self.tok], dtype=np.int64)

    @property
    def has_syntax(self) -> bool:
        return self.upos is not None

    def __eq__(self, other) -> bool:
        if not isinstance(other, TokenTable):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    @property
    def position(self) -> np.ndarray:
        """``pos``: each token's index in the sequence (int64)."""
        return np.arange(len(self), dtype=np.int64)

    @property
    def seq_start(self) -> np.ndarray:
        """``seq_start``: true at position 0 only."""
        return np.arange(len(self)) == 0

    @property
    def stopword(self) -> np.ndarray:
        """``stopword``: ``lower`` is in `STOPWORDS` (bool)."""
        return np.array([t in STOPWORDS for t in self.lower], dtype=bool)

    def column(self, name: str):
        """Per-token values of token feature ``name`` (its `ops.Feature.column`)."""
        return getattr(self, ops.FEATURE[name].column)

    def records(self) -> list[dict]:
        """One dict per token keyed by DSL feature names (the input of emitted Python):
        every token feature of `attndsl.language.ops` in table order, ``charset`` (for
        ``sim``) after the ones every table has, then the syntax features."""
        convert = {ops.TEXT: str, ops.NUMBER: int, ops.BOOL: bool}
        plain = [(f.name, convert[f.type], self.column(f.name)) for f in ops.FEATURES if not f.cross and not f.syntax]
        syntax = [(f.name, convert[f.type], self.column(f.name)) for f in ops.FEATURES
                  if not f.cross and f.syntax] if self.has_syntax else []
        lower = self.lower
        out = []
        for i in range(len(self)):
            rec = {name: cast(values[i]) for name, cast, values in plain}
            rec["charset"] = int(charset_mask(lower[i]))
            for name, cast, values in syntax:
                rec[name] = cast(values[i])
            out.append(rec)
        return out

    def with_syntax(self, upos: Sequence[str], dep: Sequence[str], head: Sequence[int]) -> "TokenTable":
        from dataclasses import replace

        n = len(self)
        if not (len(upos) == len(dep) == len(head) == n):
            raise ValueError("syntax annotations must have one entry per token")
        return replace(self, upos=tuple(upos), dep=tuple(dep), head=np.asarray(head, dtype=np.int64))

    def slice(self, stop: int) -> "TokenTable":
        """The first ``stop`` tokens (sentence features are kept as computed on the whole)."""
        from dataclasses import replace

        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                kw[f.name] = v[:stop]
            elif isinstance(v, tuple):
                kw[f.name] = v[:stop]
        table = replace(self, **kw)
        if table.head is not None:
            object.__setattr__(table, "head", np.where(table.head < stop, table.head, -1))
        return table


def charset_mask(text: str) -> int:
    """64-bit set of character buckets used by ``sim``."""
    mask = 0
    for ch in text:
        if "a" <= ch <= "z":
            bucket = ord(ch) - ord("a")
        elif "0" <= ch <= "9":
            bucket = 26 + ord(ch) - ord("0")
        else:
            bucket = 36 + ord(ch) % 28
        mask |= 1 << bucket
    return mask


def jaccard(mask_a: int, mask_b: int) -> float:
    union = mask_a | mask_b
    if union == 0:
        return 0.0
    return bin(mask_a & mask_b).count("1") / bin(union).count("1")


def _is_punct_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def surface(piece: str) -> str:
    """Token text without the leading space marker (kept if nothing else is left)."""
    stripped = piece.lstrip(" ")
    return stripped if stripped else piece


def table_from_spans(
    text: str,
    token_ids: Sequence[int],
    spans: Sequence[tuple[int, int]],
    special: Sequence[str | None] | None = None,
) -> TokenTable:
    """Compute every feature from the text and each token's character span.

    ``special[i]`` is the literal text of a special token (BOS) with an empty
    span, or None for ordinary tokens.
    """
    n = len(token_ids)
    if len(spans) != n:
        raise ValueError("one span per token is required")
    special = list(special) if special is not None else [None] * n
    word_starts = sorted(m.start() for m in _WORD_RE.finditer(text))
    sent_starts = _sentence_starts(text, word_starts)

    toks, flags = [], {k: np.zeros(n, dtype=bool) for k in ("word_start", "punct", "alpha", "digit", "cap", "newline", "space")}
    word = np.zeros(n, dtype=np.int64)
    sent = np.zeros(n, dtype=np.int64)
    starts = np.array([s for s, _ in spans], dtype=np.int64) if n else np.zeros(0, np.int64)
    ends = np.array([e for _, e in spans], dtype=np.int64) if n else np.zeros(0, np.int64)
    wi = si = 0  # number of word / sentence starts consumed so far
    for i, (s, e) in enumerate(spans):
        if special[i] is not None:
            piece = special[i]
        else:
            piece = text[s:e]
        tok = surface(piece)
        toks.append(tok)
        # word / sentence starts inside this token's span (BOS has an empty span)
        starts_here = 0
        while wi < len(word_starts) and word_starts[wi] < e:
            if word_starts[wi] >= s:
                starts_here += 1
            wi += 1
        while si < len(sent_starts) and sent_starts[si] < e:
            si += 1
        flags["word_start"][i] = starts_here > 0 and special[i] is None
        word[i] = max(wi - 1, 0)
        sent[i] = max(si - 1, 0)
        visible = [c for c in tok if not c.isspace()]
        if special[i] is None:
            flags["punct"][i] = bool(visible) and all(_is_punct_char(c) for c in visible)
            flags["alpha"][i] = bool(visible) and all(c.isalpha() for c in visible)
            flags["digit"][i] = bool(visible) and all(c.isdigit() for c in visible)
            letters = [c for c in visible if c.isalpha()]
            flags["cap"][i] = bool(letters) and letters[0].isupper()
            flags["newline"][i] = "\n" in piece
            flags["space"][i] = bool(piece) and piece.isspace()
    word_pos = _run_index(word)
    sent_pos = _run_index(sent)
    return TokenTable(
        tok=tuple(toks),
        token_id=np.asarray(token_ids, dtype=np.int64),
        start=starts,
        end=ends,
        word=word,
        sent=sent,
        word_pos=word_pos,
        sent_pos=sent_pos,
        text=text,
        **flags,
    )


def _sentence_starts(text: str, word_starts: list[int]) -> list[int]:
    if not word_starts:
        return []
    starts = [word_starts[0]]
    import bisect

    for m in _SENT_END_RE.finditer(text):
        j = bisect.bisect_left(word_starts, m.end())
        if j < len(word_starts) and word_starts[j] > starts[-1]:
            starts.append(word_starts[j])
    return sorted(set(starts))


def _run_index(groups: np.ndarray) -> np.ndarray:
    """Index of each element within its run of equal consecutive values."""
    out = np.zeros(len(groups), dtype=np.int64)
    for i in range(1, len(groups)):
        out[i] = out[i - 1] + 1 if groups[i] == groups[i - 1] else 0
    return out


def table_from_words(words: Iterable[str], separator: str = " ") -> TokenTable:
    """A table with one token per given piece: for tests and hand-made examples.

    Pieces are joined with ``separator``; each token's span covers its piece
    (a piece may carry its own leading space when ``separator`` is empty).
    """
    pieces = list(words)
    text, spans, pos = "", [], 0
    for i, piece in enumerate(pieces):
        if i and separator:
            text += separator
            pos += len(separator)
        spans.append((pos, pos + len(piece)))
        text += piece
        pos += len(piece)
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(piece, len(vocab)) for piece in pieces]
    return table_from_spans(text, ids, spans)
