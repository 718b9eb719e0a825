"""Standard library programs against matrices worked out by hand.

Sequence A: "The cat sat. The cat ran!" as one token per word:
    0 The  1 cat  2 sat  3 .  4 The  5 cat  6 ran  7 !
(sentences: tokens 0–3 and 4–7).  Sequence B: "Hello world." in word pieces:
    0 Hel  1 lo  2 ␣wor  3 ld  4 .
Expected rows are written as {key: unnormalised weight}; the helper divides
each row by its sum.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from attndsl import stdlib
from attndsl.cli import main
from attndsl.extraction.features import table_from_words
from attndsl.language.interpreter import evaluate

A = table_from_words(["The", "cat", "sat", ".", "The", "cat", "ran", "!"])
B = table_from_words(["Hel", "lo", " wor", "ld", "."], separator="")
PROGRAMS = {p.name: p for p in stdlib.programs()}


def matrix(n: int, rows: dict[int, dict[int, float]]) -> np.ndarray:
    out = np.zeros((n, n))
    for q in range(n):
        row = rows[q]
        total = sum(row.values())
        for k, w in row.items():
            out[q, k] = w / total
    return out


def one_hot(n: int, keys: list[int]) -> np.ndarray:
    return matrix(n, {q: {k: 1.0} for q, k in enumerate(keys)})


EXPECTED_A = {
    "sink": one_hot(8, [0] * 8),
    "previous": one_hot(8, [0, 0, 1, 2, 3, 4, 5, 6]),
    "current": one_hot(8, list(range(8))),
    "uniform": matrix(8, {q: {k: 1.0 for k in range(q + 1)} for q in range(8)}),
    "local_decay": matrix(8, {q: {k: math.exp(-0.7 * (q - k)) for k in range(max(0, q - 4), q + 1)} for q in range(8)}),
    "induction": one_hot(8, [0, 0, 0, 0, 1, 2, 0, 0]),
    "duplicate": one_hot(8, [0, 1, 2, 3, 0, 1, 6, 7]),
    "same_text": one_hot(8, [0, 1, 2, 3, 0, 1, 6, 7]),
    "last_punct": one_hot(8, [0, 0, 0, 0, 3, 3, 3, 3]),
    "sentence_start": one_hot(8, [0, 0, 0, 0, 4, 4, 4, 4]),
    "same_word": one_hot(8, list(range(8))),
    "word_start": one_hot(8, list(range(8))),
    "last_sentence_end": one_hot(8, [0, 0, 0, 0, 3, 3, 3, 3]),
    "sink_previous": matrix(8, {0: {0: 0.7}, 1: {0: 1.0}, **{q: {0: 0.7, q - 1: 0.3} for q in range(2, 8)}}),
    "induction_sink": matrix(8, {**{q: {0: 0.2} for q in range(8)}, 4: {0: 0.2, 1: 0.8}, 5: {0: 0.2, 2: 0.8}}),
    "previous_or_sentence_start": one_hot(8, [0, 0, 1, 0, 3, 4, 5, 4]),
    "local_words": matrix(
        8, {q: {**{k: (q - k + 1) ** -1.5 for k in range(1, q)}, q: (1.25 if q > 0 else 0.25)} for q in range(8)}
    ),
}

def softmax_rows(n: int, logit, allowed=lambda q, k: True) -> np.ndarray:
    """Row-wise softmax of ``logit(q, k)`` over the allowed keys k <= q."""
    out = np.zeros((n, n))
    for q in range(n):
        keys = [k for k in range(q + 1) if allowed(q, k)]
        e = np.array([math.exp(logit(q, k)) for k in keys])
        out[q, keys] = e / e.sum()
    return out


_FUNCTION_WORDS_A = {0: 1.5, 3: -2.0, 4: 1.5, 7: -2.0}  # "The", ".", "The", "!" of sequence A
EXPECTED_A.update({
    "previous_soft": softmax_rows(8, lambda q, k: 4.0 * (k == q - 1) - 0.5 * (q - k)),
    "function_words": softmax_rows(8, lambda q, k: _FUNCTION_WORDS_A.get(k, 0.0) - 0.25 * (q - k),
                                   lambda q, k: k < q or q == 0),
})

EXPECTED_B = {
    "same_word": matrix(5, {0: {0: 1}, 1: {0: 1, 1: 1}, 2: {2: 1}, 3: {2: 1, 3: 1}, 4: {4: 1}}),
    "word_start": one_hot(5, [0, 0, 2, 2, 4]),
    "previous_or_sentence_start": one_hot(5, [0, 0, 1, 2, 0]),
    # pieces that start no word get no local_words weight except the self term
    "local_words": matrix(5, {0: {0: 1}, 1: {1: 1}, 2: {2: 1.25}, 3: {2: 2 ** -1.5, 3: 0.25}, 4: {2: 3 ** -1.5, 4: 1.25}}),
}


def test_every_library_program_has_a_hand_computed_expectation():
    assert set(PROGRAMS) == set(EXPECTED_A)


@pytest.mark.parametrize("name", sorted(EXPECTED_A))
def test_library_program_on_sequence_a(name):
    np.testing.assert_allclose(evaluate(PROGRAMS[name], A), EXPECTED_A[name], atol=1e-12)


@pytest.mark.parametrize("name", sorted(EXPECTED_B))
def test_library_program_on_word_pieces(name):
    np.testing.assert_allclose(evaluate(PROGRAMS[name], B), EXPECTED_B[name], atol=1e-12)


def test_features_of_hand_made_sequences():
    assert A.tok == ("The", "cat", "sat", ".", "The", "cat", "ran", "!")
    assert list(A.sent) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert B.tok == ("Hel", "lo", "wor", "ld", ".")
    assert list(B.word) == [0, 0, 1, 1, 2] and list(B.word_pos) == [0, 1, 0, 1, 0]
    assert list(B.word_start) == [True, False, True, False, True]


@pytest.mark.parametrize("path", stdlib.paths(), ids=lambda p: p.name)
def test_cli_compiles_every_library_file(path, capsys):
    assert main(["compile", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}:" in out and "compiled" in out
