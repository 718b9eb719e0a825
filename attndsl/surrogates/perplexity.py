"""Perplexity of a model on token tables, optionally with surrogate heads.

Perplexity is the exponential of the token-level mean negative log-likelihood
over every predicted token of the given sequences (token t predicted from
tokens < t, so a sequence of n tokens contributes n − 1), batched with right
padding; padding never counts.  Every result says how many sequences and
predicted tokens it rests on.  The replace stage (`attndsl.surrogates.replace`)
measures its curves with `perplexity`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from attndsl.errors import UserError
from attndsl.extraction.features import TokenTable
from attndsl.extraction.model_facade import batch_from_tables, model_shape, pad_id_of, position_ids_for, tables_for_texts
from attndsl.surrogates.assignment import Assignment
from attndsl.surrogates.handle import attach
from attndsl.surrogates.patterns import PatternFn


@dataclass(frozen=True)
class Perplexity:
    """Summed NLL over predicted tokens, and what it rests on."""

    nll_sum: float
    n_tokens: int  # predicted tokens
    n_sequences: int
    #: (summed NLL, predicted tokens) of each sequence, in the order given (for per-length reports)
    per_sequence: tuple[tuple[float, int], ...] = ()

    def subset(self, indices: Sequence[int]) -> "Perplexity":
        """The perplexity of some of the sequences (indices into the order given)."""
        parts = [self.per_sequence[i] for i in indices]
        return Perplexity(sum(n for n, _ in parts), sum(c for _, c in parts), len(parts), tuple(parts))

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.n_tokens if self.n_tokens else float("nan")

    @property
    def ppl(self) -> float:
        return math.exp(self.mean_nll) if self.n_tokens else float("nan")


def _as_tables(tokenizer, sequences) -> list[TokenTable]:
    sequences = list(sequences)
    if sequences and isinstance(sequences[0], str):
        if tokenizer is None:
            raise UserError("texts need a tokenizer")
        return tables_for_texts(tokenizer, sequences)
    return sequences


def _batches(tables: Sequence[TokenTable], batch_size: int) -> list[list[int]]:
    """Index batches of similar lengths (longest first), to waste little on padding."""
    order = sorted(range(len(tables)), key=lambda i: -len(tables[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def _batch_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int, list]:
    logits = logits[:, :-1].float()
    targets = ids[:, 1:]
    valid = (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    per_row = nll.view(targets.shape).double() * valid
    rows = [(float(per_row[i].sum()), int(valid[i].sum())) for i in range(len(targets))]
    nll = nll.view(targets.shape)[valid]
    return float(nll.double().sum()), int(valid.sum()), rows


def perplexity(
    model,
    sequences: Sequence[TokenTable] | Sequence[str],
    assignment: Assignment | None = None,
    tokenizer=None,
    batch_size: int = 8,
    pattern_fn: PatternFn | None = None,
    progress: bool = False,
    desc: str = "perplexity",
) -> Perplexity:
    """Perplexity of ``model`` on the sequences, with the assignment's heads replaced (if any)."""
    from tqdm.auto import tqdm

    tables = _as_tables(tokenizer, sequences)
    if not tables:
        raise UserError("no sequences to measure perplexity on")
    if batch_size < 1:
        raise UserError("batch size must be at least 1")
    assignment = assignment or Assignment()
    assignment.check(*model_shape(model))
    assignment.check_tables(tables)
    device = next(model.parameters()).device
    pad = pad_id_of(tokenizer)
    handle = attach(model, assignment, tokenizer, pattern_fn) if len(assignment) else None
    total, count = 0.0, 0
    per_sequence: list[tuple[float, int]] = [(0.0, 0)] * len(tables)
    try:
        for batch in tqdm(_batches(tables, batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
            chosen = [tables[i] for i in batch]
            ids, mask = batch_from_tables(chosen, pad)
            if handle is not None:
                logits = handle.logits(tables=chosen)
            else:
                ids_d, mask_d = ids.to(device), mask.to(device)
                logits = model(
                    input_ids=ids_d, attention_mask=mask_d, position_ids=position_ids_for(mask_d), use_cache=False
                ).logits
            nll, n, rows = _batch_nll(logits, ids.to(logits.device), mask.to(logits.device))
            total += nll
            count += n
            for i, row in zip(batch, rows):
                per_sequence[i] = row
    finally:
        if handle is not None:
            handle.detach()
    return Perplexity(total, count, len(tables), tuple(per_sequence))
