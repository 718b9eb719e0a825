"""Optional syntax features (part of speech, dependency label, head) from spaCy.

A *syntax provider* is any object with ``name`` (str) and ``parse(text) ->
list[SyntaxWord]``: the words of the text with character spans, universal POS,
dependency label and the index of the head word in the same list (the root
points at itself).  `SpacyProvider` is the real one (the ``syntax`` extra);
tests use fakes with the same interface.

`annotate(table, provider)` aligns words to model tokens by character offsets:
a token takes the annotations of the word that its first non-space character
falls in (or, failing that, the first word its span overlaps); its ``head`` is
the position of the first token of the head word.  Tokens that cover no word
(BOS, pure whitespace, a marker) get ``upos = dep = ""`` and ``head = -1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from .errors import UserError
from .features import TokenTable

INSTALL_HINT = "pip install spacy && python -m spacy download en_core_web_sm"


@dataclass(frozen=True)
class SyntaxWord:
    start: int
    end: int
    upos: str
    dep: str
    head: int  # index of the head word in the provider's list


class SyntaxProvider(Protocol):
    name: str

    def parse(self, text: str) -> Sequence[SyntaxWord]: ...


class SpacyProvider:
    """spaCy pipeline as a syntax provider (loaded once)."""

    def __init__(self, model: str = "en_core_web_sm"):
        try:
            import spacy
        except ImportError as error:
            raise UserError(f"syntax features need spaCy and its English model: {INSTALL_HINT}") from error
        try:
            self._nlp = spacy.load(model, disable=["ner", "lemmatizer"])
        except OSError as error:
            raise UserError(f"spaCy model {model!r} is not installed: {INSTALL_HINT}") from error
        self.name = f"spacy:{model}:{spacy.__version__}"

    def parse(self, text: str) -> list[SyntaxWord]:
        doc = self._nlp(text)
        return [
            SyntaxWord(t.idx, t.idx + len(t.text), t.pos_, t.dep_, t.head.i)
            for t in doc
        ]


def annotate(table: TokenTable, provider: SyntaxProvider) -> TokenTable:
    """``table`` with upos/dep/head from ``provider`` aligned by character offsets."""
    words = [w for w in provider.parse(table.text)]
    text = table.text
    n = len(table)
    word_of_token = [-1] * n
    for i in range(n):
        s, e = int(table.start[i]), int(table.end[i])
        if s >= e:
            continue
        first = next((p for p in range(s, e) if not text[p].isspace()), None)
        for w, word in enumerate(words):
            if first is not None and word.start <= first < word.end:
                word_of_token[i] = w
                break
        else:
            for w, word in enumerate(words):
                if word.start < e and s < word.end and text[max(s, word.start) : min(e, word.end)].strip():
                    word_of_token[i] = w
                    break
    first_token: dict[int, int] = {}
    for i, w in enumerate(word_of_token):
        if w >= 0 and w not in first_token:
            first_token[w] = i
    upos, dep, head = [], [], []
    for w in word_of_token:
        if w < 0:
            upos.append("")
            dep.append("")
            head.append(-1)
        else:
            word = words[w]
            upos.append(word.upos)
            dep.append(word.dep)
            head.append(first_token.get(word.head, -1))
    return table.with_syntax(upos, dep, head)
