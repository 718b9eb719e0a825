"""Token tables of token-id sequences (generation, raw ``model(input_ids)`` calls).

Where only ids exist, the features come from the decoded text: each token's
span is where its text ends up in the decoded prefix.  `_IncrementalTable`
keeps the decoded text of a growing sequence, so a decoding step costs one
decode of the new token (and a rebuild when decoding changed earlier text).
"""
from __future__ import annotations

from typing import Sequence

from attndsl.extraction.features import TokenTable

def table_for_ids(tokenizer, ids: Sequence[int]) -> TokenTable:
    """Features of a token-id sequence, from its decoded text.

    Used where only ids exist (generation, raw ``model(input_ids)`` calls): each
    token's span is where its text ends up in the decoded prefix; special
    tokens (BOS) get their literal text and an empty span, as in
    `attndsl.extraction.tokens.token_table`.
    """
    return _IncrementalTable(tokenizer).extend(ids)


class _IncrementalTable:
    """Decoded text and token spans of a growing id sequence (one decode per new token)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.ids: list[int] = []
        self.ordinary: list[int] = []
        self.text = ""
        self.offsets: list[tuple[int, int]] = []
        self.special: list[int] = []

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def extend(self, new_ids: Sequence[int]) -> TokenTable:
        from attndsl.extraction.tokens import table_from_ids

        changed = False
        for token in (int(i) for i in new_ids):
            self.ids.append(token)
            if token in self.special_ids:
                self.offsets.append((len(self.text), len(self.text)))
                self.special.append(1)
                continue
            self.ordinary.append(token)
            text = self._decode(self.ordinary)
            changed = changed or not text.startswith(self.text)
            self.offsets.append((min(len(self.text), len(text)), len(text)))
            self.special.append(0)
            self.text = text
        if changed:
            return self._rebuild()
        return table_from_ids(self.tokenizer, self.text, self.ids, self.offsets, self.special)

    def _rebuild(self) -> TokenTable:
        """Decoding changed earlier text (a multi-byte character completed): redo all spans."""
        ids = list(self.ids)
        self.__init__(self.tokenizer)
        # decode prefix by prefix; a span may only grow monotonically
        for token in ids:
            self.ids.append(token)
            if token in self.special_ids:
                self.offsets.append((len(self.text), len(self.text)))
                self.special.append(1)
                continue
            self.ordinary.append(token)
            text = self._decode(self.ordinary)
            common = _common_prefix(self.text, text)
            start = min(common, len(self.text))
            if start < len(self.text):  # earlier tokens' text changed: they share this token's span
                self.offsets = [(min(s, start), min(e, len(text))) for s, e in self.offsets]
            self.offsets.append((start, len(text)))
            self.special.append(0)
            self.text = text
        from attndsl.extraction.tokens import table_from_ids

        return table_from_ids(self.tokenizer, self.text, self.ids, self.offsets, self.special)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
