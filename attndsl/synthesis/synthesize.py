"""The synthesis stage: head summaries → program writers → pooled library → scores.

``synthesize(run_dir, ...)`` writes programs for the heads of a run whose
attention store is finished (`attndsl extract`):

- with an LLM endpoint (`attndsl.synthesis.llm.LLMConfig`), every head's summary
  (`attndsl.synthesis.summary`) goes to the LLM writer, whose valid programs are scored
  on synthesis sequences, each also with its weights fitted by attndsl
  (`attndsl.synthesis.fit`); a head whose LLM requests all failed is recorded as
  failed and asked again by the next synthesis;
- with the enumerative search (`attndsl.synthesis.search`, the default when no endpoint
  is configured, or asked for explicitly) every head gets a greedy program;
  both writers may run in one synthesis, and their candidates are pooled.

Each head's candidates are saved as soon as the head is done
(``synthesis/heads/L3_H1.json`` and ``programs/L3_H1.attn``: `attndsl.pipeline.layout`),
so an interrupted synthesis resumes with the heads it had not finished.  The
settings that decide results are recorded in the run manifest; rerunning with
other settings is refused (`attndsl.pipeline.rundir.open_run`).

Then every finished head's candidates are pooled into the library
(`attndsl.synthesis.library`): de-duplicated by behaviour, capped, each head's best
chosen on synthesis sequences over the whole library and scored on held-out
sequences.  `score_library` does the last part for any ``.attn`` file.

Why this module is just over 400 lines: the stage drives two writers (search
and LLM) with the same resume records per head, and their shared
bookkeeping reads best kept beside the stage that uses it.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from attndsl.errors import AttnError, UserError
from attndsl.explanations.naming import rename_library
from attndsl.synthesis.library import HeadChoice, LibraryProgram, build_library, choose_best, read_library, score_lines, write_library
from attndsl.pipeline.layout import RunLayout
from attndsl.pipeline.rundir import Run, atomic_write_json, atomic_write_text, open_run, read_json
from attndsl.synthesis.search import SearchResult, SearchSettings, search_heads
from attndsl.extraction.store import Store, open_store

STAGE = "synthesize"
#: synthesis sequences the LLM summaries and scores use (the search uses its own subsample)
LLM_SEQUENCES = 64


@dataclass(frozen=True)
class SynthesisReport:
    """What a synthesis did: per-head choices, library size, timing."""

    choices: tuple[HeadChoice, ...]
    library_size: int
    n_candidates: int
    heads_written: int  # heads written by this call (others were resumed)
    heads_done: int  # heads with candidates in the run
    seconds: float

    def lines(self) -> list[str]:
        head = (f"wrote programs for {self.heads_written} heads ({self.heads_done} done in the run), "
                f"{self.n_candidates} candidates, {self.seconds:.0f} s")
        return [head] + score_lines(self.choices, self.library_size)


# ------------------------------------------------------------------ heads


def parse_heads(spec: str | None, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """``"3.4,5.0"`` (layer.head), ``"7.*"`` (a whole layer) or None (every head)."""
    if spec is None or not spec.strip():
        return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    out = []
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d{1,6})\.(\d{1,6}|\*)", part)
        if not match:
            raise UserError(f"bad head '{part}' in --heads: write LAYER.HEAD (e.g. 3.4) or LAYER.* ")
        layer = int(match.group(1))
        heads = range(n_heads) if match.group(2) == "*" else [int(match.group(2))]
        for head in heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise UserError(f"head {layer}.{head} does not exist: the model has {n_layers} layers "
                                f"of {n_heads} heads (0-based)")
            if (layer, head) not in out:
                out.append((layer, head))
    return out


def _head_file(run: Run, layer: int, head: int) -> Path:
    return RunLayout(run.path).head_json(layer, head)


def _candidate(c: dict, layer: int, head: int) -> LibraryProgram:
    return LibraryProgram(c["name"], c["source"], c["origin"], layer, head, c.get("synthesis_iou"),
                          c.get("writer"), c.get("rationale"), c.get("tier"))


def _writer_done(data: dict, writer: str) -> bool:
    """Whether a head file records ``writer`` as finished (an LLM head whose requests all failed is not)."""
    record = data.get(writer)
    if not isinstance(record, dict):
        return False
    return record.get("status", "finished") != "failed"


def finished_heads(run: Run) -> dict[tuple[int, int], list[LibraryProgram]]:
    """Candidates of every head whose synthesis finished (from the per-head files).

    A head whose only record is a failed LLM attempt is not finished.
    """
    directory = RunLayout(run.path).heads_dir
    out = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("L*_H*.json")):
        data = read_json(path)
        key = (int(data["layer"]), int(data["head"]))
        candidates = [_candidate(c, key[0], key[1]) for c in data.get("candidates", [])]
        if not candidates and not any(_writer_done(data, w) for w in ("llm", "search")):
            continue
        out[key] = candidates
    return out


def pending_heads(run: Run, heads, writer: str) -> list[tuple[int, int]]:
    """The heads ``writer`` still has to do: no head file, or none recording it as finished."""
    out = []
    for layer, head in heads:
        path = _head_file(run, layer, head)
        if not path.exists() or not _writer_done(read_json(path), writer):
            out.append((layer, head))
    return out


def _save_head(run: Run, layer: int, head: int, candidates: Sequence[LibraryProgram], extra: dict) -> None:
    """Per-head results: the .attn file first, then the JSON that marks the head done."""
    text = "".join(f"# {c.origin}, synthesis IoU {c.synthesis_iou:.4f}\n{c.source.strip()}\n\n"
                   if c.synthesis_iou is not None else f"# {c.origin}\n{c.source.strip()}\n\n" for c in candidates)
    atomic_write_text(RunLayout(run.path).head_attn(layer, head), text or "# no candidates\n")
    atomic_write_json(_head_file(run, layer, head), {
        "layer": layer, "head": head,
        "candidates": [{"name": c.name, "source": c.source, "origin": c.origin, "synthesis_iou": c.synthesis_iou,
                        **({"writer": c.writer} if c.writer else {}),
                        **({"rationale": c.rationale} if c.rationale else {}),
                        **({"tier": c.tier} if c.tier else {})}
                       for c in candidates],
        **extra,
    })


# ------------------------------------------------------------------ writers


def _search_candidates(result: SearchResult) -> list[LibraryProgram]:
    """The final program, the simplest structured step (sink + one term) of the greedy path,
    the softmax fit when asked for, and the short variant (a candidate for the short tier only)."""
    from attndsl.synthesis.prompts import rename_program

    out = [LibraryProgram(result.name, result.source, "search", result.layer, result.head, result.fit_iou)]
    if len(result.path) >= 2 and result.path[1] != result.source:
        name = f"{result.name}_step2"
        out.append(LibraryProgram(name, rename_program(result.path[1], name), "search", result.layer, result.head,
                                  result.path_iou[1]))
    if result.softmax_source:  # the softmax fit competes with the linear programs in the pooled library
        out.append(LibraryProgram(f"{result.name}_softmax", result.softmax_source, "search", result.layer,
                                  result.head, result.softmax_fit_iou))
    if result.short_source:
        out.append(LibraryProgram(f"{result.name}_short", result.short_source, "search", result.layer, result.head,
                                  result.short_fit_iou, tier="short"))
    return out


def _run_search(run: Run, store: Store, heads, settings: SearchSettings, tables, synth, progress: bool) -> None:
    def save(result: SearchResult) -> None:
        previous = _previous_candidates(run, result.layer, result.head, exclude="search")
        records = _previous_records(run, result.layer, result.head)
        records["search"] = {"path": list(result.path), "path_iou": list(result.path_iou), "seconds": result.seconds}
        candidates = _search_candidates(result)
        _save_head(run, result.layer, result.head, previous + candidates, records)
        for candidate in candidates:  # compiled now for the library, while the next heads' softmax fits run
            try:  # (the softmax program is cached already: its fit compiled it, `remember_compiled`)
                candidate.program()
            except AttnError:
                pass  # the library reports it

    search_heads(store, tables, synth, heads, settings, on_result=save, progress=progress)


def _previous_candidates(run: Run, layer: int, head: int, exclude: str) -> list[LibraryProgram]:
    path = _head_file(run, layer, head)
    if not path.exists():
        return []
    data = read_json(path)
    return [_candidate(c, layer, head) for c in data.get("candidates", []) if c["origin"] != exclude]


def _previous_records(run: Run, layer: int, head: int) -> dict:
    """The writer records (``llm``, ``search``) of a head file, to keep beside a new one."""
    path = _head_file(run, layer, head)
    if not path.exists():
        return {}
    data = read_json(path)
    return {w: data[w] for w in ("llm", "search") if isinstance(data.get(w), dict)}


@dataclass(frozen=True, eq=False)
class LLMTools:
    """What the LLM writer needs from a run: examples, scoring, per-sequence fits, weight fitting.

    All on the first `LLM_SEQUENCES` synthesis sequences (the benchmark uses
    the same tools, so it measures exactly what synthesis does).
    """

    examples: object  # (layer, head) → [(TokenTable, n×n attention)]
    score_fn: object
    detail_fn: object
    fit_fn: object


def llm_tools(store: Store, tables, synth) -> LLMTools:
    from attndsl.extraction.batch import TokenBatch
    from attndsl.synthesis.fit import WeightFitter, head_column
    from attndsl.synthesis.llm import sequence_fits
    from attndsl.synthesis.scoring import score

    chosen = list(range(min(LLM_SEQUENCES, len(synth))))
    ex_tables = [tables[i] for i in chosen]
    ex_indices = [synth[i] for i in chosen]
    batch = TokenBatch.from_tables(ex_tables)
    dense = {i: store.dense(int(i)) for i in ex_indices}

    def examples(layer: int, head: int):
        return [(t, dense[i][layer, head]) for t, i in zip(ex_tables, ex_indices)]

    def score_fn(programs, layer, head):
        result = score(programs, store, batch, ex_indices)
        return [float(x) for x in result.iou[:, layer, head]]

    def detail_fn(program, layer, head):
        return sequence_fits(program, examples(layer, head)[:16])

    fitter = WeightFitter(ex_tables, ex_indices)

    def fit_fn(sources, layer, head):
        column = head_column([dense[i] for i in ex_indices], layer, head)
        out = []
        for source in sources:
            try:
                out.append(fitter.fit(source, column))
            except Exception:  # e.g. a syntax program without a provider: the LLM's own weights stand
                out.append(None)
        return out

    return LLMTools(examples, score_fn, detail_fn, fit_fn)


def _run_llm(run: Run, store: Store, heads, config, tables, synth, progress: bool) -> None:
    from attndsl.synthesis.llm import write_heads
    from attndsl.synthesis.summary import summarize_head

    tools = llm_tools(store, tables, synth)
    examples, score_fn, detail_fn, fit_fn = tools.examples, tools.score_fn, tools.detail_fn, tools.fit_fn
    group = max(1, config.concurrency * 2)
    for start in range(0, len(heads), group):
        part = heads[start:start + group]
        summaries = [summarize_head(examples(layer, head), layer, head) for layer, head in part]
        results = write_heads(summaries, config, score_fn, run.path, detail_fn, progress=progress, fit_fn=fit_fn)
        for result in results:
            candidates = [LibraryProgram(c.name, c.source, "llm", c.layer, c.head, c.synthesis_iou, c.writer,
                                         c.rationale) for c in result.candidates]
            previous = _previous_candidates(run, result.layer, result.head, exclude="llm")
            records = _previous_records(run, result.layer, result.head)
            records["llm"] = {"status": result.status, "requests": result.n_requests,
                              "failed": result.n_failed_requests, "reason": result.reason,
                              "endings": list(result.endings)}
            _save_head(run, result.layer, result.head, previous + candidates, records)


# ------------------------------------------------------------------ the stage


def stage_settings(search: SearchSettings | None, llm_config, cap: int) -> dict:
    """What decides results (recorded in the manifest; ``--heads`` is not part of it)."""
    settings: dict = {"writers": [], "library_cap": cap}
    if llm_config is not None:
        settings["writers"].append("llm")
        settings["llm"] = {k: llm_config.public()[k] for k in
                           ("model", "base_url", "temperature", "max_tokens", "seed", "repair_rounds",
                            "refine_rounds", "n_programs", "syntax_available", "context_tokens",
                            "max_prompt_tokens", "fit_weights")}
    if search is not None:
        settings["writers"].append("search")
        settings["search"] = search.as_dict()
    return settings


def synthesize(
    run_dir: str | Path,
    heads: str | Sequence[tuple[int, int]] | None = None,
    search: SearchSettings | None = None,
    llm_config=None,
    use_search: bool | None = None,
    cap: int = 1000,
    top_k: int = 4,
    progress: bool = True,
    max_screen_entries: int | None = None,
    softmax_terms: int | None = None,
    word_pairs: int | None = None,
) -> SynthesisReport:
    """Write programs for ``heads`` (default all), then build and score the library.

    The enumerative search runs when ``use_search`` is True, or when it is
    None and no ``llm_config`` is given.  ``max_screen_entries`` and
    ``softmax_terms`` and ``word_pairs`` (when given) override the search's
    screening budget, the size of its softmax programs and their number of
    word-pair tables (`SearchSettings`; ``softmax_terms=0``: linear programs
    only).
    Resumable; see the module docstring.
    """
    started = time.perf_counter()
    store = open_store(run_dir)
    run = Run(Path(run_dir))
    if not run.is_complete("extract"):
        raise UserError(f"{run_dir}: the attention store is not finished; rerun `attndsl extract` first")
    if use_search is None:
        use_search = llm_config is None
    if not use_search and llm_config is None:
        raise UserError("nothing writes programs: configure an LLM endpoint or use the enumerative search")
    search = (search or SearchSettings()) if use_search else None
    if search is not None and max_screen_entries is not None:
        from dataclasses import replace

        search = replace(search, max_screen_entries=int(max_screen_entries))
    if search is not None and softmax_terms is not None:
        from dataclasses import replace

        search = replace(search, softmax_terms=max(int(softmax_terms), 0))
    if search is not None and word_pairs is not None:
        from dataclasses import replace

        search = replace(search, word_pairs=max(int(word_pairs), 0))
    synth, held = store.synthesis_indices, store.heldout_indices
    if not synth or not held:
        raise UserError(f"{run_dir}: need both synthesis and held-out sequences "
                        f"(have {len(synth)} and {len(held)}); extract more sequences")
    tables = store.tables(synth)
    if search is not None:  # the manifest records the choices made for these sequences' lengths
        search = search.resolved_for_tables(tables)
    run = open_run(run_dir, STAGE, stage_settings(search, llm_config, cap), create=False)
    if isinstance(heads, str) or heads is None:
        heads = parse_heads(heads, store.n_layers, store.n_heads)
    llm_todo = pending_heads(run, heads, "llm") if llm_config is not None else []
    search_todo = pending_heads(run, heads, "search") if search is not None else []
    todo = sorted(set(llm_todo) | set(search_todo))
    if llm_todo:
        _run_llm(run, store, llm_todo, llm_config, tables, synth, progress)
    if search_todo:
        _run_search(run, store, search_todo, search, tables, synth, progress)
    done = finished_heads(run)
    candidates = [c for key in sorted(done) for c in done[key]]
    if not candidates:
        raise UserError("no head has candidate programs (see llm/heads.json for why)")
    seed = search.seed if search is not None else 0
    library = build_library(candidates, store, tables, synth, cap=cap, seed=seed, progress=progress)
    library = rename_library(library, tables)  # names that say what each program does
    choices = choose_best(library, store, tables, synth, store.tables(held), held, top_k=top_k, progress=progress)
    write_library(RunLayout(run.path).library_dir, library.programs, choices)
    report = SynthesisReport(tuple(choices), len(library.programs), len(candidates), len(todo), len(done),
                             time.perf_counter() - started)
    held_iou = [c.heldout_iou for c in choices]
    run.mark_complete(STAGE, {
        "heads_done": len(done), "library_size": len(library.programs), "n_candidates": len(candidates),
        "mean_heldout_iou": float(np.mean(held_iou)),
        "mean_heldout_iou_no_sink": float(np.mean([c.heldout_iou_no_sink for c in choices])),
        "mean_short_heldout_iou": _mean_short(choices),
        "n_heldout_sequences": choices[0].n_heldout_sequences, "n_heldout_tokens": choices[0].n_heldout_tokens,
        "seconds_last_call": report.seconds,
    })
    return report


def _mean_short(choices: Sequence[HeadChoice]) -> float | None:
    """Mean held-out IoU of the short tier over the heads that have one (None: no head has one)."""
    values = [c.short_heldout_iou for c in choices if c.has_short]
    return float(np.mean(values)) if values else None


def score_library(
    run_dir: str | Path,
    library_path: str | Path | None = None,
    top_k: int = 4,
    progress: bool = True,
) -> tuple[list[HeadChoice], Path, int]:
    """Score a library (default: the run's) against every head of the run.

    Returns the choices, the best.csv written, and the number of distinct
    programs.  The run's own library writes ``library/best.csv`` and
    ``library/buckets.csv``; another file writes ``scores/<file stem>.best.csv``
    and ``scores/<file stem>.buckets.csv`` and leaves the library alone.
    """
    store = open_store(run_dir)
    run = Run(Path(run_dir))
    layout = RunLayout(run.path)
    own = layout.library_attn
    path = Path(library_path) if library_path else own
    if not path.exists():
        if library_path is None:
            raise UserError(f"{run_dir} has no library yet; run `attndsl synthesize {run_dir}` or pass --library")
        raise UserError(f"{path} does not exist")
    programs = read_library(path)
    synth, held = store.synthesis_indices, store.heldout_indices
    if not synth or not held:
        raise UserError(f"{run_dir}: need both synthesis and held-out sequences")
    tables = store.tables(synth)
    library = build_library(programs, store, tables, synth, cap=max(len(programs), 1), progress=progress)
    choices = choose_best(library, store, tables, synth, store.tables(held), held, top_k=top_k, progress=progress)
    if path.resolve() == own.resolve():
        out, buckets = layout.best_csv, layout.buckets_csv
    else:
        out, buckets = layout.scores_best_csv(path.stem), layout.scores_buckets_csv(path.stem)
    from attndsl.pipeline.records import write_best_csv
    from attndsl.synthesis.library import write_buckets

    write_best_csv(out, choices)
    write_buckets(buckets, choices)
    return choices, out, len(library.programs)
