"""The LLM program writer against a scripted OpenAI-compatible HTTP server.

The real `openai` client talks real HTTP to `tests/fake_llm_server.py`; the
programs are scored with the reference interpreter on small hand-made
sequences whose "real" attention is a previous-token head.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from attndsl.language import ir
from attndsl.errors import AttnError, UserError
from attndsl.extraction.features import table_from_words
from attndsl.language.interpreter import evaluate
from attndsl.synthesis.scoring import iou_dense as soft_iou
from attndsl.synthesis.llm import JsonlLog, LLMConfig, read_jsonl, request_hash, sequence_fits, write_heads, write_programs
from attndsl.synthesis.prompts import EXAMPLES as PROMPT_EXAMPLES
from attndsl.synthesis.prompts import dsl_card, split_answer
from attndsl.synthesis.summary import summarize_head
from attndsl.language.validate import compile_program, compile_source
from tests.fake_llm_server import (
    ECHOED_LISTING,
    GOOD_PROGRAM,
    NO_TERMS,
    FakeLLMServer,
    Garbage,
    Malformed,
    Reply,
    Slow,
    Status,
)

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
    assert result.status == "finished"
    by_name = {c.name: c for c in result.candidates}
    assert set(by_name) == {"l0_h0_sink", "l0_h0_bad"}
    fixed = by_name["l0_h0_bad"]
    assert fixed.stage == "repair" and fixed.round == 1 and fixed.origin == "llm"
    assert fixed.synthesis_iou == pytest.approx(1.0)
    assert by_name["l0_h0_sink"].synthesis_iou < 0.5
    assert by_name["l0_h0_sink"].rationale == "sink" and by_name["l0_h0_sink"].writer == "fake-model"
    assert result.candidates[0] is fixed  # best first
    for c in result.candidates:  # the stored source is the program, renamed
        assert compile_program(c.source).name == c.name
    assert "# sink" in by_name["l0_h0_sink"].source

    # the repair request carries the answer's programs (not its prose) and the rendered diagnostics
    repair = bodies[1]["messages"]
    assert repair[-2]["role"] == "assistant"
    assert SINK in repair[-2]["content"] and BROKEN in repair[-2]["content"]
    assert "Hope this helps" not in repair[-2]["content"]
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
    assert [r["answer"] for r in records] == [first, f"Fixed:\n```attn\n{FIXED}\n```", "", "I cannot improve on that."]
    assert records[0]["usage"] == {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    assert records[0]["diagnostics"] and "bad.attn" in records[0]["diagnostics"][0]
    assert all(r["prompt_tokens_counted"] <= r["prompt_budget"] for r in records)
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


def test_worked_examples_compile_and_the_card_names_every_feature():
    for example in PROMPT_EXAMPLES:
        compile_source(example.source)
    card = dsl_card(syntax_available=True)
    for name in ir.ALL_FEATURES + tuple(ir.FUNCTIONS) + ir.SELECTIONS + ir.FALLBACKS:
        assert name in card, name
    assert "NOT available" in dsl_card(syntax_available=False)
    assert "//" not in dsl_card()  # the grammar's comments are stripped


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


# ------------------------------------------------------------------ failure modes real models and endpoints showed


def test_malformed_200_responses_are_failures_not_empty_answers(tmp_path):
    script = [Malformed(), Malformed('{"unexpected": true}'), Reply(None), Garbage(), Reply(GOOD_PROGRAM)]
    with FakeLLMServer(script, default=Status(599)) as server:
        results = write_heads([summary()], config(server, max_retries=4), score_fn, tmp_path, progress=False)
        assert server.count == 5  # retried, and no repair round was spent on them
    assert results[0].candidates and results[0].status == "finished"
    assert outcomes(tmp_path) == ["malformed_response"] * 4 + ["valid"]
    records = read_jsonl(tmp_path / "llm" / "requests.jsonl")
    assert all(r["answer"] is None and r["error"] for r in records[:4])


def test_a_head_whose_requests_all_fail_is_failed_not_finished(tmp_path):
    routes = {
        "Layer 0, head 0:": [Status(500)] * 3,
        "Layer 0, head 1:": [Status(429, retry_after="0")] * 3,
        "Layer 0, head 2:": [Slow(1.0, Reply(GOOD_PROGRAM))] * 3,
        "Layer 0, head 3:": [Garbage()] * 3,
    }
    with FakeLLMServer(routes=routes, default=Reply(GOOD_PROGRAM)) as server:
        results = write_heads([summary(0, h) for h in range(4)], config(server, max_retries=2, timeout_s=0.3),
                              score_fn, tmp_path, progress=False, sleep=lambda s: None)
    expected = ["server_error", "rate_limited", "timeout", "malformed_response"]
    for result, outcome in zip(results, expected):
        assert result.status == "failed" and not result.candidates and result.n_requests == 0
        assert outcome in result.reason and "retried on the next run" in result.reason
    saved = json.loads((tmp_path / "llm" / "heads.json").read_text())
    assert [h["status"] for h in saved["heads"]] == ["failed"] * 4


def test_no_terms_then_the_identical_repair_ends_the_loop_at_once(tmp_path):
    """Qwen2.5-Coder-1.5B on head 5.3: `program uniform { fallback self }`, then the same answer as its repair."""
    with FakeLLMServer([Reply(NO_TERMS), Reply(NO_TERMS)], default=Status(599)) as server:
        (result,) = write_heads([summary()], config(server, repair_rounds=3), score_fn, tmp_path, progress=False)
        bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 2  # not 4: the identical answer stopped the loop
    assert outcomes(tmp_path) == ["invalid", "repeated"]
    repair = bodies[1]["messages"][-1]["content"]
    assert "has no terms" in repair
    # the nearest valid rewrite: no terms means every row on the fallback (self), written out
    assert "fallback self\n    1 * [k == q]" in repair
    (rewrite,) = result.candidates
    assert rewrite.stage == "rewrite" and compile_program(rewrite.source).terms == compile_program(
        "program x { 1 * [k == q] }").terms
    assert result.status == "finished"
    assert any("repeated an earlier one" in e for e in result.endings)


def test_no_valid_program_records_why(tmp_path):
    broken = f"```attn\n{BROKEN}\n```"
    other = "```attn\nprogram worse {\n    1 * [tok(k) == 3]\n}\n```"
    with FakeLLMServer([Reply(broken), Reply(other)], default=Status(599)) as server:
        (result,) = write_heads([summary()], config(server, repair_rounds=1), score_fn, tmp_path, progress=False)
        assert server.count == 2
    assert not result.candidates and result.status == "finished"
    assert "no valid program in 2 answer(s)" in result.reason and "cannot compare" in result.reason


def test_echoed_prompt_text_is_ignored_not_a_syntax_error(tmp_path):
    """Qwen2.5-Coder-1.5B on head 16.0: a program, then the prompt's sequence listing echoed back."""
    assert split_answer(ECHOED_LISTING) == [
        "# previous token with a little sink\nprogram prev_sink {\n    0.9 * [k == q - 1]\n    + 0.1 * [k == 0]\n}"]
    with FakeLLMServer([Reply(ECHOED_LISTING)], default=Status(599)) as server:
        (result,) = write_heads([summary()], config(server, fit_weights=False), score_fn, tmp_path, progress=False)
        assert server.count == 1  # valid: no repair request
    (record,) = read_jsonl(tmp_path / "llm" / "requests.jsonl")
    assert record["outcome"] == "valid" and record["diagnostics"] == [] and record["programs_found"] == 1
    assert [c.rationale for c in result.candidates] == ["previous token with a little sink"]


