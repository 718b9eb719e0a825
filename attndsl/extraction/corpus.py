"""Corpora and the sequences extraction runs on.

A corpus spec is one of

- ``builtin``: about 100 short original stories in the TinyStories style,
  written for the project (``attndsl/data/stories.txt``),
- a ``.txt`` file: stories separated as ``txt_separator`` says (`TXT_SEPARATORS`):
  ``auto`` (default) — by lines that hold ``<|endoftext|>`` if the file has
  any, otherwise by blank lines; ``endoftext`` — only by ``<|endoftext|>``
  lines, so blank-line paragraphs stay inside one story (a file without such
  a line is one story); ``blank-line`` — by blank lines and by
  ``<|endoftext|>`` lines, every paragraph its own story,
- a ``.jsonl`` file: one JSON object per line, the story in ``text_field``,
- ``hf:DATASET[:SPLIT]``: a Hugging Face dataset read with ``datasets``
  (streamed; needs the hub).

Sequences are whole sentences of one story packed greedily, in order, while
the tokenized sequence (BOS included where the tokenizer adds one) stays within
``max_tokens``; a single sentence longer than that is cut after ``max_tokens``
tokens.  Each sequence goes to the held-out split when
``sha256(f"{seed}:{text}")`` read as a fraction of 2**64 is below
``heldout_fraction`` — deterministic, independent of order and of the model.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable
from attndsl.pipeline.rundir import parse_json
from attndsl.extraction.tokens import _encode, table_from_ids

BUILTIN = "builtin"
SEPARATOR = "<|endoftext|>"
#: how a .txt corpus is cut into stories (packing never crosses a story)
TXT_SEPARATORS = ("auto", "endoftext", "blank-line")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)|\n")


@dataclass(frozen=True)
class Corpus:
    """A named source of documents (stories); ``documents`` may be read lazily."""

    spec: str
    documents: Iterable[str]


@dataclass(frozen=True)
class TextSequence:
    """One extraction sequence: its text, token table (ids, spans, features) and split."""

    text: str
    table: TokenTable
    split: str  # "synthesis" or "heldout"

    @property
    def token_ids(self) -> list[int]:
        return [int(i) for i in self.table.token_id]


def split_documents(text: str, separator: str = "auto") -> list[str]:
    """Stories of a .txt file, cut as ``separator`` says (see the module docstring).

    ``auto``: ``<|endoftext|>`` lines if the file has any, else blank lines;
    ``endoftext``: ``<|endoftext|>`` lines only (blank lines are paragraph
    breaks inside a story); ``blank-line``: blank lines and ``<|endoftext|>`` lines.
    """
    if separator not in TXT_SEPARATORS:
        raise UserError(f"unknown .txt separator {separator!r}; choose one of {', '.join(TXT_SEPARATORS)}")
    lines = text.splitlines()
    has_endoftext = any(line.strip() == SEPARATOR for line in lines)
    if separator == "endoftext" or (separator == "auto" and has_endoftext):
        docs, current = [], []
        for line in lines:
            if line.strip() == SEPARATOR:
                docs.append("\n".join(current))
                current = []
            else:
                current.append(line)
        docs.append("\n".join(current))
    else:
        stories = "\n".join("" if line.strip() == SEPARATOR else line for line in lines)
        docs = _BLANK_LINE.split(stories)
    return [d.strip() for d in docs if d.strip()]


def load_corpus(spec: str = BUILTIN, text_field: str = "text", txt_separator: str = "auto") -> Corpus:
    """Open a corpus by spec (see the module docstring); bad specs are UserErrors.

    ``txt_separator`` (one of `TXT_SEPARATORS`) applies to ``.txt`` files only;
    anything but ``auto`` for another kind of corpus is refused.
    """
    if txt_separator not in TXT_SEPARATORS:
        raise UserError(f"--txt-separator must be one of {', '.join(TXT_SEPARATORS)}, not {txt_separator!r}")
    is_txt = spec not in (BUILTIN,) and not spec.startswith("hf:") and Path(spec).suffix != ".jsonl"
    if txt_separator != "auto" and not is_txt:
        raise UserError(f"--txt-separator {txt_separator} applies to .txt corpora only, not {spec!r}")
    if spec == BUILTIN:
        text = resources.files("attndsl").joinpath("data", "stories.txt").read_text(encoding="utf-8")
        return Corpus(spec, split_documents(text))
    if spec.startswith("hf:"):
        return Corpus(spec, _hf_documents(spec[3:], text_field))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"corpus file not found: {spec} (give a .txt or .jsonl file, 'builtin', or hf:DATASET)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"corpus file {spec} is not UTF-8 text: {error}") from error
    if path.suffix == ".jsonl":
        return Corpus(spec, _jsonl_documents(path, text, text_field))
    return Corpus(spec, split_documents(text, txt_separator))


def _jsonl_documents(path: Path, text: str, field: str) -> list[str]:
    docs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        record = parse_json(line, f"{path}:{number}")  # also a 5,000-digit number or 100,000-deep nesting
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise UserError(f"{path}:{number}: no string field {field!r} (choose it with --text-field)")
        if record[field].strip():
            docs.append(record[field].strip())
    return docs


def _hf_documents(name: str, field: str) -> Iterator[str]:
    dataset_id, _, split = name.partition(":")
    try:
        import datasets
    except ImportError as error:
        raise UserError("hf: corpora need the 'datasets' package: pip install datasets") from error
    try:
        dataset = datasets.load_dataset(dataset_id, split=split or "train", streaming=True)
        first = iter(dataset)
        for record in first:
            text = record.get(field)
            if not isinstance(text, str):
                raise UserError(f"dataset {dataset_id} has no string field {field!r} (choose it with --text-field)")
            if text.strip():
                yield text.strip()
    except UserError:
        raise
    except Exception as error:  # network, unknown dataset, bad split: all one message
        raise UserError(f"cannot read Hugging Face dataset {name!r} (offline or unknown?): {error}") from error


def sentence_spans(document: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of a document (stripped of surrounding space)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(document):
        _add_span(document, start, match.end(), spans)
        start = match.end()
    _add_span(document, start, len(document), spans)
    return spans


def _add_span(doc: str, start: int, end: int, spans: list) -> None:
    piece = doc[start:end]
    if piece.strip():
        left = start + len(piece) - len(piece.lstrip())
        right = end - (len(piece) - len(piece.rstrip()))
        spans.append((left, right))


def split_of(text: str, heldout_fraction: float, seed: int = 0) -> str:
    digest = hashlib.sha256(f"{seed}:{text}".encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return "heldout" if fraction < heldout_fraction else "synthesis"


def make_sequences(
    corpus: Corpus,
    tokenizer,
    max_tokens: int = 64,
    max_sequences: int | None = None,
    heldout_fraction: float = 0.5,
    seed: int = 0,
    add_bos: bool | None = None,
    max_sentences: int | None = None,
    mix_lengths: bool = False,
) -> list[TextSequence]:
    """Pack each story's sentences into sequences of at most ``max_tokens`` tokens
    and, if given, at most ``max_sentences`` sentences (1 = one sentence per
    sequence, the protocol of the paper's reported numbers).

    ``mix_lengths``: one run of several lengths — the stories alternate between
    short sequences (``max_sentences`` sentences, 1 when not given) and text
    packed up to ``max_tokens`` (the first story is short)."""
    if max_tokens < 2:
        raise UserError("--max-tokens must be at least 2")
    if max_sentences is not None and max_sentences < 1:
        raise UserError("--max-sentences must be at least 1")
    if not 0.0 <= heldout_fraction <= 1.0:
        raise UserError("the held-out fraction must be between 0 and 1")
    sequences: list[TextSequence] = []

    def emit(text: str, encoding) -> bool:
        ids, offsets, special = encoding
        table = table_from_ids(tokenizer, text, ids, offsets, special)
        sequences.append(TextSequence(text, table, split_of(text, heldout_fraction, seed)))
        return max_sequences is not None and len(sequences) >= max_sequences

    for number, document in enumerate(corpus.documents):
        spans = sentence_spans(document)
        limit = max_sentences
        if mix_lengths:
            limit = (max_sentences or 1) if number % 2 == 0 else None
        i = 0
        while i < len(spans):
            start = spans[i][0]
            encoding = _encode(tokenizer, document[start : spans[i][1]], add_bos)
            if len(encoding[0]) > max_tokens:  # one long sentence: keep its first max_tokens tokens
                ids, offsets, special = (list(part[:max_tokens]) for part in encoding)
                cut = max((e for (s, e), sp in zip(offsets, special) if not sp), default=0)
                if emit(document[start : start + cut], (ids, offsets, special)):
                    return sequences
                i += 1
                continue
            j = i + 1
            while j < len(spans) and (limit is None or j - i < limit):
                candidate = _encode(tokenizer, document[start : spans[j][1]], add_bos)
                if len(candidate[0]) > max_tokens:
                    break
                encoding = candidate
                j += 1
            if emit(document[start : spans[j - 1][1]], encoding):
                return sequences
            i = j
    if not sequences:
        raise UserError(f"corpus {corpus.spec!r} is empty: it holds no text to make sequences from")
    return sequences


def corpus_hash(sequences: Iterable[TextSequence]) -> str:
    """sha256 over the sequence texts (what extraction actually read)."""
    digest = hashlib.sha256()
    for sequence in sequences:
        digest.update(sequence.text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()
