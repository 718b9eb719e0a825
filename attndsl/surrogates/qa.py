"""Multiple-choice question answering with and without surrogate heads.

The paper's protocol: each choice is scored by the **mean log-probability of
its tokens** given the question, and the item counts as correct when the
highest-scoring choice is the answer.  Accuracy is reported for the
unmodified model, with programs in the replaced heads, and with the uniform
pattern in the same heads.

Local file format (``.jsonl``, one item per line, blank lines ignored)::

    {"question": "The sky on a clear day is", "choices": ["blue", "green"], "answer": 0}

- ``question``: the context text, used as is;
- ``choices``: two or more answer texts; each is appended to the question
  after one space (unless the question already ends in whitespace), so write
  them without a leading space;
- ``answer``: 0-based index of the correct choice.

Scoring a (context, continuation) pair: the text ``context + continuation`` is
tokenized once (features and token ids as extraction makes them); the
continuation's tokens are those whose character span ends after the context
(a token straddling the boundary belongs to the continuation), each predicted
from everything before it.  A context with no tokens gets the tokenizer's BOS
(or EOS) token in front so the first token can be predicted.
`ContinuationScorer` is also the core of the lm-evaluation-harness adapter.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable
from attndsl.extraction.model_facade import batch_logits, pad_id_of
from attndsl.surrogates.assignment import Assignment
from attndsl.surrogates.handle import attach
from attndsl.surrogates.patterns import PatternFn


@dataclass(frozen=True)
class QAItem:
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class QAResult:
    """Accuracy on a set of items, and each item's chosen answer."""

    label: str
    n_items: int
    n_correct: int
    predictions: tuple[int, ...]

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_items if self.n_items else float("nan")


def load_items(path: str | Path) -> list[QAItem]:
    """Read a ``.jsonl`` file of items; every malformed line is reported in one `UserError`."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as error:
        raise UserError(f"QA file not found: {path}") from error
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text: {error}") from error
    items, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            items.append(_parse_item(json.loads(line)))
        except json.JSONDecodeError as error:
            problems.append(f"{path}:{number}: not valid JSON ({error.msg})")
        except ValueError as error:
            problems.append(f"{path}:{number}: {error}")
    if problems:
        raise UserError("bad QA items:\n  " + "\n  ".join(problems[:20]))
    if not items:
        raise UserError(f"{path} holds no QA items")
    return items


def _parse_item(record) -> QAItem:
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    question, choices, answer = record.get("question"), record.get("choices"), record.get("answer")
    if not isinstance(question, str):
        raise ValueError('"question" must be a string')
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise ValueError('"choices" must be a list of at least two non-empty strings')
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise ValueError(f'"answer" must be an index into the {len(choices)} choices')
    return QAItem(question, tuple(choices), answer)


def join(context: str, choice: str) -> str:
    """The continuation text for a choice (one separating space, see the module docstring)."""
    if context and not context[-1].isspace() and not choice[:1].isspace():
        return " " + choice
    return choice


# --------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Scored:
    """Log-likelihood of a continuation: summed, its token count, and whether it is the greedy decode."""

    logprob: float
    n_tokens: int
    is_greedy: bool

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.n_tokens


class ContinuationScorer:
    """Log-likelihoods of (context, continuation) pairs, optionally with surrogate heads.

    The plain core of the lm-evaluation-harness adapter.  ``assignment=None``
    (or empty) scores with the unmodified model.
    """

    def __init__(self, model, tokenizer, assignment: Assignment | None = None, batch_size: int = 8, pattern_fn: PatternFn | None = None):
        if tokenizer is None:
            raise UserError("scoring text needs the model's tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.assignment = assignment or Assignment()
        self.batch_size = max(1, int(batch_size))
        self.pattern_fn = pattern_fn

    def table(self, context: str, continuation: str) -> tuple[TokenTable, int]:
        """Features of context + continuation and the index of the first continuation token."""
        from attndsl.extraction.tokens import token_table

        text = context + continuation
        table = token_table(self.tokenizer, text)
        ends = np.asarray(table.end)
        is_special = np.array([s == e and t != "" and _is_special(self.tokenizer, i) for t, s, e, i in zip(table.tok, table.start, table.end, table.token_id)])
        inside = np.nonzero((ends > len(context)) & ~is_special)[0]
        if continuation and len(inside) == 0:
            raise UserError(f"the continuation {continuation!r} has no tokens of its own")
        first = int(inside[0]) if len(inside) else len(table)
        if first == 0:
            table = _with_prefix_token(self.tokenizer, text, table)
            first = 1
        return table, first

    def score(self, pairs: Sequence[tuple[str, str]], progress: bool = False, desc: str = "score") -> list[Scored]:
        from tqdm.auto import tqdm

        prepared = [self.table(c, x) for c, x in pairs]
        tables = [t for t, _ in prepared]
        self.assignment.check_tables(tables)
        order = sorted(range(len(prepared)), key=lambda i: -len(tables[i]))
        results: list[Scored | None] = [None] * len(prepared)
        handle = attach(self.model, self.assignment, self.tokenizer, self.pattern_fn) if len(self.assignment) else None
        try:
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
                chosen = [tables[i] for i in batch]
                with torch.no_grad():
                    ids, _, logits = batch_logits(self.model, chosen, pad_id_of(self.tokenizer), handle)
                logp = torch.log_softmax(logits.float(), dim=-1)
                for row, index in enumerate(batch):
                    table, first = prepared[index]
                    n = len(table)
                    targets = ids[row, first:n].to(logp.device)
                    predicted = logp[row, first - 1 : n - 1]
                    token_logp = predicted.gather(1, targets[:, None]).squeeze(1)
                    greedy = bool((predicted.argmax(-1) == targets).all())
                    results[index] = Scored(float(token_logp.double().sum()), int(n - first), greedy)
        finally:
            if handle is not None:
                handle.detach()
        return results  # type: ignore[return-value]


def _is_special(tokenizer, token_id) -> bool:
    return int(token_id) in set(getattr(tokenizer, "all_special_ids", []) or [])


def _with_prefix_token(tokenizer, text: str, table: TokenTable) -> TokenTable:
    """The table with the tokenizer's BOS (or EOS) in front: a context for the first token."""
    from attndsl.extraction.tokens import table_from_ids

    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is None:
        raise UserError("an empty context needs a BOS or EOS token, and this tokenizer has neither")
    specials = [1 if _is_special(tokenizer, i) and s == e else 0 for i, s, e in zip(table.token_id, table.start, table.end)]
    offsets = list(zip(table.start.tolist(), table.end.tolist()))
    return table_from_ids(tokenizer, text, [int(prefix)] + table.token_id.tolist(), [(0, 0)] + offsets, [1] + specials)