def test_one_rejected_program_does_not_cost_the_valid_one_and_the_answer_is_logged(tmp_path):
    overlong = "program long {\n    1 * [" + " and ".join(["k == 0"] * 700) + "]\n}"
    deep = "program deep {\n    1 * [" + " and ".join(["k >= 0"] * 300) + "]\n}"
    answer = f"```attn\n{overlong}\n```\n```attn\n{deep}\n```\n{GOOD_PROGRAM}"
    with FakeLLMServer([Reply(answer)], default=Reply("no more")) as server:
        (result,) = write_heads([summary()], config(server, repair_rounds=0, fit_weights=False), score_fn,
                                tmp_path, progress=False)
    assert [c.name for c in result.candidates] == ["l0_h0_previous"]
    (record,) = read_jsonl(tmp_path / "llm" / "requests.jsonl")
    assert record["answer"] == answer and record["outcome"] == "partly_valid"
    assert record["programs_found"] == 3 and record["programs_valid"] == 1
    assert "characters long" in record["diagnostics"][0]


def test_an_answer_is_logged_even_when_scoring_it_fails(tmp_path):
    def broken_scorer(programs, layer, head):
        raise RuntimeError("store unreadable")

    with FakeLLMServer([Reply(GOOD_PROGRAM)]) as server:
        (result,) = write_heads([summary()], config(server), broken_scorer, tmp_path, progress=False)
    assert result.status == "failed" and "store unreadable" in result.reason
    (record,) = read_jsonl(tmp_path / "llm" / "requests.jsonl")
    assert record["answer"] == GOOD_PROGRAM and record["outcome"] == "error" and "store unreadable" in record["error"]


