"""The LLM writer stage: every summarised head's conversation, in a thread pool.

`write_heads` runs one `attndsl.synthesis.llm.conversation._HeadWork` per head
(``LLMConfig.concurrency`` at once), saving each head's result to
``llm/heads.json`` as it finishes (merged with earlier calls'), so an
interrupted synthesis resumes; `sequence_fits` builds the per-sequence fits a
refinement prompt shows.
"""
from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from attndsl.language import ir
from attndsl.extraction.features import TokenTable
from attndsl.pipeline.rundir import atomic_write_text
from attndsl.synthesis.prompts import RowFit, SequenceFit, TokenCounter
from attndsl.synthesis.scoring import iou_dense
from attndsl.synthesis.summary import HeadSummary
from attndsl.synthesis.llm.client import ChatClient
from attndsl.synthesis.llm.config import LLMConfig
from attndsl.synthesis.llm.conversation import Candidate, DetailFn, FitFn, HeadResult, ScoreFn, _HeadWork
from attndsl.synthesis.llm.log import _json_default
from attndsl.pipeline.layout import RunLayout

def write_programs(summaries: Sequence[HeadSummary], config: LLMConfig, score_fn: ScoreFn,
                   run_dir: str | os.PathLike, **options) -> list[Candidate]:
    """LLM candidates for every summarised head (see the module docstring).

    ``score_fn(programs, layer, head)`` returns each program's synthesis IoU
    on that head; the keyword ``options`` are `write_heads`'s (``detail_fn``,
    ``progress``, ``sleep``, ``fit_fn``).  Per-head outcomes go to
    ``llm/heads.json``; see also `write_heads`.
    """
    return [c for result in write_heads(summaries, config, score_fn, run_dir, **options)
            for c in result.candidates]


def write_heads(
    summaries: Sequence[HeadSummary],
    config: LLMConfig,
    score_fn: ScoreFn,
    run_dir: str | os.PathLike,
    detail_fn: DetailFn | None = None,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    fit_fn: FitFn | None = None,
) -> list[HeadResult]:
    """Like `write_programs`, returning each head's full result, in input order.

    ``detail_fn(program, layer, head)`` (optional) returns a program's
    per-sequence fits for the refinement prompt (see `sequence_fits`);
    ``fit_fn(sources, layer, head)`` (optional, `attndsl.synthesis.fit`) returns each
    program with fitted weights.
    """
    from tqdm.auto import tqdm

    config.check()
    counter = TokenCounter.load(config.tokenizer)
    run_dir = Path(run_dir)
    RunLayout(run_dir).llm_dir.mkdir(parents=True, exist_ok=True)
    chat = ChatClient(config, run_dir, sleep)
    results: list[HeadResult | None] = [None] * len(summaries)
    lock = threading.Lock()

    def one(index: int) -> None:
        summary = summaries[index]
        work = _HeadWork(summary, config, chat, score_fn, detail_fn, fit_fn, counter)
        try:
            result = work.run()
        except Exception as error:  # a bug or a failing score_fn must not end the other heads
            result = work.result(internal_error=f"{type(error).__name__}: {error}")
        with lock:
            results[index] = result
            _save_heads(run_dir, config, [result])

    try:
        with ThreadPoolExecutor(max_workers=config.concurrency) as pool, \
                tqdm(total=len(summaries), desc="LLM programs", unit="head", disable=not progress) as bar:
            futures = [pool.submit(one, i) for i in range(len(summaries))]
            for future in futures:
                future.add_done_callback(lambda _: bar.update(1))
            try:
                for future in futures:
                    future.result()
            except BaseException:  # interrupted: finish the heads in flight, start no more
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        chat.close()
    return [r for r in results if r is not None]


def _save_heads(run_dir: Path, config: LLMConfig, results: Iterable[HeadResult]) -> None:
    """Merge ``results`` into ``llm/heads.json`` (a head's newest result replaces its older one)."""
    path = RunLayout(run_dir).llm_heads
    heads: dict[tuple[int, int], dict] = {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        for h in old.get("heads", []) if isinstance(old, dict) else []:
            if isinstance(h, dict) and isinstance(h.get("layer"), int) and isinstance(h.get("head"), int):
                heads[(h["layer"], h["head"])] = h
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
        pass  # a missing or damaged summary file is rebuilt from this call's results
    for r in results:
        heads[(r.layer, r.head)] = r.as_dict()
    ordered = [heads[key] for key in sorted(heads)]
    usage: dict[str, int] = {}
    for h in ordered:
        for key, value in (h.get("usage") or {}).items():
            if isinstance(value, int):
                usage[key] = usage.get(key, 0) + value
    payload = {
        "config": config.public(),
        "usage": usage,
        "heads": ordered,
    }
    atomic_write_text(path, json.dumps(payload, indent=1, ensure_ascii=False, default=_json_default))


# ------------------------------------------------------------------ helpers for callers


def sequence_fits(program: ir.Program, examples: Sequence[tuple[TokenTable, np.ndarray]]) -> list[SequenceFit]:
    """Per-sequence fit of a program, with the reference interpreter.

    For building a ``detail_fn`` from the same synthesis examples the
    summaries were made from; fine for the few dozen short sequences a
    refinement prompt needs.
    """
    from attndsl.language.interpreter import evaluate

    out = []
    for index, (table, attention) in enumerate(examples):
        real = np.asarray(attention, dtype=np.float64)
        predicted = evaluate(program, table)
        rows = []
        for q in range(1, len(table)):
            rk, pk = int(np.argmax(real[q, : q + 1])), int(np.argmax(predicted[q, : q + 1]))
            rows.append(RowFit(q, rk, float(real[q, rk]), pk, float(predicted[q, pk])))
        out.append(SequenceFit(index, iou_dense(real, predicted), tuple(table.tok), tuple(rows)))
    return out
