"""The LLM program writer: head summaries in, scored DSL programs out.

For each head (heads run concurrently in a thread pool):

1. ask the model for programs (`prompts.program_messages`);
2. read the answer (`prompts.split_answer`) and validate each program on its
   own, so one broken program does not sink the others;
3. send the broken ones back with their diagnostics for repair, at most
   ``repair_rounds`` times;
4. score every valid, distinct program with the caller's ``score_fn``
   (synthesis IoU);
5. one refinement request shows the best program with the sequences where it
   fits best and worst; its answer goes through 2–4 again.

Talking to the endpoint goes through the real ``openai`` client with its own
retries off: this module retries rate limits (honouring ``retry-after``),
server errors, timeouts, connection errors and malformed responses with
bounded exponential backoff.  Nothing that goes wrong with the endpoint or
the answers stops the run: a head whose requests all fail gets no candidates
and a recorded reason.

Everything is logged in the run directory:

- ``llm/requests.jsonl``: one line per attempt (prompt hash, messages, answer,
  token usage, latency, outcome), appended whole and fsynced;
- ``llm/cache/<hash>.json``: each completed answer, keyed by a hash of the
  request (model, messages, temperature, max tokens, seed), so rerunning the
  same synthesis makes no new HTTP calls;
- ``llm/heads.json``: per head, its candidates, request counts, token usage
  and, when it has no candidates, why.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import ir
from .errors import AttnError, UserError
from .features import TokenTable
from .prompts import (
    BrokenProgram,
    RowFit,
    SequenceFit,
    program_messages,
    program_name,
    refinement_messages,
    rename_program,
    repair_messages,
    split_answer,
)
from .rundir import atomic_write_text
from .summary import HeadSummary
from .validate import compile_source

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
ENV_MODEL = "ATTNDSL_LLM_MODEL"

#: key sent when the endpoint needs none (local servers); the client insists on one
PLACEHOLDER_API_KEY = "not-needed"

ScoreFn = Callable[[list[ir.Program], int, int], list[float]]
DetailFn = Callable[[ir.Program, int, int], list[SequenceFit]]


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class LLMConfig:
    """How to reach the endpoint and how hard to try."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    temperature: float = 0.7
    max_tokens: int = 2048
    seed: int | None = None
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 4  # per request, after the first attempt
    backoff_s: float = 2.0  # first wait; doubles each retry
    max_backoff_s: float = 60.0  # cap on any wait, retry-after included
    repair_rounds: int = 2
    refine_rounds: int = 1
    n_programs: int = 4
    syntax_available: bool = False
    use_cache: bool = True

    @classmethod
    def from_env(cls, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 environ: dict | None = None, **settings) -> "LLMConfig":
        """Flags first, then ``ATTNDSL_LLM_MODEL`` / ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``."""
        env = os.environ if environ is None else environ
        model = model or env.get(ENV_MODEL)
        base_url = base_url or env.get(ENV_BASE_URL) or None
        api_key = api_key or env.get(ENV_API_KEY) or None
        if not model:
            raise UserError(f"no LLM model given: pass --llm-model or set {ENV_MODEL}")
        if not base_url and not api_key:
            raise UserError(f"no LLM endpoint: pass --llm-url or set {ENV_BASE_URL} (and {ENV_API_KEY} if it needs a key)")
        config = cls(model=model, base_url=base_url, api_key=api_key, **settings)
        config.check()
        return config

    @staticmethod
    def endpoint_configured(environ: dict | None = None) -> bool:
        """Whether the environment names an endpoint (else synthesis uses the search)."""
        env = os.environ if environ is None else environ
        return bool(env.get(ENV_MODEL) and (env.get(ENV_BASE_URL) or env.get(ENV_API_KEY)))

    def check(self) -> None:
        problems = []
        if not (0 <= self.temperature <= 2):
            problems.append("temperature must be between 0 and 2")
        for name in ("max_tokens", "concurrency", "n_programs"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("max_retries", "repair_rounds", "refine_rounds"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name == "timeout_s" and value == 0):
                problems.append(f"{name} must be a positive number")
        if problems:
            raise UserError("bad LLM settings: " + "; ".join(problems))

    def public(self) -> dict:
        """The settings for logs and manifests (never the key)."""
        out = dataclasses.asdict(self)
        out["api_key"] = "set" if self.api_key else None
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The LLM flags, for any subcommand that writes programs with an LLM."""
    group = parser.add_argument_group("LLM program writer (any OpenAI-compatible endpoint)")
    group.add_argument("--llm-url", metavar="URL", help=f"endpoint base URL (default: ${ENV_BASE_URL})")
    group.add_argument("--llm-model", metavar="NAME", help=f"model name (default: ${ENV_MODEL})")
    group.add_argument("--llm-api-key", metavar="KEY", help=f"API key (default: ${ENV_API_KEY})")
    group.add_argument("--llm-temperature", type=float, default=0.7, metavar="T")
    group.add_argument("--llm-max-tokens", type=int, default=2048, metavar="N")
    group.add_argument("--llm-concurrency", type=int, default=4, metavar="N", help="heads in flight at once")
    group.add_argument("--llm-timeout", type=float, default=120.0, metavar="SECONDS", help="per request")
    group.add_argument("--llm-retries", type=int, default=4, metavar="N", help="retries per request")
    group.add_argument("--llm-repair-rounds", type=int, default=2, metavar="N")
    group.add_argument("--llm-programs", type=int, default=4, metavar="N", help="programs asked for per answer")
    group.add_argument("--llm-seed", type=int, default=None, metavar="N")


def config_from_args(args: argparse.Namespace, **settings) -> LLMConfig:
    return LLMConfig.from_env(
        model=args.llm_model,
        base_url=args.llm_url,
        api_key=args.llm_api_key,
        temperature=args.llm_temperature,
        max_tokens=args.llm_max_tokens,
        concurrency=args.llm_concurrency,
        timeout_s=args.llm_timeout,
        max_retries=args.llm_retries,
        repair_rounds=args.llm_repair_rounds,
        n_programs=args.llm_programs,
        seed=args.llm_seed,
        **settings,
    )


# ------------------------------------------------------------------ records


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
    stage: str = "initial"  # initial | repair | refine


@dataclass(frozen=True)
class HeadResult:
    layer: int
    head: int
    candidates: tuple[Candidate, ...]
    n_requests: int  # answers obtained (from the endpoint or the cache)
    n_failed_requests: int  # requests that got no answer after all retries
    usage: dict[str, int]
    reason: str | None  # why there are no candidates, or None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------ run-directory I/O


class JsonlLog:
    """Append-only JSON lines, safe across threads and crashes.

    Each record is written as one line with a single write, then flushed and
    fsynced.  If a crash left a partial last line, the next append starts on a
    fresh line, and `read_jsonl` skips the fragment.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as handle:
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        line = "\n" + line
                handle.write(line.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete record of a JSON-lines file (a torn last line is skipped)."""
    records = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def request_hash(config: LLMConfig, messages: Sequence[dict]) -> str:
    """Identity of a request: same hash, same answer from the cache."""
    key = {
        "model": config.model,
        "messages": list(messages),
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ talking to the endpoint


@dataclass(frozen=True)
class ChatResult:
    text: str | None  # None: no answer after all retries
    outcome: str
    usage: dict[str, int]
    cached: bool
    prompt_hash: str
    record: dict  # the log record of the attempt that produced the answer (to be completed)


class ChatClient:
    """One OpenAI client shared by all heads, with cache, retries and logging."""

    def __init__(self, config: LLMConfig, run_dir: Path, sleep: Callable[[float], None] = time.sleep):
        import openai

        self.config = config
        self.cache_dir = Path(run_dir) / "llm" / "cache"
        self.log = JsonlLog(Path(run_dir) / "llm" / "requests.jsonl")
        self.sleep = sleep
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key or PLACEHOLDER_API_KEY,
            timeout=config.timeout_s,
            max_retries=0,
        )
        self._random = random.Random(config.seed if config.seed is not None else 0)
        self._random_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    # -- cache
    def _cached(self, digest: str) -> dict | None:
        if not self.config.use_cache:
            return None
        path = self.cache_dir / f"{digest}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def _store(self, digest: str, text: str, usage: dict) -> None:
        if self.config.use_cache:
            atomic_write_text(self.cache_dir / f"{digest}.json",
                              json.dumps({"model": self.config.model, "answer": text, "usage": usage}, ensure_ascii=False))

    # -- one request, with retries
    def complete(self, messages: list[dict], meta: dict) -> ChatResult:
        """Ask once (retrying transient failures); failed attempts are logged here,
        the answering attempt's record is returned for the caller to complete."""
        config = self.config
        digest = request_hash(config, messages)
        base = {"prompt_hash": digest, "model": config.model, **meta}
        hit = self._cached(digest)
        if hit is not None:
            record = {**base, "attempt": 0, "messages": messages, "answer": hit["answer"], "usage": hit.get("usage", {}),
                      "latency_s": 0.0, "cached": True, "outcome": "cached"}
            return ChatResult(hit["answer"], "cached", hit.get("usage", {}), True, digest, record)

        outcome, error = "failed", ""
        for attempt in range(config.max_retries + 1):
            started = time.monotonic()
            wait = None
            try:
                kwargs = {}
                if config.seed is not None:
                    kwargs["seed"] = config.seed
                response = self._client.chat.completions.create(
                    model=config.model,
                    messages=messages,
                    temperature=config.temperature,
                    max_tokens=config.max_tokens,
                    **kwargs,
                )
                text, usage = _answer_text(response), _usage(response)
            except self._openai.RateLimitError as exc:
                outcome, error, wait = "rate_limited", _error_text(exc), _retry_after(exc)
            except self._openai.APITimeoutError as exc:
                outcome, error = "timeout", _error_text(exc)
            except self._openai.APIConnectionError as exc:
                outcome, error = "connection_error", _error_text(exc)
            except self._openai.APIStatusError as exc:
                if exc.status_code >= 500 or exc.status_code in (408, 409):
                    outcome, error, wait = "server_error", _error_text(exc), _retry_after(exc)
                else:  # the request itself is wrong (bad key, unknown model): retrying cannot help
                    outcome, error = "rejected", _error_text(exc)
                    self._log_failure(base, messages, attempt, started, outcome, error)
                    break
            except (self._openai.OpenAIError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
                outcome, error = "malformed_response", f"{type(exc).__name__}: {exc}"
            else:
                latency = time.monotonic() - started
                outcome = "answered" if text.strip() else "empty"
                self._store(digest, text, usage)
                record = {**base, "attempt": attempt, "messages": messages, "answer": text, "usage": usage,
                          "latency_s": round(latency, 4), "cached": False, "outcome": outcome}
                return ChatResult(text, outcome, usage, False, digest, record)
            self._log_failure(base, messages, attempt, started, outcome, error)
            if attempt < config.max_retries:
                self.sleep(self._backoff(attempt, wait))
        return ChatResult(None, outcome, {}, False, digest, {**base, "outcome": outcome, "error": error})

    def _log_failure(self, base, messages, attempt, started, outcome, error) -> None:
        self.log.append({**base, "attempt": attempt, "messages": messages, "answer": None, "usage": {},
                         "latency_s": round(time.monotonic() - started, 4), "cached": False,
                         "outcome": outcome, "error": error, "time": _now()})

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        config = self.config
        if retry_after is not None:
            return min(max(retry_after, 0.0), config.max_backoff_s)
        with self._random_lock:
            jitter = 0.5 + 0.5 * self._random.random()
        return min(config.backoff_s * (2 ** attempt) * jitter, config.max_backoff_s)


def _answer_text(response) -> str:
    if isinstance(response, str):  # some servers' non-JSON bodies come back as text
        raise ValueError(f"response is not JSON: {response[:80]!r}")
    choices = getattr(response, "choices", None) or []
    if not choices:
        return ""
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None) if message is not None else None
    return content or ""


def _usage(response) -> dict[str, int]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return {}
    out = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, name, None)
        if isinstance(value, int):
            out[name] = value
    return out


def _retry_after(exc) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to exponential backoff
        if math.isfinite(seconds):
            return seconds
    return None


def _error_text(exc) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).strip() or type(exc).__name__
    return f"HTTP {status}: {text}"[:500] if status else f"{type(exc).__name__}: {text}"[:500]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ------------------------------------------------------------------ one head