def test_split_answer_ignores_prose_and_foreign_code():
    answer = (
        "The head attends to the previous token, so my program prev { is simple }.\n"
        "```python\nprogram = {'x': 1}\n```\n"
        "```\nSequences where it fits worst:\nSequence 0 (IoU 0.5): 0:Once\n```\n"
        "```attn\nprogram a { 1 * [k == q - 1] }\n```\n"
        "```attn\n0.5 * [k == 0]\n```\n"
    )
    assert split_answer(answer) == ["program a { 1 * [k == q - 1] }", "0.5 * [k == 0]"]
    unfenced = "Here you go:\nprogram b {\n    1 * [k == 0]\n\nThat is all, it attends to the sink."
    assert split_answer(unfenced) == ["program b {\n    1 * [k == 0]"]


# ------------------------------------------------------------------ LLM proposes, search fits


def test_fitted_weights_are_one_more_candidate(tmp_path):
    from attndsl.synthesis.fit import WeightFitter, head_column

    truth = compile_program("program t { 0.7 * [k == q - 1] + 0.3 * [k == 0] }")
    examples = [(t, evaluate(truth, t)) for t, _ in EXAMPLES]
    tables = [t for t, _ in examples]
    dense = [a[None, None] for _, a in examples]
    fitter = WeightFitter(tables)

    def mixed_score(programs, layer, head):
        return [float(np.mean([soft_iou(a, evaluate(p, t)) for t, a in examples])) for p in programs]

    def fit_fn(sources, layer, head):
        return [fitter.fit(s, head_column(dense, layer, head)) for s in sources]

    answer = "```attn\nprogram guess {\n    # previous token and a sink\n    0.1 * [k == q - 1]\n    + 0.9 * [k == 0]\n}\n```"
    with FakeLLMServer([Reply(answer)], default=Status(599)) as server:
        (result,) = write_heads([summary()], config(server), mixed_score, tmp_path, progress=False, fit_fn=fit_fn)
    by_weights = {c.weights: c for c in result.candidates}
    own, fitted = by_weights["own"], by_weights["fitted"]
    assert fitted.name == own.name + "_fit" and fitted.rationale == own.rationale == "previous token and a sink"
    assert fitted.synthesis_iou > own.synthesis_iou + 0.2
    assert fitted.synthesis_iou > 0.9
    # the same structure: same factors, only the weights differ
    assert [t.factors for t in compile_program(fitted.source).terms] == [t.factors for t in compile_program(own.source).terms]


# ------------------------------------------------------------------ prompts within budget


def test_examples_shown_are_far_from_the_head():
    from attndsl.synthesis.prompts import choose_examples

    previous = [e.source for e in choose_examples(summary())]
    assert not any("[k == q - 1]" in s and "previous_token" in s for s in previous)
    induction = compile_program("program i { 0.9 * nearest(tok(k - 1) == tok(q) and k < q) + 0.1 * [k == 0] }")
    tables = [table_from_words((s + " " + s).split()) for s in SENTENCES]
    head = summarize_head([(t, evaluate(induction, t)) for t in tables], 1, 1)
    assert not any("program induction" in e.source for e in choose_examples(head))


