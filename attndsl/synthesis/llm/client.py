"""The chat client: one OpenAI client shared by all heads, with the answer cache, retries and logging.

It goes through the real ``openai`` client with its own retries off and
retries rate limits (honouring ``retry-after``), server errors, timeouts,
connection errors and malformed responses with bounded exponential backoff;
every attempt is logged (`attndsl.synthesis.llm.log`).
"""
from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from attndsl.pipeline.rundir import atomic_write_text
from attndsl.synthesis.llm.config import PLACEHOLDER_API_KEY, LLMConfig
from attndsl.synthesis.llm.log import JsonlLog, request_hash
from attndsl.pipeline.layout import RunLayout

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
        self.cache_dir = RunLayout(Path(run_dir)).llm_cache
        self.log = JsonlLog(RunLayout(Path(run_dir)).llm_requests)
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