@dataclass
class _HeadWork:
    summary: HeadSummary
    config: LLMConfig
    chat: ChatClient
    score_fn: ScoreFn
    detail_fn: DetailFn | None
    candidates: list[Candidate] = field(default_factory=list)
    programs: dict = field(default_factory=dict)  # nameless IR → Candidate (dedupe by meaning)
    names: set = field(default_factory=set)
    answers: int = 0
    failed: int = 0
    failures: list = field(default_factory=list)
    usage: dict = field(default_factory=dict)

    @property
    def layer(self) -> int:
        return self.summary.layer

    @property
    def head(self) -> int:
        return self.summary.head

    def run(self) -> HeadResult:
        config = self.config
        self._conversation(program_messages(self.summary, config.n_programs, config.syntax_available), "initial")
        for _ in range(config.refine_rounds):
            if not self.candidates:
                break
            best = max(self.candidates, key=lambda c: (c.synthesis_iou, -c.round))
            fits = []
            if self.detail_fn is not None:
                program = compile_source(best.source)[0]
                fits = sorted(self.detail_fn(program, self.layer, self.head), key=lambda f: (f.iou, f.sequence))
            worst, top = fits[:2], fits[-2:][::-1] if len(fits) > 2 else []
            top = [f for f in top if f not in worst]
            messages = refinement_messages(self.summary, best.source, best.synthesis_iou, top, worst,
                                           config.n_programs, config.syntax_available)
            self._conversation(messages, "refine")
        reason = None
        if not self.candidates:
            if self.answers == 0:
                outcomes = sorted({f for f in self.failures}) or ["no request made"]
                reason = f"every request failed ({', '.join(outcomes)})"
            else:
                reason = f"no valid program in {self.answers} answer(s) after {config.repair_rounds} repair round(s)"
        ordered = tuple(sorted(self.candidates, key=lambda c: (-c.synthesis_iou, c.round, c.name)))
        return HeadResult(self.layer, self.head, ordered, self.answers, self.failed, dict(self.usage), reason)

    def _conversation(self, messages: list[dict], stage: str) -> None:
        """One request and its repairs; scores what compiles."""
        config = self.config
        valid_in_conversation = 0
        for repair in range(config.repair_rounds + 1):
            round_no = self.answers + self.failed
            meta = {"layer": self.layer, "head": self.head, "stage": stage if repair == 0 else "repair", "round": round_no}
            result = self.chat.complete(messages, meta)
            if result.text is None:
                self.failed += 1
                self.failures.append(result.outcome)
                return
            self.answers += 1
            for key, value in result.usage.items():
                self.usage[key] = self.usage.get(key, 0) + value
            sources = split_answer(result.text)[: 2 * config.n_programs]
            valid, broken = [], []
            for source in sources:
                name = program_name(source) or "program"
                try:
                    programs = compile_source(source, f"{name}.attn")
                except AttnError as error:
                    broken.append(BrokenProgram(source, error.render()))
                    continue
                if len(programs) != 1:
                    broken.append(BrokenProgram(source, f"{name}.attn:1:1: expected one program here, found {len(programs)}"))
                    continue
                valid.append((programs[0], source))
            added = self._score(valid, meta["stage"], round_no)
            valid_in_conversation += len(valid)
            if not result.text.strip():
                outcome = "empty"
            elif not sources:
                outcome = "no_program"
            elif broken:
                outcome = "partly_valid" if valid else "invalid"
            else:
                outcome = "valid"
            self.chat.log.append({
                **result.record,
                "outcome": outcome,
                "programs_found": len(sources),
                "programs_valid": len(valid),
                "programs_new": added,
                "diagnostics": [b.diagnostics for b in broken],
                "time": _now(),
            })
            if outcome == "valid" or repair == config.repair_rounds:
                return
            messages = repair_messages(messages, result.text, broken, valid_in_conversation, config.n_programs)

    def _score(self, valid: list[tuple[ir.Program, str]], stage: str, round_no: int) -> int:
        fresh = []
        for program, source in valid:
            key = dataclasses.replace(program, name="_")
            if key in self.programs:
                continue
            name = self._unique_name(program.name)
            renamed = rename_program(source, name)
            self.programs[key] = None
            fresh.append((dataclasses.replace(program, name=name), renamed))
        if not fresh:
            return 0
        scores = self.score_fn([p for p, _ in fresh], self.layer, self.head)
        if len(scores) != len(fresh):
            raise ValueError(f"score_fn returned {len(scores)} scores for {len(fresh)} programs")
        for (program, source), score in zip(fresh, scores):
            candidate = Candidate(self.layer, self.head, source, program.name, float(score), "llm", round_no, stage)
            self.candidates.append(candidate)
            self.programs[dataclasses.replace(program, name="_")] = candidate
        return len(fresh)

    def _unique_name(self, name: str) -> str:
        base = f"l{self.layer}_h{self.head}_{name}"
        candidate, i = base, 2
        while candidate in self.names:
            candidate, i = f"{base}_{i}", i + 1
        self.names.add(candidate)
        return candidate