def test_every_prompt_stays_within_budget_and_trims_the_least_informative_first(tmp_path):
    from attndsl.synthesis.prompts import PromptBudget, PromptTooLong, TokenCounter, program_prompt, refinement_prompt, repair_prompt

    rng = np.random.default_rng(0)
    words = "the cat dog sat on a mat . and then it ran away , happy sun Lily Tom said \"".split()
    tables = [table_from_words(list(rng.choice(words, 64))) for _ in range(32)]
    counter = TokenCounter()
    heads = [compile_program(f"program h {{ {body} }}") for body in (
        "0.5 * [k == 0] + 0.5 * exp(-0.3 * d)", "1 * nearest(punct(k))", "0.6 * [k == q] + 0.4 * spread(alpha(k))")]
    fits = sequence_fits(heads[0], [(t, evaluate(heads[1], t)) for t in tables[:4]])
    for budget in (PromptBudget(), PromptBudget(max_prompt_tokens=2600), PromptBudget(4096, 1024)):
        for i, program in enumerate(heads):
            s = summarize_head([(t, evaluate(program, t)) for t in tables], 3, i)
            first = program_prompt(s, 4, budget=budget, counter=counter)
            refine = refinement_prompt(s, SINK, 0.4, fits[:2], fits[2:], 4, budget=budget, counter=counter)
            repair = repair_prompt(s, None, ECHOED_LISTING * 8, [], 0, 4, budget=budget, counter=counter)
            for prompt in (first, refine, repair):
                assert prompt.tokens == counter.messages(prompt.messages) <= budget.prompt_tokens
    tight = program_prompt(s, 4, budget=PromptBudget(max_prompt_tokens=2600), counter=counter)
    loose = program_prompt(s, 4, counter=counter)
    assert tight.level > loose.level == 0
    assert s.render(None) in loose.messages[1]["content"] and "# Examples" in tight.messages[1]["content"]
    with pytest.raises(PromptTooLong):
        program_prompt(s, 4, budget=PromptBudget(max_prompt_tokens=300), counter=counter)


def test_a_request_over_budget_is_not_sent(tmp_path):
    with FakeLLMServer() as server:
        (result,) = write_heads([summary()], config(server, max_prompt_tokens=200), score_fn, tmp_path, progress=False)
        assert server.count == 0
    assert not result.candidates and result.status == "finished" and "budget" in result.reason


def test_token_counter_uses_a_local_tokenizer(tmp_path):
    from attndsl.synthesis.prompts import TokenCounter
    from tests.tiny import bpe_tokenizer

    tok = bpe_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    counter = TokenCounter.load(str(tmp_path / "tok"))
    text = "Once upon a time, there was a little dog."
    assert counter.text(text) == len(tok(text, add_special_tokens=False)["input_ids"]) > 0
    assert TokenCounter().text(text) == math.ceil(len(text) / 1.8)  # the documented estimate
    with pytest.raises(UserError, match="tokenizer"):
        TokenCounter.load(str(tmp_path / "missing"))


def test_heads_json_keeps_heads_from_earlier_calls(tmp_path):
    with FakeLLMServer() as server:
        write_heads([summary(0, 0)], config(server), score_fn, tmp_path, progress=False)
        write_heads([summary(0, 1)], config(server), score_fn, tmp_path, progress=False)
    saved = json.loads((tmp_path / "llm" / "heads.json").read_text())
    assert [(h["layer"], h["head"]) for h in saved["heads"]] == [(0, 0), (0, 1)]
    assert saved["usage"]["total_tokens"] == 2 * 120


# ------------------------------------------------------------------ in a run: retry, metadata, benchmark


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from attndsl.extraction.extract import extract
    from tests.tiny import tiny_loaded

    path = tmp_path_factory.mktemp("llm") / "run"
    extract(path, tiny_loaded("llama"), "builtin", max_sequences=16, max_tokens=24, batch_size=8, progress=False)
    return path


