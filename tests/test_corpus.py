"""Corpora and sentence packing."""
import json

import pytest

from attndsl.extraction.corpus import Corpus, corpus_hash, load_corpus, make_sequences, sentence_spans, split_of
from attndsl.errors import UserError
from tests.tiny import bpe_tokenizer, metaspace_tokenizer


def test_builtin_corpus_has_about_a_hundred_stories():
    docs = list(load_corpus("builtin").documents)
    assert 90 <= len(docs) <= 130
    assert all("<|endoftext|>" not in d and len(d.split()) > 20 for d in docs)


def test_txt_splits_on_endoftext_lines_else_blank_lines(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("One. Two.\n\nStill one.\n<|endoftext|>\nThree.\n<|endoftext|>\n")
    assert list(load_corpus(str(a)).documents) == ["One. Two.\n\nStill one.", "Three."]
    b = tmp_path / "b.txt"
    b.write_text("First story.\nSame story.\n\n  \nSecond story.\n")
    assert list(load_corpus(str(b)).documents) == ["First story.\nSame story.", "Second story."]


def test_txt_separator_modes(tmp_path):
    """endoftext keeps blank-line paragraphs in one story; blank-line cuts at both; auto picks."""
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("One. Two.\n\nStill one.\n<|endoftext|>\nThree.\n\nFour.\n")
    assert list(load_corpus(str(mixed), txt_separator="endoftext").documents) == ["One. Two.\n\nStill one.", "Three.\n\nFour."]
    assert list(load_corpus(str(mixed), txt_separator="blank-line").documents) == ["One. Two.", "Still one.", "Three.", "Four."]
    assert list(load_corpus(str(mixed)).documents) == list(load_corpus(str(mixed), txt_separator="endoftext").documents)
    paragraphs = tmp_path / "paragraphs.txt"  # no <|endoftext|> at all
    paragraphs.write_text("Para one.\n\nPara two.\n \nPara three.\n")
    assert list(load_corpus(str(paragraphs)).documents) == ["Para one.", "Para two.", "Para three."]
    assert list(load_corpus(str(paragraphs), txt_separator="endoftext").documents) == [
        "Para one.\n\nPara two.\n \nPara three."
    ]
    with pytest.raises(UserError, match="one of auto, endoftext, blank-line"):
        load_corpus(str(paragraphs), txt_separator="comma")
    with pytest.raises(UserError, match="applies to .txt corpora only"):
        load_corpus("builtin", txt_separator="endoftext")


def test_paragraphs_in_one_story_pack_up_to_max_tokens(tmp_path):
    """The issue's case: stories written as blank-line paragraphs give short sequences unless
    paragraphs stay inside the story."""
    tokenizer = bpe_tokenizer()
    paragraph = "The cat sat on the mat. The dog ran in the park."
    path = tmp_path / "stories.txt"
    path.write_text("\n\n".join([paragraph] * 12) + "\n")
    cut = make_sequences(load_corpus(str(path)), tokenizer, max_tokens=64)
    joined = make_sequences(load_corpus(str(path), txt_separator="endoftext"), tokenizer, max_tokens=64)
    one_paragraph = len(tokenizer(paragraph)["input_ids"])
    longest_sentence = max(len(tokenizer(x)["input_ids"]) for x in ("The cat sat on the mat.", "The dog ran in the park."))
    assert max(len(s.table) for s in cut) == one_paragraph < 64 - longest_sentence
    assert all(len(s.table) <= 64 for s in joined)
    # greedy packing across paragraphs: every sequence but the last is within one sentence of the limit
    assert all(len(s.table) > 64 - longest_sentence - 2 for s in joined[:-1]) and len(joined) > 1
    assert any("\n\n" in s.text for s in joined)


def test_jsonl_reads_the_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"story": "A cat sat."}) + "\n\n" + json.dumps({"story": "A dog ran."}) + "\n")
    assert list(load_corpus(str(path), text_field="story").documents) == ["A cat sat.", "A dog ran."]
    with pytest.raises(UserError, match="no string field 'text'"):
        load_corpus(str(path))
    path.write_text("{not json\n")
    with pytest.raises(UserError, match=":1: not valid JSON"):
        load_corpus(str(path))