# ------------------------------------------------------------------ the stage


def write_programs(
    summaries: Sequence[HeadSummary],
    config: LLMConfig,
    score_fn: ScoreFn,
    run_dir: str | os.PathLike,
    detail_fn: DetailFn | None = None,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Candidate]:
    """LLM candidates for every summarised head (see the module docstring).

    ``score_fn(programs, layer, head)`` returns each program's synthesis IoU
    on that head; ``detail_fn(program, layer, head)`` (optional) returns its
    per-sequence fits for the refinement prompt (see `sequence_fits`).
    Per-head outcomes go to ``llm/heads.json``; see also `write_heads`.
    """
    return [c for result in write_heads(summaries, config, score_fn, run_dir, detail_fn, progress, sleep)
            for c in result.candidates]


def write_heads(
    summaries: Sequence[HeadSummary],
    config: LLMConfig,
    score_fn: ScoreFn,
    run_dir: str | os.PathLike,
    detail_fn: DetailFn | None = None,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> list[HeadResult]:
    """Like `write_programs`, returning each head's full result, in input order."""
    from tqdm.auto import tqdm

    config.check()
    run_dir = Path(run_dir)
    (run_dir / "llm").mkdir(parents=True, exist_ok=True)
    chat = ChatClient(config, run_dir, sleep)
    results: list[HeadResult | None] = [None] * len(summaries)
    lock = threading.Lock()

    def one(index: int) -> None:
        summary = summaries[index]
        work = _HeadWork(summary, config, chat, score_fn, detail_fn)
        try:
            result = work.run()
        except Exception as error:  # a bug or a failing score_fn must not end the other heads
            result = HeadResult(summary.layer, summary.head, tuple(work.candidates), work.answers, work.failed,
                                dict(work.usage), f"internal error: {type(error).__name__}: {error}")
        with lock:
            results[index] = result
            _save_heads(run_dir, config, [r for r in results if r is not None])

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
    ordered = sorted(results, key=lambda r: (r.layer, r.head))
    usage: dict[str, int] = {}
    for r in ordered:
        for key, value in r.usage.items():
            usage[key] = usage.get(key, 0) + value
    payload = {
        "config": config.public(),
        "usage": usage,
        "heads": [r.as_dict() for r in ordered],
    }
    atomic_write_text(run_dir / "llm" / "heads.json", json.dumps(payload, indent=1, ensure_ascii=False, default=_json_default))


# ------------------------------------------------------------------ helpers for callers


def soft_iou(real: np.ndarray, predicted: np.ndarray) -> float:
    """Σ min / Σ max of two causal, row-stochastic matrices (the paper's metric)."""
    low = np.minimum(real, predicted).sum()
    high = np.maximum(real, predicted).sum()
    return float(low / high) if high > 0 else 1.0


def sequence_fits(program: ir.Program, examples: Sequence[tuple[TokenTable, np.ndarray]]) -> list[SequenceFit]:
    """Per-sequence fit of a program, with the reference interpreter.

    For building a ``detail_fn`` from the same synthesis examples the
    summaries were made from; fine for the few dozen short sequences a
    refinement prompt needs.
    """
    from .interpreter import evaluate

    out = []
    for index, (table, attention) in enumerate(examples):
        real = np.asarray(attention, dtype=np.float64)
        predicted = evaluate(program, table)
        rows = []
        for q in range(1, len(table)):
            rk, pk = int(np.argmax(real[q, : q + 1])), int(np.argmax(predicted[q, : q + 1]))
            rows.append(RowFit(q, rk, float(real[q, rk]), pk, float(predicted[q, pk])))
        out.append(SequenceFit(index, soft_iou(real, predicted), tuple(table.tok), tuple(rows)))
    return out