def test_synthesis_retries_failed_heads_and_keeps_llm_metadata(tiny_run, tmp_path):
    import shutil

    from attndsl.synthesis.synthesize import synthesize

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    answer = "```attn\nprogram guess {\n    # mostly the sink, some previous token\n    0.9 * [k == 0]\n    + 0.1 * [k == q - 1]\n}\n```"
    routes = {"Layer 0, head 0:": [Status(500)] * 2}
    with FakeLLMServer(routes=routes, default=Reply(answer)) as server:
        cfg = LLMConfig(model="fake-model", base_url=server.base_url, api_key="x", max_retries=1, backoff_s=0.001,
                        max_backoff_s=0.001, refine_rounds=0, concurrency=1)
        synthesize(run, heads="0.0,0.1", llm_config=cfg, progress=False)
        first_calls = server.count
        head = json.loads((run / "synthesis" / "heads" / "L0_H0.json").read_text())
        assert head["llm"]["status"] == "failed" and not head["candidates"]
        # the endpoint recovered: the next synthesis asks again for head 0.0 only
        synthesize(run, heads="0.0,0.1", llm_config=cfg, progress=False)
        again = [r["body"]["messages"][-1]["content"] for r in server.requests[first_calls:]]
    assert again and all("Layer 0, head 0:" in text for text in again)
    head = json.loads((run / "synthesis" / "heads" / "L0_H0.json").read_text())
    assert head["llm"]["status"] == "finished" and head["candidates"]
    meta = json.loads((run / "library" / "library.json").read_text())["programs"]
    llm = [p for p in meta if p["origin"] == "llm"]
    assert llm and all(p["writer"] == "fake-model" for p in llm)
    assert {p["rationale"] for p in llm} == {"mostly the sink, some previous token"}
    # the LLM's structure with fitted weights is one more candidate, with the same writer and rationale
    names = {c["name"]: c for c in head["candidates"]}
    assert "l0_h0_guess" in names and "l0_h0_guess_fit" in names
    assert names["l0_h0_guess_fit"]["rationale"] == names["l0_h0_guess"]["rationale"]


def test_llm_benchmark_end_to_end_against_the_fake_server(tiny_run, tmp_path, capsys):
    from benchmarks import __main__ as harness
    from benchmarks.bench_llm import format_report

    two_terms = "```attn\nprogram guess {\n    # sink and previous token\n    0.9 * [k == 0]\n    + 0.1 * [k == q - 1]\n}\n```"
    with FakeLLMServer([Reply(NO_TERMS), Reply(NO_TERMS)], default=Reply(two_terms)) as server:
        code = harness.main(["llm", "--url", server.base_url, "--model", "fake-model", "--api-key", "x",
                             "--heads", "3", "--run", str(tiny_run), "--work", str(tmp_path / "work"),
                             "--json", str(tmp_path / "report.json")])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n_heads"] == 3 and len(set(report["heads"])) == 3
    assert {h.split(".")[0] for h in report["heads"]} == {"0", "1", "2"}  # across layers
    assert report["answers"] >= 3 and report["failed_requests"] == 0
    assert report["valid_before_repair"] < report["valid_after_repair"] <= 1.0  # the no-terms answer was repaired
    assert report["prompts_within_budget"] and report["prompt_tokens_counted_max"] <= report["prompt_budget"]
    for key in ("heldout_llm_own", "heldout_llm_fitted", "heldout_search", "heldout_search_library",
                "heldout_pooled_library"):
        assert 0.0 < report[key] <= 1.0, key
    assert report["pooling_moved_mean"] == pytest.approx(report["heldout_pooled_library"] - report["heldout_search_library"])
    # the paired own-vs-fitted comparison is over the heads that have both, from the per-head values
    both = [h for h in report["per_head"].values() if h["own"] is not None and h["fitted"] is not None]
    assert report["heads_with_both"] == len(both) > 0
    assert report["heldout_own_paired"] == pytest.approx(np.mean([h["own"] for h in both]))
    assert report["heldout_fitted_paired"] == pytest.approx(np.mean([h["fitted"] for h in both]))
    assert all(h["search"] is not None for h in report["per_head"].values())
    assert "pooled library" in capsys.readouterr().out
    assert "valid programs after repair" in format_report(report)


def test_every_prompt_for_a_runs_heads_stays_within_budget(tiny_run):
    from attndsl.synthesis.prompts import PromptBudget, TokenCounter, program_prompt, refinement_prompt, repair_prompt
    from attndsl.extraction.store import open_store
    from attndsl.synthesis.synthesize import llm_tools

    store = open_store(tiny_run)
    synth = store.synthesis_indices
    tools = llm_tools(store, store.tables(synth), synth)
    counter = TokenCounter()
    for budget in (PromptBudget(), PromptBudget(4096, 1024)):
        for layer in range(store.n_layers):
            for head in range(store.n_heads):
                s = summarize_head(tools.examples(layer, head), layer, head)
                fits = tools.detail_fn(compile_program(SINK), layer, head)
                prompts = [program_prompt(s, 4, budget=budget, counter=counter),
                           refinement_prompt(s, SINK, 0.3, fits[-1:], fits[:1], 4, budget=budget, counter=counter),
                           repair_prompt(s, None, ECHOED_LISTING, [], 0, 4, budget=budget, counter=counter)]
                assert all(p.tokens <= budget.prompt_tokens for p in prompts), (layer, head)


