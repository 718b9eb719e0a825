"""The LLM program writer against a scripted OpenAI-compatible HTTP server.

The real `openai` client talks real HTTP to `tests/fake_llm_server.py`; the
programs are scored with the reference interpreter on small hand-made
sequences whose "real" attention is a previous-token head.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from attndsl import ir
from attndsl.errors import AttnError, UserError
from attndsl.features import table_from_words
from attndsl.interpreter import evaluate
from attndsl.scoring import iou_dense as soft_iou
from attndsl.llm import (
    JsonlLog,
    LLMConfig,
    read_jsonl,
    request_hash,
    sequence_fits,

    write_heads,
    write_programs,
)
from attndsl.prompts import EXAMPLES, dsl_card, split_answer
from attndsl.summary import summarize_head
from attndsl.validate import compile_program, compile_source
from tests.fake_llm_server import GOOD_PROGRAM, FakeLLMServer, Garbage, Reply, Slow, Status

SENTENCES = [
    "Once upon a time , there was a little cat . The cat was happy .",
    'Tom saw a big dog . He said : " Hello dog ! " The dog ran away .',
    "Lily liked the sun . The sun was warm and Lily smiled .",
]
PREVIOUS = compile_program("program truth { fallback self\n 1 * [k == q - 1] }")

SINK = "program sink {\n    1 * [k == 0]\n}"
BROKEN = "program bad {\n    1 * [tok(k) == ]\n}"
FIXED = "program bad {\n    fallback self\n    1 * [k == q - 1]\n}"


def _examples():
    tables = [table_from_words(s.split()) for s in SENTENCES]
    return [(t, evaluate(PREVIOUS, t)) for t in tables]


EXAMPLES = _examples()


def score_fn(programs, layer, head):
    return [float(np.mean([soft_iou(a, evaluate(p, t)) for t, a in EXAMPLES])) for p in programs]


def detail_fn(program, layer, head):
    return sequence_fits(program, EXAMPLES)


def summary(layer=0, head=0):
    return summarize_head(EXAMPLES, layer, head)


def config(server, **settings):
    base = dict(model="fake-model", base_url=server.base_url, api_key="test", timeout_s=2.0, max_retries=3,
                backoff_s=0.001, max_backoff_s=0.01, repair_rounds=1, refine_rounds=0, concurrency=1, n_programs=3)
    base.update(settings)
    return LLMConfig(**base)


def outcomes(run_dir):
    return [r["outcome"] for r in read_jsonl(run_dir / "llm" / "requests.jsonl")]


def test_malformed_program_is_repaired_and_every_answer_is_logged(tmp_path):
    first = f"Here is my analysis of the head.\n\n```attn\n# sink\n{SINK}\n```\n\nAnd another idea:\n```attn\n{BROKEN}\n```\nHope this helps!"
    script = [
        Reply(first),
        Reply(f"Fixed:\n```attn\n{FIXED}\n```"),
        Reply(""),  # refinement: empty answer
        Reply("I cannot improve on that."),  # its repair: prose, no program
    ]
    with FakeLLMServer(script, default=Status(599)) as server:
        results = write_heads([summary()], config(server, refine_rounds=1), score_fn, tmp_path, detail_fn, progress=False)
        bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 4
    (result,) = results
    by_name = {c.name: c for c in result.candidates}
    assert set(by_name) == {"l0_h0_sink", "l0_h0_bad"}
    fixed = by_name["l0_h0_bad"]
    assert fixed.stage == "repair" and fixed.round == 1 and fixed.origin == "llm"
    assert fixed.synthesis_iou == pytest.approx(1.0)
    assert by_name["l0_h0_sink"].synthesis_iou < 0.5
    assert result.candidates[0] is fixed  # best first
    for c in result.candidates:  # the stored source is the program, renamed
        assert compile_program(c.source).name == c.name
    assert "# sink" in by_name["l0_h0_sink"].source

    # the repair request carries the previous answer and the rendered diagnostics
    repair = bodies[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": first}
    with pytest.raises(AttnError) as error:
        compile_source(BROKEN, "bad.attn")
    assert error.value.render() in repair[-1]["content"]
    assert "valid program(s) are kept" in repair[-1]["content"]
    # the refinement request shows the best program, its IoU and the sequences
    refine = bodies[2]["messages"][-1]["content"]
    assert "l0_h0_bad" in refine and "1.000" in refine and "Sequence" in refine
    assert "Empty" not in refine
    assert "Your answer was empty." in bodies[3]["messages"][-1]["content"]

    assert outcomes(tmp_path) == ["partly_valid", "valid", "empty", "no_program"]
    records = read_jsonl(tmp_path / "llm" / "requests.jsonl")
    assert all(r["prompt_hash"] == request_hash(config(server), r["messages"]) for r in records)
    assert records[0]["usage"] == {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    assert records[0]["diagnostics"] and "bad.attn" in records[0]["diagnostics"][0]
    assert result.usage["total_tokens"] == 4 * 120
    heads = json.loads((tmp_path / "llm" / "heads.json").read_text())
    assert heads["config"]["api_key"] == "set"  # never the key itself
    assert [c["name"] for c in heads["heads"][0]["candidates"]] == ["l0_h0_bad", "l0_h0_sink"]


def test_rate_limits_server_errors_timeouts_and_garbage_are_retried(tmp_path):
    waits = []
    script = [
        Status(429, retry_after="0.004"),
        Status(500),
        Slow(1.5, Reply(GOOD_PROGRAM)),  # beyond the client timeout
        Garbage(),
        Reply(GOOD_PROGRAM),
    ]
    with FakeLLMServer(script, default=Status(599)) as server:
        cfg = config(server, timeout_s=0.5, max_retries=4)
        candidates = write_programs([summary()], cfg, score_fn, tmp_path, progress=False, sleep=waits.append)
        assert server.count == 5
    assert [c.name for c in candidates] == ["l0_h0_previous"]
    assert candidates[0].synthesis_iou == pytest.approx(1.0)
    assert outcomes(tmp_path) == ["rate_limited", "server_error", "timeout", "malformed_response", "valid"]
    assert waits[0] == pytest.approx(0.004)  # retry-after honoured
    assert len(waits) == 4 and all(0 <= w <= cfg.max_backoff_s for w in waits)


def test_failing_heads_get_a_reason_and_the_others_finish(tmp_path):
    routes = {
        "Layer 0, head 1:": [Status(500)] * 2,  # every attempt fails
        "Layer 0, head 2:": [Status(401, message="bad key")],  # not retried
        "Layer 0, head 3:": [Reply(f"```attn\n{BROKEN}\n```"), Reply(f"```attn\n{BROKEN}\n```")],
    }
    heads = [summary(0, h) for h in range(4)]
    with FakeLLMServer(routes=routes) as server:
        cfg = config(server, max_retries=1, concurrency=3)
        results = write_heads(heads, cfg, score_fn, tmp_path, progress=False)
        assert server.count == 1 + 2 + 1 + 2
    by_head = {r.head: r for r in results}
    assert [r.head for r in results] == [0, 1, 2, 3]
    assert by_head[0].reason is None and by_head[0].candidates
    assert not by_head[1].candidates and "server_error" in by_head[1].reason
    assert by_head[1].n_failed_requests == 1 and by_head[1].n_requests == 0
    assert not by_head[2].candidates and "rejected" in by_head[2].reason
    assert not by_head[3].candidates and "no valid program" in by_head[3].reason
    saved = json.loads((tmp_path / "llm" / "heads.json").read_text())
    assert [h["reason"] is None for h in saved["heads"]] == [True, False, False, False]


def test_a_failing_score_function_is_recorded_not_fatal(tmp_path):
    def flaky(programs, layer, head):
        if head == 0:
            raise RuntimeError("store unreadable")
        return score_fn(programs, layer, head)

    with FakeLLMServer() as server:
        results = write_heads([summary(0, 0), summary(0, 1)], config(server), flaky, tmp_path, progress=False)
    assert not results[0].candidates and "RuntimeError: store unreadable" in results[0].reason
    assert results[1].candidates and results[1].reason is None


def test_identical_requests_come_from_the_cache(tmp_path):
    script = [Reply(f"```attn\n{SINK}\n```\n```attn\n{BROKEN}\n```"), Reply(f"```attn\n{FIXED}\n```")]
    with FakeLLMServer(script) as server:
        cfg = config(server)
        first = write_programs([summary()], cfg, score_fn, tmp_path, progress=False)
        calls = server.count
        again = write_programs([summary()], cfg, score_fn, tmp_path, progress=False)
        assert server.count == calls == 2  # no new HTTP call
        assert again == first
        write_programs([summary()], config(server, temperature=0.2), score_fn, tmp_path, progress=False)
        assert server.count > calls  # a different request is not served from the cache
    records = read_jsonl(tmp_path / "llm" / "requests.jsonl")
    assert [r["cached"] for r in records[2:4]] == [True, True]


def test_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    log = JsonlLog(path)
    log.append({"a": 1})
    with open(path, "a") as handle:
        handle.write('{"b": ')  # a crash in the middle of a write
    assert read_jsonl(path) == [{"a": 1}]
    log.append({"c": 3})
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]


def test_split_answer_reads_programs_out_of_prose_and_fences():
    answer = (
        "Thinking...\n```attn\n# hypothesis one\nprogram a { 1 * [k == q - 1] }\n"
        'program b { 0.5 * [tok(k) == "}"] } program c { 1 * [k == 0]\n```\n'
        "and also\n```\nprogram d { 1 * nearest(punct(k)) }\n"  # missing closing fence
    )
    parts = split_answer(answer)
    assert parts == [
        "# hypothesis one\nprogram a { 1 * [k == q - 1] }",
        'program b { 0.5 * [tok(k) == "}"] }',
        "program c { 1 * [k == 0]",
        "program d { 1 * nearest(punct(k)) }",
    ]
    assert split_answer("program z { 1 * [k == 0] } is my answer") == ["program z { 1 * [k == 0] }"]
    assert split_answer("No code here, sorry.") == []
    assert split_answer("```attn\n1 * [k == 0]\n```") == ["1 * [k == 0]"]  # shown to the validator
    assert split_answer("") == []


def test_worked_examples_compile_and_reference_names_every_feature():
    for _, source in WORKED_EXAMPLES:
        compile_source(source)
    reference = dsl_reference()
    for name in ir.ALL_FEATURES + tuple(ir.FUNCTIONS) + ir.SELECTIONS + ir.FALLBACKS:
        assert name in reference, name


def test_config_from_flags_and_environment():
    env = {"OPENAI_BASE_URL": "http://h/v1", "ATTNDSL_LLM_MODEL": "m1", "OPENAI_API_KEY": "k"}
    cfg = LLMConfig.from_env(environ=env)
    assert (cfg.base_url, cfg.model, cfg.api_key) == ("http://h/v1", "m1", "k")
    cfg = LLMConfig.from_env(model="m2", base_url="http://x/v1", environ=env, temperature=0.1)
    assert (cfg.base_url, cfg.model, cfg.temperature) == ("http://x/v1", "m2", 0.1)
    assert LLMConfig.endpoint_configured(env) and not LLMConfig.endpoint_configured({})
    with pytest.raises(UserError, match="ATTNDSL_LLM_MODEL"):
        LLMConfig.from_env(environ={"OPENAI_BASE_URL": "http://h/v1"})
    with pytest.raises(UserError, match="endpoint"):
        LLMConfig.from_env(model="m", environ={})
    with pytest.raises(UserError, match="concurrency"):
        LLMConfig.from_env(environ=env, concurrency=0)


def test_sequence_fits_names_disagreeing_rows():
    sink = compile_program(SINK)
    fits = sequence_fits(sink, EXAMPLES)
    assert len(fits) == len(EXAMPLES)
    for fit, (table, _) in zip(fits, EXAMPLES):
        assert fit.tokens == table.tok
        assert all(r.real_key == r.query - 1 and r.program_key == 0 for r in fit.rows)
        assert 0 < fit.iou < 0.5
