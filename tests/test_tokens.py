"""Token tables from fast tokenizers: ids and spans agree with the tokenizer's offsets."""
import pytest

from attndsl.extraction.features import surface
from attndsl.extraction.tokens import encode_sequences, token_table
from tests.tiny import bpe_tokenizer, metaspace_tokenizer

TEXTS = [
    "Once upon a time, there was a little dog named Max.",
    'He said, “Hi there!”\nShe said "no" — and left.',
    "Café naïve jalapeño 😀 ok.  Two  spaces\n\nnew paragraph",
    "Mom's cat didn't run; it's 42 o'clock.",
]


def _check_alignment(tokenizer, text, table, bos_literal=None):
    encoding = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = [i for i, m in zip(encoding["input_ids"], encoding["special_tokens_mask"])]
    assert list(table.token_id) == ids
    covered = [False] * len(text)
    for i, ((s0, e0), special) in enumerate(zip(encoding["offset_mapping"], encoding["special_tokens_mask"])):
        s, e = int(table.start[i]), int(table.end[i])
        if special:
            assert s == e and table.tok[i] == bos_literal
            continue
        # our span is the tokenizer's, extended back over trimmed whitespace only
        assert s <= s0 and text[s:s0].strip() == ""
        assert e == e0 or (e == s and text[s0:e0].strip())  # a bare prepended marker
        assert table.tok[i] == surface(text[s:e])
        for p in range(s, e):
            covered[p] = True
    assert all(covered[p] for p, ch in enumerate(text) if not ch.isspace())
    # tokens that own their characters decode to their surface text
    for i, token_id in enumerate(table.token_id):
        overlapping = (i > 0 and table.start[i] < table.end[i - 1]) or (
            i + 1 < len(table) and table.start[i + 1] < table.end[i]
        )
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
        if overlapping or piece in ("<unk>", "<s>") or table.tok[i] == "":
            continue
        assert tokenizer.decode([int(token_id)]).strip() == table.tok[i].strip()


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_bpe_spans_match_offsets(text):
    tokenizer = bpe_tokenizer()
    table = token_table(tokenizer, text)
    _check_alignment(tokenizer, text, table)
    assert table.text == text


@pytest.mark.parametrize("text", TEXTS)
def test_metaspace_spans_match_offsets(text):
    tokenizer = metaspace_tokenizer()
    table = token_table(tokenizer, text)
    _check_alignment(tokenizer, text, table, bos_literal="<s>")
    assert table.tok[0] == "<s>" and table.start[0] == table.end[0] == 0
    assert not table.word_start[0]


def test_quotes_newlines_and_split_characters_get_their_features():
    text = 'He said, “Hi there!”\nCafé 😀 ok.'
    for make in (bpe_tokenizer, metaspace_tokenizer):
        table = token_table(make(), text)
        toks = list(table.tok)
        newline = toks.index("\n")
        assert table.newline[newline] and table.space[newline]
        assert table.sent[newline + 1] == table.sent[newline] + 1  # a new sentence after !”\n
        # every piece of a split emoji reads as the emoji; only the first starts a word
        emoji = [i for i, t in enumerate(toks) if t == "😀"]
        assert emoji and table.word_start[emoji[0]] and not any(table.word_start[emoji[1:]])
        assert any("“" in t for t in toks) and any("”" in t for t in toks)
        quote = next(i for i, t in enumerate(toks) if t == "“")
        assert table.punct[quote] and not table.alpha[quote]
        # space-only tokens read as a space, never as the next character
        for i, t in enumerate(toks):
            if text[table.start[i] : table.end[i]].isspace():
                assert t == text[table.start[i] : table.end[i]] and table.space[i]


def test_bos_is_added_or_left_out_on_request():
    tokenizer = bpe_tokenizer()
    plain = token_table(tokenizer, "A dog.")
    assert plain.tok[0] == "A"  # GPT-2 style: no BOS by default
    with_bos = token_table(tokenizer, "A dog.", add_bos=True)
    assert with_bos.tok[0] == "<|endoftext|>" and list(with_bos.token_id[1:]) == list(plain.token_id)
    without = token_table(metaspace_tokenizer(), "A dog.", add_bos=False)
    assert without.tok[0] != "<s>"


def test_encode_sequences_returns_ids_and_tables():
    ids, tables = encode_sequences(metaspace_tokenizer(), ["A dog.", "Two cats ran."])
    assert [list(t.token_id) for t in tables] == ids
    assert tables[1].text == "Two cats ran."


@pytest.mark.slow
def test_smollm2_tokenizer_alignment():
    from attndsl.extraction.models import load_model

    tokenizer = load_model("smollm2").tokenizer
    for text in TEXTS:
        _check_alignment(tokenizer, text, token_table(tokenizer, text))