def test_nearest_rewrite_only_where_the_fix_is_obvious():
    from attndsl.synthesis.prompts import nearest_rewrite

    def rewrite(source, syntax=False):
        try:
            compile_source(source, "x.attn")
        except AttnError as error:
            return nearest_rewrite(source, error.render(), syntax)
        raise AssertionError("the source must be broken")

    for fallback, term in (("", "[k == 0]"), ("fallback previous", "[k == q - 1]"), ("fallback uniform", None)):
        fixed = compile_program(rewrite(f"program p {{ {fallback} }}"))
        want = compile_program(f"program p {{ {fallback}\n 1 * {term} }}" if term else f"program p {{ {fallback}\n 1 }}")
        assert fixed == want
    assert compile_program(rewrite("program p {\n    1 * [k == q - 1]\n")).terms == PREVIOUS.terms  # missing brace
    subject = 'program p {\n    1 * nearest(dep(k) == "nsubj")\n}'
    assert rewrite(subject, syntax=False) is None  # syntax is not available: nothing obvious to do
    assert rewrite(BROKEN) is None and rewrite("program p { 1 * [tok(k) == 3] }") is None


def test_nearest_rewrite_fixes_the_slips_a_real_small_model_made():
    """Answers of Qwen2.5-Coder-1.5B on SmolLM2 heads (benchmarks/bench_llm.py, 2026-12-02): ``=`` for
    ``==``, a comparison used as a factor without brackets, a fallback name written as a term."""
    from attndsl.synthesis.prompts import nearest_rewrite

    def rewrite(source):
        try:
            compile_source(source, "x.attn")
        except AttnError as error:
            return nearest_rewrite(source, error.render())
        raise AssertionError("the source must be broken")

    answer = ('program first_term {\n    0.8 * tok(q) == tok(k)\n    + 0.1 * [k = q - 1]\n'
              '    + 0.05 * nearest(tok(k) in {".", "!", "?"} or newline(k))\n}')
    want = ('program first_term {\n    0.8 * [tok(q) == tok(k)]\n    + 0.1 * [k == q - 1]\n'
            '    + 0.05 * nearest(tok(k) in {".", "!", "?"} or newline(k))\n}')
    assert compile_program(rewrite(answer)) == compile_program(want)
    assert compile_program(rewrite("program fallback {\n    self\n}")).terms == compile_program(
        "program fallback { 1 * [k == q] }").terms
    assert compile_program(rewrite("program p {\n    0.5 * [k == q]\n    + 0.2 * previous\n}")) == compile_program(
        "program p {\n    0.5 * [k == q]\n    + 0.2 * [k == q - 1]\n}")
    # a comparison inside a selection's parentheses is not bracketed; hallucinated functions stay broken
    assert rewrite("program p {\n    0.5 * nearest(k < q) * weighted_term(1)\n}") is None
    assert rewrite('program p {\n    0.5 * compare(tok(k) with tok(q), "in")\n}') is None


def test_the_card_grammar_has_no_tree_names_and_accepts_the_same_programs():
    """Qwen2.5-Coder-1.5B wrote ``weighted_term(…)``, ``unit_term(…)`` and ``compare(… with …)``: Lark's
    ``-> alias`` node names, read as functions. The card's grammar drops that notation and still parses
    exactly what the parser's grammar parses."""
    import lark

    from attndsl.language.parser import grammar_text
    from attndsl.synthesis.prompts import stripped_grammar

    card = stripped_grammar()
    assert "->" not in card and "_STAR" not in card and "weighted_term" not in card
    assert "compare" not in card.replace("COMPARE", "") and "mask_condition" not in card
    ours, theirs = lark.Lark(grammar_text(), parser="lalr"), lark.Lark(card, parser="earley")
    samples = [ex.source for ex in PROMPT_EXAMPLES] + [
        'program p {\n    uses syntax\n    fallback self\n    combine softmax\n    mask [k < q]\n'
        '    lexicon w { "cat": 1.5, "dog": -0.5 }\n    - 0.5 * w(k) * (pow(d + 1, -1) / 2)\n'
        '    + [not tok(k) not in {"a", -1}]\n}',
        "program p { 1 * [k == q - 1] }", "program p { fallback self }",
    ]
    broken = ["program p { 0.5 * [k = q] }", "program p { d * 0.5 * }", "program { 1 }",
              "program p { 1 * weighted_term(1) with 2 }"]
    for text in samples:
        ours.parse(text), theirs.parse(text)
    for text in broken:
        for parser in (ours, theirs):
            with pytest.raises(lark.exceptions.LarkError):
                parser.parse(text)


