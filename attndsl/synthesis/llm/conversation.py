"""One head's conversation with the LLM: ask, validate, repair, fit, score, refine.

`_HeadWork` runs steps 1–6 of `attndsl.synthesis.llm` for one head and keeps
its valid, distinct programs as `Candidate`s; `HeadResult` is what the head's
conversation came to (its status, candidates, requests, usage and endings).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

from attndsl.language import ir
from attndsl.errors import AttnError
from attndsl.synthesis.prompts import BrokenProgram, Prompt, PromptTooLong, SequenceFit, TokenCounter, first_conversation, nearest_rewrite, program_name, program_prompt, rationale, refinement_conversation, refinement_prompt, rename_program, repair_prompt, split_answer
from attndsl.synthesis.summary import HeadSummary
from attndsl.language.validate import compile_source
from attndsl.synthesis.llm.client import ChatClient, _now
from attndsl.synthesis.llm.config import LLMConfig
from attndsl.headnames import llm_name_prefix

#: programs longer than this are rejected before parsing (a real answer's program is a few hundred characters)
MAX_PROGRAM_CHARS = 4000

ScoreFn = Callable[[list[ir.Program], int, int], list[float]]
DetailFn = Callable[[ir.Program, int, int], list[SequenceFit]]
#: (program sources, layer, head) → per source, the same structure with fitted weights (or None)
FitFn = Callable[[list[str], int, int], list["str | None"]]


@dataclass(frozen=True)
class Candidate:
    """One valid, scored program written for one head."""

    layer: int
    head: int
    source: str  # compiles to exactly this program, named `name`
    name: str
    synthesis_iou: float
    origin: str = "llm"
    round: int = 0  # index of the answer within the head's requests
    stage: str = "initial"  # initial | repair | refine | rewrite (the nearest valid version of a broken one)
    weights: str = "own"  # own: as the LLM wrote them; fitted: structure kept, weights fitted by attndsl
    rationale: str | None = None  # the program's one-line hypothesis comment
    writer: str | None = None  # the LLM (model name)


@dataclass(frozen=True)
class HeadResult:
    layer: int
    head: int
    candidates: tuple[Candidate, ...]
    n_requests: int  # answers obtained (from the endpoint or the cache)
    n_failed_requests: int  # requests that got no answer after all retries
    usage: dict[str, int]
    reason: str | None  # why there are no candidates, or None
    status: str = "finished"  # finished | failed (every request failed, or an internal error: retried next run)
    endings: tuple[str, ...] = ()  # how each conversation ended
    prompt_tokens: tuple[int, ...] = ()  # our count of each request sent

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _normalised(text: str) -> str:
    return " ".join(text.split())


@dataclass
class _HeadWork:
    summary: HeadSummary
    config: LLMConfig
    chat: ChatClient
    score_fn: ScoreFn
    detail_fn: DetailFn | None
    fit_fn: FitFn | None = None
    counter: TokenCounter = field(default_factory=TokenCounter)
    candidates: list[Candidate] = field(default_factory=list)
    programs: dict = field(default_factory=dict)  # nameless IR → Candidate (dedupe by meaning)
    names: set = field(default_factory=set)
    answers: int = 0
    failed: int = 0
    failures: list = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    endings: list = field(default_factory=list)
    prompt_tokens: list = field(default_factory=list)
    seen_answers: set = field(default_factory=set)
    seen_sources: set = field(default_factory=set)
    conversations: int = 0

    @property
    def layer(self) -> int:
        return self.summary.layer

    @property
    def head(self) -> int:
        return self.summary.head

    def run(self) -> HeadResult:
        config = self.config
        summary, n, syntax = self.summary, config.n_programs, config.syntax_available
        try:
            first = program_prompt(summary, n, syntax, config.budget, self.counter)
        except PromptTooLong as error:
            self.endings.append(f"initial: not sent, {error}")
        else:
            self._conversation(first, lambda trim: first_conversation(summary, n, syntax, trim), "initial")
        for _ in range(config.refine_rounds):
            if not self.candidates:
                break
            own = [c for c in self.candidates if c.weights == "own"] or self.candidates
            best = max(own, key=lambda c: (c.synthesis_iou, -c.round))
            fits = []
            if self.detail_fn is not None:
                program = compile_source(best.source)[0]
                fits = sorted(self.detail_fn(program, self.layer, self.head), key=lambda f: (f.iou, f.sequence))
            worst, top = fits[:2], fits[-2:][::-1] if len(fits) > 2 else []
            top = [f for f in top if f not in worst]
            try:
                prompt = refinement_prompt(summary, best.source, best.synthesis_iou, top, worst, n, syntax,
                                           config.budget, self.counter)
            except PromptTooLong as error:
                self.endings.append(f"refine: not sent, {error}")
                break
            self._conversation(prompt, lambda trim: refinement_conversation(
                summary, best.source, best.synthesis_iou, top, worst, n, syntax, trim), "refine")
        return self.result()

    def result(self, internal_error: str | None = None) -> HeadResult:
        config = self.config
        status, reason = "finished", None
        if internal_error is not None:
            status, reason = "failed", f"internal error: {internal_error}"
        elif not self.candidates:
            if self.answers == 0 and self.failures:
                status = "failed"
                reason = f"every request failed ({', '.join(sorted(set(self.failures)))}); retried on the next run"
            elif self.answers == 0:
                reason = "no request sent: " + ("; ".join(self.endings) or "nothing to ask")
            else:
                reason = (f"no valid program in {self.answers} answer(s) "
                          f"(repair rounds at most {config.repair_rounds}): " + "; ".join(self.endings))
        ordered = tuple(sorted(self.candidates, key=lambda c: (-c.synthesis_iou, c.round, c.name)))
        return HeadResult(self.layer, self.head, ordered, self.answers, self.failed, dict(self.usage), reason,
                          status, tuple(self.endings), tuple(self.prompt_tokens))

    def _conversation(self, prompt: Prompt, rebuild, stage: str) -> None:
        """One request and its repairs; scores what compiles; records how it ended."""
        config = self.config
        conversation = self.conversations
        self.conversations += 1
        valid_in_conversation = 0
        for repair in range(config.repair_rounds + 1):
            label = stage if repair == 0 else "repair"
            round_no = self.answers + self.failed
            meta = {"layer": self.layer, "head": self.head, "stage": label, "round": round_no,
                    "conversation": conversation, "prompt_tokens_counted": prompt.tokens,
                    "prompt_budget": prompt.budget, "trim_level": prompt.level}
            self.prompt_tokens.append(prompt.tokens)
            result = self.chat.complete(prompt.messages, meta)
            if result.text is None:
                self.failed += 1
                self.failures.append(result.outcome)
                self.endings.append(f"{stage}: request failed ({result.outcome})")
                return
            self.answers += 1
            for key, value in result.usage.items():
                self.usage[key] = self.usage.get(key, 0) + value
            record = dict(result.record)
            text = result.text
            sources = split_answer(text)[: 2 * config.n_programs]
            repeated = _normalised(text) in self.seen_answers or (
                bool(sources) and all(_normalised(s) in self.seen_sources for s in sources))
            self.seen_answers.add(_normalised(text))
            self.seen_sources.update(_normalised(s) for s in sources)
            valid, broken, rewrites = [], [], []
            outcome = "error"
            try:
                valid, broken = self._compile(sources)
                rewrites = [(b.rewrite, b.source) for b in broken if b.rewrite]
                added = self._score(valid, label, round_no)
                if rewrites:
                    added += self._score(self._compile([r for r, _ in rewrites])[0], "rewrite", round_no)
                record["programs_new"] = added
                valid_in_conversation += len(valid)
                if not text.strip():
                    outcome = "empty"
                elif not sources:
                    outcome = "no_program"
                elif broken:
                    outcome = "partly_valid" if valid else "invalid"
                else:
                    outcome = "valid"
                if repeated:
                    outcome = "repeated"
            except Exception as error:
                record["error"] = f"{type(error).__name__}: {error}"[:500]
                raise
            finally:  # the raw answer is logged whatever happened to its programs
                record.update({
                    "outcome": outcome,
                    "programs_found": len(sources),
                    "programs_valid": len(valid),
                    "programs_rewritten": len(rewrites),
                    "diagnostics": [b.diagnostics for b in broken],
                    "time": _now(),
                })
                self.chat.log.append(record)
            if outcome == "valid":
                self.endings.append(f"{stage}: valid")
                return
            if repeated:
                self.endings.append(f"{stage}: the answer repeated an earlier one word for word")
                return
            if repair == config.repair_rounds:
                detail = broken[-1].diagnostics.splitlines()[0] if broken else outcome.replace("_", " ")
                self.endings.append(f"{stage}: {outcome.replace('_', ' ')} after {repair} repair round(s) ({detail})")
                return
            try:
                prompt = repair_prompt(self.summary, None, text, broken, valid_in_conversation, config.n_programs,
                                       config.syntax_available, config.budget, self.counter, conversation=rebuild)
            except PromptTooLong as error:
                self.endings.append(f"{stage}: repair not sent, {error}")
                return

    def _compile(self, sources: Sequence[str]) -> tuple[list[tuple[ir.Program, str]], list[BrokenProgram]]:
        """Each source on its own: valid (program, source) pairs and broken programs (never raises)."""
        valid, broken = [], []
        for source in sources:
            name = program_name(source) or "program"
            path = f"{name}.attn"
            if len(source) > MAX_PROGRAM_CHARS:
                broken.append(BrokenProgram(source[:MAX_PROGRAM_CHARS] + "\n…",
                                            f"{path}:1:1: program is {len(source)} characters long; "
                                            f"write programs under {MAX_PROGRAM_CHARS} characters"))
                continue
            try:
                programs = compile_source(source, path)
            except AttnError as error:
                diagnostics = error.render()
                broken.append(BrokenProgram(source, diagnostics,
                                            nearest_rewrite(source, diagnostics, self.config.syntax_available)))
                continue
            except Exception as error:  # a front-end failure on hostile input must not cost the other programs
                broken.append(BrokenProgram(source, f"{path}:1:1: program could not be compiled "
                                                    f"({type(error).__name__}); write a shorter, simpler program"))
                continue
            if len(programs) != 1:
                broken.append(BrokenProgram(source, f"{path}:1:1: expected one program here, found {len(programs)}"))
                continue
            valid.append((programs[0], source))
        return valid, broken

    def _score(self, valid: list[tuple[ir.Program, str]], stage: str, round_no: int) -> int:
        fresh = []  # (program, source, weights, rationale)
        for program, source in valid:
            key = dataclasses.replace(program, name="_")
            if key in self.programs:
                continue
            name = self._unique_name(program.name)
            renamed = rename_program(source, name)
            self.programs[key] = None
            fresh.append((dataclasses.replace(program, name=name), renamed, "own", rationale(source)))
        if not fresh:
            return 0
        fresh += self._fitted(fresh)
        scored = self._score_each(fresh)
        for (program, source, weights, why), score in scored:
            candidate = Candidate(self.layer, self.head, source, program.name, float(score), "llm", round_no, stage,
                                  weights, why, self.config.model)
            self.candidates.append(candidate)
            self.programs[dataclasses.replace(program, name="_")] = candidate
        return len(scored)

    def _fitted(self, fresh: list) -> list:
        """The fresh programs once more with weights fitted by attndsl (new behaviours only)."""
        if self.fit_fn is None or not self.config.fit_weights:
            return []
        try:
            fitted = self.fit_fn([source for _, source, _, _ in fresh], self.layer, self.head)
        except Exception:  # fitting is an extra: the LLM's own programs stand without it
            return []
        out = []
        for (program, _, _, why), text in zip(fresh, fitted):
            if not text:
                continue
            name = program.name + "_fit"
            if name in self.names:
                continue
            try:
                (compiled,) = compile_source(rename_program(text, name), f"{name}.attn")
            except Exception:
                continue
            key = dataclasses.replace(compiled, name="_")
            if key in self.programs:
                continue
            self.names.add(name)
            self.programs[key] = None
            out.append((compiled, rename_program(text, name), "fitted", why))
        return out

    def _score_each(self, items: list) -> list:
        """Scores for all items at once; if that fails, one at a time, dropping those that fail."""
        programs = [item[0] for item in items]
        try:
            scores = list(self.score_fn(programs, self.layer, self.head))
            if len(scores) != len(items):
                raise ValueError(f"score_fn returned {len(scores)} scores for {len(items)} programs")
            return list(zip(items, scores))
        except Exception as error:
            if len(items) == 1:
                raise
            first = error
        out = []
        for item in items:
            try:
                (value,) = self.score_fn([item[0]], self.layer, self.head)
            except Exception:
                continue
            out.append((item, value))
        if not out:
            raise first
        return out

    def _unique_name(self, name: str) -> str:
        base = llm_name_prefix(self.layer, self.head) + name
        candidate, i = base, 2
        while candidate in self.names:
            candidate, i = f"{base}_{i}", i + 1
        self.names.add(candidate)
        return candidate
