"""The LLM writer's settings: `LLMConfig`, the environment it reads, and the command-line flags.

`LLMConfig.from_env` takes flags first, then ``ATTNDSL_LLM_MODEL`` /
``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``; `add_arguments` declares the
``--llm-*`` flags every command that can write programs with an LLM shares,
and `config_from_args` reads them back.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass

from attndsl.errors import UserError
from attndsl.synthesis.prompts import PromptBudget

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
ENV_MODEL = "ATTNDSL_LLM_MODEL"

#: key sent when the endpoint needs none (local servers); the client insists on one
PLACEHOLDER_API_KEY = "not-needed"


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
