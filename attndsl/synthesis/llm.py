"""The LLM program writer: head summaries in, scored DSL programs out.

For each head (heads run concurrently in a thread pool):

1. ask the model for programs (`prompts.program_prompt`, within the token
   budget `LLMConfig.budget`; a request that cannot fit is not sent);
2. read the answer (`prompts.split_answer`: only fenced blocks, or text from a
   line starting with ``program``, are programs) and validate each program on
   its own, so one broken or over-long program does not sink the others;
3. **LLM proposes, search fits**: every new valid program is kept as written
   and, when the caller gives a ``fit_fn`` (`attndsl.synthesis.fit`), once more with its
   weights fitted on synthesis sequences by the search's non-negative fitting;
4. send the broken ones back with their diagnostics and, where one is obvious,
   the nearest valid rewrite (`prompts.nearest_rewrite`, which is also kept as
   a candidate), at most ``repair_rounds`` times; an answer identical to an
   earlier one (or holding only programs already seen) ends the conversation
   at once;
5. score every valid, distinct program with the caller's ``score_fn``
   (synthesis IoU);
6. one refinement request shows the best program with the sequences where it
   fits best and worst; its answer goes through 2–5 again.

Talking to the endpoint goes through the real ``openai`` client with its own
retries off: this module retries rate limits (honouring ``retry-after``),
server errors, timeouts, connection errors and malformed responses (a 200
whose body is not a chat completion, or whose message has no content) with
bounded exponential backoff.  Nothing that goes wrong with the endpoint or
the answers stops the run.  A head whose requests all failed is recorded as
**failed** (`HeadResult.status`), not finished, so the next synthesis asks
again; a head that got answers but no valid program is finished, with the
reason it ended that way.

Everything is logged in the run directory:

- ``llm/requests.jsonl``: one line per attempt (prompt hash, messages, raw
  answer, token usage — the server's and our own count of the prompt —,
  latency, outcome); an answer is logged whatever happens to its programs
  (even when compiling or scoring them fails), appended whole and fsynced;
- ``llm/cache/<hash>.json``: each completed answer, keyed by a hash of the
  request (model, messages, temperature, max tokens, seed), so rerunning the
  same synthesis makes no new HTTP calls;
- ``llm/heads.json``: per head, its status, candidates, request counts, token
  usage, how each conversation ended and, when it has no candidates, why
  (merged across calls, so every head ever written is there).
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

from attndsl.language import ir
from attndsl.errors import AttnError, UserError
from attndsl.extraction.features import TokenTable
from attndsl.synthesis.prompts import BrokenProgram, Prompt, PromptBudget, PromptTooLong, RowFit, SequenceFit, TokenCounter, first_conversation, nearest_rewrite, program_name, program_prompt, rationale, refinement_conversation, refinement_prompt, rename_program, repair_prompt, split_answer
from attndsl.pipeline.rundir import atomic_write_text
from attndsl.synthesis.scoring import iou_dense
from attndsl.synthesis.summary import HeadSummary
from attndsl.language.validate import compile_source

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
ENV_MODEL = "ATTNDSL_LLM_MODEL"

#: key sent when the endpoint needs none (local servers); the client insists on one
PLACEHOLDER_API_KEY = "not-needed"

#: programs longer than this are rejected before parsing (a real answer's program is a few hundred characters)
MAX_PROGRAM_CHARS = 4000

ScoreFn = Callable[[list[ir.Program], int, int], list[float]]
DetailFn = Callable[[ir.Program, int, int], list[SequenceFit]]
#: (program sources, layer, head) → per source, the same structure with fitted weights (or None)
FitFn = Callable[[list[str], int, int], list["str | None"]]


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class LLMConfig:
    """How to reach the endpoint and how hard to try."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    temperature: float = 0.7
    max_tokens: int = 1024  # room kept for the answer
    context_tokens: int = 8192  # the model's context: prompt + answer
    max_prompt_tokens: int | None = None  # a tighter prompt budget of one's own
    tokenizer: str | None = None  # counts prompt tokens (offline HF tokenizer); None: the estimate
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
    fit_weights: bool = True  # also keep each program with weights fitted by attndsl (when the caller can fit)

    @property
    def budget(self) -> PromptBudget:
        return PromptBudget(self.context_tokens, self.max_tokens, self.max_prompt_tokens)

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
        for name in ("max_tokens", "concurrency", "n_programs", "context_tokens"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            problems.append("max_prompt_tokens must be at least 1")
        if self.context_tokens <= self.max_tokens:
            problems.append(f"context_tokens ({self.context_tokens}) must exceed max_tokens ({self.max_tokens}), "
                            "the room kept for the answer")
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
    group.add_argument("--llm-max-tokens", type=int, default=1024, metavar="N",
                       help="most answer tokens (kept free in the context)")
    group.add_argument("--llm-context", type=int, default=8192, metavar="N",
                       help="the model's context in tokens; prompts fit in it with room for the answer")
    group.add_argument("--llm-prompt-tokens", type=int, default=None, metavar="N",
                       help="a tighter prompt budget (default: context minus answer tokens)")
    group.add_argument("--llm-tokenizer", metavar="NAME", default=None,
                       help="Hugging Face tokenizer (offline) that counts prompt tokens "
                            "(default: a conservative 1.8 characters per token)")
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
        context_tokens=args.llm_context,
        max_prompt_tokens=args.llm_prompt_tokens,
        tokenizer=args.llm_tokenizer,
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
        if isinstance(hit, dict) and isinstance(hit.get("answer"), str):
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
    """The answer of a chat completion; ValueError for anything that is not one.

    A 200 whose body is not JSON, has no choices, no message or a message
    without text content is malformed (retried and logged as a failure), not
    an empty answer: sending a repair request for it would only waste a round.
    An answer whose content is the empty string is a real, empty answer.
    """
    if isinstance(response, (str, bytes)):  # some servers' non-JSON bodies come back as text
        raise ValueError(f"response is not JSON: {str(response)[:80]!r}")
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise ValueError("response has no choices")
    message = getattr(choices[0], "message", None)
    if message is None:
        raise ValueError("response choice has no message")
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        raise ValueError(f"response message has no text content ({type(content).__name__})")
    return content


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
    fit_fn: FitFn | None = None,
) -> list[Candidate]:
    """LLM candidates for every summarised head (see the module docstring).

    ``score_fn(programs, layer, head)`` returns each program's synthesis IoU
    on that head; ``detail_fn(program, layer, head)`` (optional) returns its
    per-sequence fits for the refinement prompt (see `sequence_fits`);
    ``fit_fn(sources, layer, head)`` (optional, `attndsl.synthesis.fit`) returns each
    program with fitted weights.  Per-head outcomes go to ``llm/heads.json``;
    see also `write_heads`.
    """
    return [c for result in write_heads(summaries, config, score_fn, run_dir, detail_fn, progress, sleep, fit_fn)
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
    """Like `write_programs`, returning each head's full result, in input order."""
    from tqdm.auto import tqdm

    config.check()
    counter = TokenCounter.load(config.tokenizer)
    run_dir = Path(run_dir)
    (run_dir / "llm").mkdir(parents=True, exist_ok=True)
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
    path = run_dir / "llm" / "heads.json"
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