def evaluate_items(
    model,
    tokenizer,
    items: Sequence[QAItem],
    assignment: Assignment | None = None,
    label: str = "model",
    batch_size: int = 8,
    pattern_fn: PatternFn | None = None,
    progress: bool = False,
) -> QAResult:
    """Accuracy: each item's choice with the highest mean log-probability per token."""
    pairs, owners = [], []
    for number, item in enumerate(items):
        for choice in item.choices:
            pairs.append((item.question, join(item.question, choice)))
            owners.append(number)
    scorer = ContinuationScorer(model, tokenizer, assignment, batch_size, pattern_fn)
    scores = scorer.score(pairs, progress=progress, desc=label)
    per_item: list[list[float]] = [[] for _ in items]
    for owner, scored in zip(owners, scores):
        per_item[owner].append(scored.mean_logprob)
    predictions = tuple(int(np.argmax(s)) for s in per_item)
    correct = sum(int(p == item.answer) for p, item in zip(predictions, items))
    return QAResult(label, len(items), correct, predictions)


def compare(
    model,
    tokenizer,
    items: Sequence[QAItem],
    heads: Iterable,
    batch_size: int = 8,
    pattern_fn: PatternFn | None = None,
    progress: bool = True,
) -> list[QAResult]:
    """Accuracy unmodified, with the programs in ``heads``, and with the uniform pattern there.

    ``heads``: (layer, head, program, ...) tuples or `attndsl.surrogates.replace.RankedHead`s.
    """
    from attndsl.surrogates.replace import _as_ranked

    ranked = _as_ranked(heads)
    programs = Assignment.from_items((h.layer, h.head, h.program) for h in ranked)
    uniform = Assignment.uniform((h.layer, h.head) for h in ranked)
    return [
        evaluate_items(model, tokenizer, items, None, "unmodified", batch_size, pattern_fn, progress),
        evaluate_items(model, tokenizer, items, programs, "programs", batch_size, pattern_fn, progress),
        evaluate_items(model, tokenizer, items, uniform, "uniform", batch_size, pattern_fn, progress),
    ]


def format_results(results: Sequence[QAResult], n_heads: int | None = None) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.label:<12} accuracy {r.accuracy:6.1%}  ({r.n_correct}/{r.n_items})")
    if n_heads is not None:
        lines.append(f"({n_heads} heads replaced)")
    return "\n".join(lines)
