"""Token features from Hugging Face fast tokenizers.

Every tokenizer family reduces to "ids and character spans": the fast
tokenizer's offset mapping gives each token's span in the text, and
`attndsl.extraction.features.table_from_spans` computes the DSL features from the text and
the spans.  Special tokens (BOS) get their literal text and an empty span at
the position where they stand.

Byte-level BPE (GPT-2, SmolLM2) and SentencePiece/Metaspace (Llama) offsets may
include the space before a word; the surface text ``tok`` drops leading spaces
(see `attndsl.extraction.features.surface`).  When a multi-byte character is split over
several byte tokens, every piece reports the whole character's span, so each
piece's ``tok`` is that character; only the first is a word start.

Spans are normalised in two ways so that features do not depend on offset
conventions: whitespace the tokenizer trimmed from a span (``trim_offsets``) is
given back to the token that follows it, so a token that is only a space has
``tok == " "``; and a bare space marker the tokenizer prepended itself
(SentencePiece ``prepend_scheme``) gets an empty span and ``tok == ""``.
"""
from __future__ import annotations

from typing import Sequence

from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable, table_from_spans


def _encode(tokenizer, text: str, add_bos: bool | None):
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("attndsl needs a fast (Rust) tokenizer for character offsets")
    if add_bos is None:
        encoding = tokenizer(
            text, return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True
        )
        ids = list(encoding["input_ids"])
        offsets = [tuple(o) for o in encoding["offset_mapping"]]
        special = list(encoding["special_tokens_mask"])
        # keep only leading specials (BOS); drop trailing EOS some tokenizers append
        while ids and special[-1] and len(ids) > 1 and any(not s for s in special):
            ids, offsets, special = ids[:-1], offsets[:-1], special[:-1]
        return ids, offsets, special
    encoding = tokenizer(
        text, return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=False
    )
    ids = list(encoding["input_ids"])
    offsets = [tuple(o) for o in encoding["offset_mapping"]]
    special = [0] * len(ids)
    if add_bos:
        bos = tokenizer.bos_token_id
        if bos is None:
            raise UserError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no BOS token")
        ids, offsets, special = [bos] + ids, [(0, 0)] + offsets, [1] + special
    return ids, offsets, special


def token_table(tokenizer, text: str, add_bos: bool | None = None) -> TokenTable:
    """Tokenize ``text`` and compute its feature table.

    ``add_bos=None`` follows the tokenizer's own convention (its
    ``add_special_tokens`` behaviour, trailing EOS dropped); True/False force a
    BOS token in front or none.
    """
    ids, offsets, special = _encode(tokenizer, text, add_bos)
    return table_from_ids(tokenizer, text, ids, offsets, special)


def table_from_ids(
    tokenizer,
    text: str,
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    special_mask: Sequence[int],
) -> TokenTable:
    """A table from an encoding already made (ids, offsets, special-token mask)."""
    spans: list[tuple[int, int]] = []
    literals: list[str | None] = []
    pieces = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    cursor = 0  # end of the previous ordinary token
    for piece, (start, end), is_special in zip(pieces, offsets, special_mask):
        start, end = int(start), int(end)
        if is_special:
            literals.append(piece)
            spans.append((cursor, cursor))
            continue
        literals.append(None)
        if cursor < start and text[cursor:start].isspace():
            start = cursor  # the leading space that trim_offsets removed belongs to this token
        if piece and all(c in _SPACE_MARKERS for c in piece) and not text[start:end].isspace():
            end = start  # a marker the tokenizer prepended: no text of its own
        spans.append((start, end))
        cursor = max(cursor, end)
    return table_from_spans(text, list(ids), spans, literals)


#: pieces made only of these stand for a space (SentencePiece "▁", byte-level "Ġ")
_SPACE_MARKERS = frozenset("▁Ġ")


def encode_sequences(
    tokenizer, texts: Sequence[str], add_bos: bool | None = None
) -> tuple[list[list[int]], list[TokenTable]]:
    """Token ids and feature tables for several texts (ids are what the model reads)."""
    all_ids, tables = [], []
    for text in texts:
        table = token_table(tokenizer, text, add_bos)
        all_ids.append([int(i) for i in table.token_id])
        tables.append(table)
    return all_ids, tables
