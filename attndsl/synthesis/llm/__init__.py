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

Modules: `config` (settings, environment, ``--llm-*`` flags), `log` (the
JSON-lines log and request identities), `client` (the chat client: cache,
retries, logging), `conversation` (one head: steps 1–6, its candidates and
result), `writer` (the stage: every head in a thread pool, ``llm/heads.json``).
The prompts and head summaries the conversation sends are
`attndsl.synthesis.prompts` and `attndsl.synthesis.summary`; the weight fitting
is `attndsl.synthesis.fit`.
"""
from __future__ import annotations

from attndsl.synthesis.llm.config import (
    ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, PLACEHOLDER_API_KEY, LLMConfig, add_arguments, config_from_args,
)
from attndsl.synthesis.llm.log import JsonlLog, read_jsonl, request_hash
from attndsl.synthesis.llm.client import ChatClient, ChatResult
from attndsl.synthesis.llm.conversation import MAX_PROGRAM_CHARS, Candidate, DetailFn, FitFn, HeadResult, ScoreFn
from attndsl.synthesis.llm.writer import sequence_fits, write_heads, write_programs

__all__ = [
    "ENV_API_KEY", "ENV_BASE_URL", "ENV_MODEL", "PLACEHOLDER_API_KEY", "LLMConfig", "add_arguments",
    "config_from_args", "JsonlLog", "read_jsonl", "request_hash", "ChatClient", "ChatResult",
    "MAX_PROGRAM_CHARS", "Candidate", "DetailFn", "FitFn", "HeadResult", "ScoreFn",
    "sequence_fits", "write_heads", "write_programs",
]