def test_nearest_rewrite_keeps_the_terms_that_compile():
    """A partly invented program keeps its valid terms (and its declarations and hypothesis comment);
    a program none of whose terms compile, or whose broken part is not a whole term, gets no rewrite."""
    from attndsl.synthesis.prompts import nearest_rewrite

    def rewrite(source):
        try:
            compile_source(source, "x.attn")
        except AttnError as error:
            return nearest_rewrite(source, error.render())
        raise AssertionError("the source must be broken")

    answer = ("program p {\n    # copies and the previous token\n    fallback self\n"
              "    0.5 * weighted_term(tok(k) == tok(q), 2)\n    + 0.3 * [k == q - 1]\n"
              "    + 0.2 * compare(tok(k) with tok(q))\n    + 0.1 * nearest(punct(k)\n        and k < q)\n}")
    fixed = rewrite(answer)
    assert "# copies and the previous token" in fixed
    assert compile_program(fixed) == compile_program(
        "program p {\n    fallback self\n    0.3 * [k == q - 1]\n    + 0.1 * nearest(punct(k) and k < q)\n}")
    # the dropped term was first: the kept first term loses its sign; a leading minus stays
    assert compile_program(rewrite("program p {\n    1 * unit_term(1)\n    - 0.2 * [k = 0]\n}")) == compile_program(
        "program p {\n    - 0.2 * [k == 0]\n}")
    assert rewrite("program p {\n    0.5 * weighted_term(1)\n    + 0.5 * unit_term(2)\n}") is None
    assert rewrite("program p {\n    0.5 * [k == q] 0.3 * [k == 0]\n}") is None  # not a whole term


#: Qwen2.5-Coder-1.5B on SmolLM2 head 7.7 (benchmarks/bench_llm.py, 2026-12-02): no fences, no braces,
#: each program named in a comment line
COMMENT_HEADERS = ('# program last_sentence_end\n0.8 * nearest(tok(k) in {".", "!", "?"} or newline(k))\n'
                   '+ 0.2 * [k == 0]\n\n# program induction\n0.8 * nearest(tok(k - 1) == tok(q) and k < q)\n'
                   '+ 0.2 * [k = 0]\n\n# program previous_token\nfallback self\n1 * [k == q - 1]')


def test_bodies_under_comment_headers_are_read_and_wrapped():
    from attndsl.synthesis.prompts import nearest_rewrite

    sources = split_answer(COMMENT_HEADERS)
    assert [s.splitlines()[0] for s in sources] == [
        "# program last_sentence_end", "# program induction", "# program previous_token"]
    fixed = []
    for source in sources:
        with pytest.raises(AttnError) as error:
            compile_source(source, "x.attn")
        fixed.append(compile_program(nearest_rewrite(source, error.value.render())))
    assert [p.name for p in fixed] == ["last_sentence_end", "induction", "previous_token"]
    assert fixed[1] == compile_program(
        "program induction {\n 0.8 * nearest(tok(k - 1) == tok(q) and k < q)\n + 0.2 * [k == 0]\n}")
    assert fixed[2].fallback == "self" and fixed[2].terms == PREVIOUS.terms
    # prose with a comment header but no body, and prose around fenced programs, are not read this way
    assert split_answer("# program ideas\nThis head looks at the previous token.") == []
    assert split_answer("```attn\nprogram a { 1 * [k == q] }\n```\n# program b\n1 * [k == 0]") == [
        "program a { 1 * [k == q] }"]
