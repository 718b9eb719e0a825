"""What an LLM adds over the offline search, measured on N heads of a run.

``python -m benchmarks llm --url URL --model NAME --heads N [--run RUN] [--json PATH]``

Against any OpenAI-compatible endpoint (a local server such as
llama-cpp-python's, or the tests' fake server), for N heads chosen across
layers (evenly spaced layers, head index rotating), it runs the LLM writer
exactly as `attndsl synthesize` does (same summaries, prompts, scoring and
weight fitting: `attndsl.synthesis.synthesize.llm_tools`) and the enumerative search on
the same heads, then reports:

- answers, failed requests, valid-program rate before repair (programs of
  first and refinement answers that compile) and after repair (those plus the
  broken ones later fixed, by the model's repair answers or by the nearest
  valid rewrite, at most one fix per broken program);
- prompt tokens (the server's count and our own), answer tokens, seconds per
  head (the endpoint's latency summed over the head's requests);
- mean held-out IoU over the N heads of: the LLM's best program with its own
  weights, the best with fitted weights, the LLM's best of either; the
  search's program; the library of the search's programs alone and the
  pooled library (LLM + search; each head's best is chosen on synthesis
  sequences over the whole library) — and whether pooling moved the mean.

``python -m benchmarks llm --prompt-sizes`` needs no endpoint: it measures
the prompts themselves with SmolLM2's tokenizer (`prompt_sizes`) — the
characters per token of summaries and whole messages (what the writer's
estimate must stay below) and the estimated and real sizes of first and
refinement prompts for five synthetic heads on TinyStories sentences.

Without ``--run`` a run is extracted first into ``--out`` (the embedded
SmolLM2 on the TinyStories sample, sentences packed to 64 tokens).  The
harness (`python -m benchmarks` with no name) skips this module: it needs an
endpoint.  Nothing here runs in CI except against the fake server.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def run(quick: bool) -> list[dict]:
    """Harness entry point: this benchmark needs an endpoint, so it adds no rows here."""
    print("[bench_llm] needs an endpoint: python -m benchmarks llm --url URL --model NAME --heads N", file=sys.stderr)
    return []


def choose_heads(n_layers: int, n_heads: int, n: int) -> list[tuple[int, int]]:
    """``n`` distinct heads spread over the layers (evenly spaced layers, head index rotating)."""
    n = max(1, min(n, n_layers * n_heads))
    out: list[tuple[int, int]] = []
    for i in range(n):
        layer, head = (i * n_layers) // n, (i * 5) % n_heads
        while (layer, head) in out:
            if all((layer, h) in out for h in range(n_heads)):
                layer = (layer + 1) % n_layers
            else:
                head = (head + 1) % n_heads
        out.append((layer, head))
    return out


def _valid_rates(records: list[dict]) -> tuple[float, float, int]:
    """(valid before repair, valid after repair, programs found) over conversations."""
    found = valid = fixed = 0
    conversations: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("answer") is None or "programs_found" not in r:
            continue
        conversations.setdefault((r.get("layer"), r.get("head"), r.get("conversation")), []).append(r)
    for answers in conversations.values():
        answers.sort(key=lambda r: r.get("round", 0))
        first = answers[0]
        f, v = int(first["programs_found"]), int(first["programs_valid"])
        repaired = int(first.get("programs_rewritten", 0))
        for r in answers[1:]:
            repaired += int(r["programs_valid"]) + int(r.get("programs_rewritten", 0))
        found, valid = found + f, valid + v
        fixed += min(f - v, repaired)
    if found == 0:
        return float("nan"), float("nan"), 0
    return valid / found, (valid + fixed) / found, found


def measure(run_dir: str | Path, config, n_heads: int, work_dir: str | Path, search_settings=None,
            progress: bool = False) -> dict:
    """Run the LLM writer and the search on ``n_heads`` heads of an extracted run; return the report."""
    from attndsl.extraction.batch import TokenBatch
    from attndsl.synthesis.library import LibraryProgram, build_library, choose_best
    from attndsl.synthesis.llm import read_jsonl, write_heads
    from attndsl.synthesis.scoring import score
    from attndsl.synthesis.search import SearchSettings, search_heads
    from attndsl.extraction.store import open_store
    from attndsl.synthesis.summary import summarize_head
    from attndsl.synthesis.synthesize import _search_candidates, llm_tools
    from attndsl.language.validate import compile_source

    store = open_store(run_dir)
    synth, held = store.synthesis_indices, store.heldout_indices
    tables, held_tables = store.tables(synth), store.tables(held)
    heads = choose_heads(store.n_layers, store.n_heads, n_heads)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "llm" / "requests.jsonl"
    skip = len(read_jsonl(log_path))

    tools = llm_tools(store, tables, synth)
    summaries = [summarize_head(tools.examples(layer, head), layer, head) for layer, head in heads]
    started = time.perf_counter()
    results = write_heads(summaries, config, tools.score_fn, work_dir, tools.detail_fn, progress=progress,
                          fit_fn=tools.fit_fn)
    llm_wall = time.perf_counter() - started
    records = [r for r in read_jsonl(log_path)[skip:]]

    settings = search_settings or SearchSettings()
    started = time.perf_counter()
    searched = search_heads(store, tables, synth, heads, settings, progress=progress)
    search_wall = time.perf_counter() - started

    held_batch = TokenBatch.from_tables(held_tables)

    def heldout(programs_by_head: dict) -> dict:
        items = [(key, p) for key, p in programs_by_head.items() if p is not None]
        if not items:
            return {}
        programs = [compile_source(source)[0] for _, source in items]
        result = score(programs, store, held_batch, held)
        return {key: float(result.iou[i, key[0], key[1]]) for i, (key, _) in enumerate(items)}

    def best_of(result, weights: set[str]):
        pool = [c for c in result.candidates if c.weights in weights]
        return max(pool, key=lambda c: c.synthesis_iou).source if pool else None

    own = heldout({(r.layer, r.head): best_of(r, {"own"}) for r in results})
    fitted = heldout({(r.layer, r.head): best_of(r, {"fitted"}) for r in results})
    either = heldout({(r.layer, r.head): best_of(r, {"own", "fitted"}) for r in results})
    search_iou = heldout({(s.layer, s.head): s.source for s in searched})

    llm_programs = [LibraryProgram(c.name, c.source, "llm", c.layer, c.head, c.synthesis_iou, c.writer, c.rationale)
                    for r in results for c in r.candidates]
    search_programs = [p for s in searched for p in _search_candidates(s)]

    def library_mean(candidates) -> tuple[float, dict]:
        library = build_library(candidates, store, tables, synth, cap=max(len(candidates), 1))
        choices = choose_best(library, store, tables, synth, held_tables, held)
        chosen = {(c.layer, c.head): c for c in choices if (c.layer, c.head) in set(heads)}
        return float(np.mean([c.heldout_iou for c in chosen.values()])), chosen

    search_library, _ = library_mean(search_programs)
    pooled, pooled_choices = library_mean(search_programs + llm_programs)
    llm_names = {p.name for p in llm_programs}

    answered = [r for r in records if r.get("answer") is not None]
    failed = [r for r in records if r.get("answer") is None]
    before, after, found = _valid_rates(records)
    served_prompt = [r["usage"]["prompt_tokens"] for r in answered if "prompt_tokens" in (r.get("usage") or {})]
    counted_prompt = [r["prompt_tokens_counted"] for r in records if "prompt_tokens_counted" in r]
    budgets = [r["prompt_budget"] for r in records if "prompt_budget" in r]
    answer_tokens = [r["usage"]["completion_tokens"] for r in answered if "completion_tokens" in (r.get("usage") or {})]
    per_head_s: dict[tuple, float] = {}
    for r in records:
        key = (r.get("layer"), r.get("head"))
        per_head_s[key] = per_head_s.get(key, 0.0) + float(r.get("latency_s") or 0.0)

    def mean(values) -> float:
        values = list(values)
        return float(np.mean(values)) if values else float("nan")

    def mean_over_heads(values: dict) -> float:
        return mean(values.values())

    paired = sorted(set(own) & set(fitted))  # heads with both: the fair own-vs-fitted comparison

    return {
        "heads": [f"{layer}.{head}" for layer, head in heads],
        "n_heads": len(heads),
        "model": config.model,
        "answers": len(answered),
        "failed_requests": len(failed),
        "heads_failed": sum(r.status == "failed" for r in results),
        "heads_without_llm_program": sum(not r.candidates for r in results),
        "programs_found": found,
        "programs_rewritten": sum(int(r.get("programs_rewritten", 0)) for r in records),
        "valid_before_repair": before,
        "valid_after_repair": after,
        "prompt_tokens_server_mean": mean(served_prompt),
        "prompt_tokens_counted_mean": mean(counted_prompt),
        "prompt_tokens_counted_max": max(counted_prompt) if counted_prompt else 0,
        "prompt_budget": min(budgets) if budgets else config.budget.prompt_tokens,
        "prompts_within_budget": all(c <= b for c, b in zip(counted_prompt, budgets)),
        "answer_tokens_mean": mean(answer_tokens),
        "seconds_per_head": mean(per_head_s[(layer, head)] for layer, head in heads if (layer, head) in per_head_s),
        "llm_wall_s": llm_wall,
        "search_wall_s": search_wall,
        "heldout_llm_own": mean_over_heads(own),
        "heldout_llm_fitted": mean_over_heads(fitted),
        "heldout_llm_best": mean_over_heads(either),
        "heldout_search": mean_over_heads(search_iou),
        "heldout_search_library": search_library,
        "heldout_pooled_library": pooled,
        "pooling_moved_mean": pooled - search_library,
        "heads_choosing_llm_program": sum(c.program_name in llm_names for c in pooled_choices.values()),
        "heads_with_llm_own": len(own),
        "heads_with_llm_fitted": len(fitted),
        "heads_with_both": len(paired),
        "heldout_own_paired": mean(own[h] for h in paired),
        "heldout_fitted_paired": mean(fitted[h] for h in paired),
        "per_head": {f"{layer}.{head}": {"own": own.get((layer, head)), "fitted": fitted.get((layer, head)),
                                         "search": search_iou.get((layer, head))} for layer, head in heads},
        "n_heldout_sequences": len(held),
        "n_heldout_tokens": int(held_batch.n_tokens),
    }


_ROWS = (
    ("answers", "answers", "{:d}"), ("failed_requests", "failed requests", "{:d}"),
    ("heads_failed", "heads failed (retried next run)", "{:d}"),
    ("heads_without_llm_program", "heads without an LLM program", "{:d}"),
    ("valid_before_repair", "valid programs before repair", "{:.1%}"),
    ("valid_after_repair", "valid programs after repair", "{:.1%}"),
    ("programs_rewritten", "broken programs given a valid rewrite", "{:d}"),
    ("prompt_tokens_server_mean", "prompt tokens (server), mean", "{:.0f}"),
    ("prompt_tokens_counted_max", "prompt tokens (counted), max", "{:d}"),
    ("prompt_budget", "prompt budget", "{:d}"),
    ("answer_tokens_mean", "answer tokens, mean", "{:.0f}"),
    ("seconds_per_head", "seconds per head (endpoint)", "{:.1f}"),
    ("heldout_llm_own", "held-out IoU: LLM best, own weights", "{:.3f}"),
    ("heldout_llm_fitted", "held-out IoU: LLM best, fitted weights", "{:.3f}"),
    ("heldout_llm_best", "held-out IoU: LLM best of both", "{:.3f}"),
    ("heads_with_both", "heads with own and fitted programs", "{:d}"),
    ("heldout_own_paired", "held-out IoU on those heads: own weights", "{:.3f}"),
    ("heldout_fitted_paired", "held-out IoU on those heads: fitted weights", "{:.3f}"),
    ("heldout_search", "held-out IoU: search", "{:.3f}"),
    ("heldout_search_library", "held-out IoU: library of search programs", "{:.3f}"),
    ("heldout_pooled_library", "held-out IoU: pooled library (LLM + search)", "{:.3f}"),
    ("pooling_moved_mean", "pooling moved the mean by", "{:+.3f}"),
    ("heads_choosing_llm_program", "heads whose pooled choice is an LLM program", "{:d}"),
)


def format_report(report: dict) -> str:
    lines = [f"LLM {report['model']} on {report['n_heads']} heads ({', '.join(report['heads'])}); held-out: "
             f"{report['n_heldout_sequences']} sequences, {report['n_heldout_tokens']} tokens", ""]
    width = max(len(label) for _, label, _ in _ROWS)
    for key, label, fmt in _ROWS:
        value = report[key]
        try:
            text = fmt.format(value)
        except (ValueError, TypeError):
            text = str(value)
        lines.append(f"{label.ljust(width)}  {text}")
    return "\n".join(lines)


#: the synthetic heads `prompt_sizes` summarises (attention made by these programs on real text)
PROMPT_HEADS = ("0.5 * [k == 0] + 0.5 * exp(-0.3 * d)", "1 * nearest(punct(k))",
                "0.6 * [k == q] + 0.4 * spread(alpha(k))",
                "0.8 * nearest(tok(k - 1) == tok(q) and k < q) + 0.2 * [k == 0]", "fallback self\n 1 * [k == q - 1]")


def prompt_sizes(n_sequences: int = 64) -> dict:
    """Characters per token and prompt sizes, with SmolLM2's tokenizer (see the module docstring)."""
    import re

    from attndsl.extraction.features import table_from_words
    from attndsl.language.interpreter import evaluate
    from attndsl.synthesis.llm import sequence_fits
    from attndsl.synthesis.prompts import program_prompt, refinement_prompt
    from attndsl.synthesis.summary import summarize_head
    from attndsl.language.validate import compile_program

    from .common import _cached_tokenizer, load_stories

    tok = _cached_tokenizer()
    stories = load_stories(n_sequences)
    if tok is None or not stories:
        raise RuntimeError("needs the embedded SmolLM2 tokenizer and the TinyStories sample (ATTNDSL_TINYSTORIES)")

    def count(text: str) -> int:
        return len(tok(text)["input_ids"])

    tables = [table_from_words(re.findall(r"\w+(?:'\w+)*|[^\w\s]", s)[:64]) for s in stories]
    sink = "program s { 1 * [k == 0] }"
    summary_ratio, message_ratio, first, refine = [], [], [], []
    for body in PROMPT_HEADS:
        program = compile_program("program h { " + body + " }")
        examples = [(t, evaluate(program, t)) for t in tables]
        summary = summarize_head(examples, 3, 1)
        summary_ratio.append(len(summary.text) / count(summary.text))
        fits = sorted(sequence_fits(compile_program(sink), examples[:16]), key=lambda f: f.iou)
        for prompt, bucket in ((program_prompt(summary, 4), first),
                               (refinement_prompt(summary, sink, 0.3, fits[-1:], fits[:1], 4), refine)):
            message_ratio += [len(m["content"]) / count(m["content"]) for m in prompt.messages]
            bucket.append({"estimate": prompt.tokens, "smollm2": sum(count(m["content"]) for m in prompt.messages)})
    return {"summary_chars_per_token": summary_ratio, "message_chars_per_token_min": min(message_ratio),
            "first_prompts": first, "refinement_prompts": refine, "n_sequences": len(tables)}