def test_missing_file_and_unavailable_hub_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="corpus file not found"):
        load_corpus(str(tmp_path / "nope.txt"))
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    corpus = load_corpus("hf:roneneldan/TinyStories:validation")
    with pytest.raises(UserError, match="pip install datasets"):
        make_sequences(corpus, bpe_tokenizer())


def test_empty_corpus_is_a_user_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n<|endoftext|>\n   \n")
    with pytest.raises(UserError, match="empty"):
        make_sequences(load_corpus(str(path)), bpe_tokenizer())


def test_sentence_spans_keep_closing_quotes_and_newlines():
    doc = 'She said, “Go!” Then he went.\nThe end'
    assert [doc[s:e] for s, e in sentence_spans(doc)] == ["She said, “Go!”", "Then he went.", "The end"]


@pytest.mark.parametrize("make", [bpe_tokenizer, metaspace_tokenizer])
def test_sequences_are_whole_sentences_within_the_token_limit(make):
    tokenizer = make()
    corpus = Corpus("t", ["The cat sat. The dog ran far away. A bird sang! Then it was night.", "Short one."])
    sequences = make_sequences(corpus, tokenizer, max_tokens=12)
    assert all(len(s.table) <= 12 for s in sequences)
    joined = " ".join(s.text for s in sequences)
    assert joined.split() == " ".join(corpus.documents).split()  # nothing lost, nothing repeated
    assert all(s.text.rstrip().endswith((".", "!")) for s in sequences)
    # packing is greedy: a sequence plus the next sentence of its story would not fit
    doc = corpus.documents[0]
    in_doc = [s for s in sequences if s.text in doc]
    for current, following in zip(in_doc, in_doc[1:]):
        start = doc.index(current.text)
        next_sentence_end = doc.index(following.text) + len(sentence_of(following.text))
        assert len(tokenizer(doc[start:next_sentence_end])["input_ids"]) > 12
    for s in sequences:
        assert list(s.table.token_id) == tokenizer(s.text)["input_ids"]


def sentence_of(text):
    s, e = sentence_spans(text)[0]
    return text[s:e]


def test_long_sentence_is_cut_at_the_limit():
    tokenizer = bpe_tokenizer()
    long = "The little dog ran and ran and ran across the wide green park all day long."
    (sequence,) = make_sequences(Corpus("t", [long]), tokenizer, max_tokens=6)
    assert len(sequence.table) == 6
    assert long.startswith(sequence.text) and len(sequence.text) < len(long)


def test_split_is_deterministic_by_text_and_seed():
    sequences = make_sequences(load_corpus("builtin"), bpe_tokenizer(), max_tokens=64, heldout_fraction=0.3)
    again = make_sequences(load_corpus("builtin"), bpe_tokenizer(), max_tokens=64, heldout_fraction=0.3)
    assert [s.split for s in sequences] == [s.split for s in again]
    assert corpus_hash(sequences) == corpus_hash(again)
    share = sum(s.split == "heldout" for s in sequences) / len(sequences)
    assert 0.15 < share < 0.45
    assert all(s.split == split_of(s.text, 0.3, 0) for s in sequences)
    other_seed = [split_of(s.text, 0.3, 1) for s in sequences]
    assert other_seed != [s.split for s in sequences]


def test_max_sequences_stops_early():
    sequences = make_sequences(load_corpus("builtin"), bpe_tokenizer(), max_sequences=7)
    assert len(sequences) == 7


def test_max_sentences_limits_sentences_per_sequence():
    from attndsl.extraction.corpus import sentence_spans

    corpus = load_corpus("builtin")
    single = make_sequences(corpus, bpe_tokenizer(), max_tokens=64, max_sentences=1, max_sequences=40)
    packed = make_sequences(corpus, bpe_tokenizer(), max_tokens=64, max_sequences=40)
    assert all(len(sentence_spans(s.text)) == 1 for s in single)
    assert any(len(sentence_spans(s.text)) > 1 for s in packed)
    assert sum(len(s.table) for s in single) < sum(len(s.table) for s in packed)