def _default_run(out: Path, max_sequences: int) -> Path:
    from attndsl.extraction.extract import extract

    from .common import tinystories_path

    if not (out / "manifest.json").exists() or not (out / "store").exists():
        extract(out, "smollm2", str(tinystories_path()), max_sequences=max_sequences, max_tokens=64, progress=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from attndsl.errors import UserError
    from attndsl.synthesis.llm import LLMConfig

    parser = argparse.ArgumentParser(prog="python -m benchmarks llm", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="endpoint base URL (default: $OPENAI_BASE_URL)")
    parser.add_argument("--model", help="model name (default: $ATTNDSL_LLM_MODEL)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--heads", type=int, default=20, help="heads, chosen across layers (default 20)")
    parser.add_argument("--run", default=None, help="an extracted run (default: extract one into --out)")
    parser.add_argument("--out", default="runs/bench-llm", help="where to extract when --run is not given")
    parser.add_argument("--max-sequences", type=int, default=200, help="sequences to extract without --run")
    parser.add_argument("--work", default=None, help="LLM logs and cache (default: RUN/bench-llm)")
    parser.add_argument("--repair-rounds", type=int, default=2)
    parser.add_argument("--refine-rounds", type=int, default=1, help="refinement requests per head after the first answer")
    parser.add_argument("--programs", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--timeout", type=float, default=900.0, help="per request, seconds (CPU servers are slow)")
    parser.add_argument("--concurrency", type=int, default=1, help="heads in flight (a local server serves one)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--prompt-sizes", action="store_true",
                        help="only measure prompt sizes with SmolLM2's tokenizer (no endpoint needed)")
    args = parser.parse_args(argv)
    if args.prompt_sizes:
        sizes = prompt_sizes()
        print(json.dumps(sizes, indent=1))
        return 0
    try:
        if args.heads < 1:
            raise UserError("--heads must be at least 1")
        config = LLMConfig.from_env(model=args.model, base_url=args.url, api_key=args.api_key,
                                    repair_rounds=args.repair_rounds, refine_rounds=args.refine_rounds,
                                    n_programs=args.programs,
                                    max_tokens=args.max_tokens, context_tokens=args.context,
                                    timeout_s=args.timeout, concurrency=args.concurrency)
        run_dir = Path(args.run) if args.run else _default_run(Path(args.out), args.max_sequences)
        work = Path(args.work) if args.work else run_dir / "bench-llm"
        report = measure(run_dir, config, args.heads, work, progress=True)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
