"""Multiple-choice QA scoring and the lm-evaluation-harness adapter core."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attndsl.surrogates import qa, surrogate
from attndsl.errors import UserError
from attndsl.surrogates.surrogate import Assignment
from attndsl.language.validate import compile_program
from tests import tiny

SAMPLE = Path(__file__).parent / "data" / "qa_sample.jsonl"
PREV = compile_program("program prev { fallback self\n 1 * [k == q - 1] }")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_and_tokenizer(request):
    if request.param == "gpt2":
        return tiny.tiny_gpt2(), tiny.bpe_tokenizer()
    return tiny.tiny_llama_gqa(), tiny.metaspace_tokenizer()


def test_sample_file_loads():
    items = qa.load_items(SAMPLE)
    assert len(items) >= 20
    assert all(len(i.choices) >= 2 and 0 <= i.answer < len(i.choices) for i in items)


def test_bad_items_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}),
                "{not json",
                json.dumps({"question": "q", "choices": ["a"], "answer": 0}),
                "",
                json.dumps({"question": "q", "choices": ["a", "b"], "answer": 2}),
            ]
        )
    )
    with pytest.raises(UserError) as error:
        qa.load_items(path)
    text = str(error.value)
    assert "bad.jsonl:2" in text and "bad.jsonl:3" in text and "bad.jsonl:5" in text and "bad.jsonl:1" not in text
    with pytest.raises(UserError, match="not found"):
        qa.load_items(tmp_path / "missing.jsonl")


def test_join_adds_one_space():
    assert qa.join("The sky is", "blue") == " blue"
    assert qa.join("The sky is ", "blue") == "blue"
    assert qa.join("", "blue") == "blue"


def _manual_logprob(model, table, first):
    ids = torch.as_tensor(table.token_id)[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    targets = ids[0, first:]
    return float(logp[first - 1 : len(table) - 1].gather(1, targets[:, None]).sum())


def test_scores_match_single_sequence_definition(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    pairs = [("Max saw a big red", " ball"), ("The girl said,", " yes, you can!"), ("Once upon a", " time")]
    scorer = qa.ContinuationScorer(model, tokenizer, batch_size=2)
    got = scorer.score(pairs)
    for (context, continuation), scored in zip(pairs, got):
        table, first = scorer.table(context, continuation)
        context_only = surrogate.tables_for_texts(tokenizer, [context])[0]
        assert first == len(context_only)  # the continuation starts where the context's tokens end
        assert scored.n_tokens == len(table) - first >= 1
        assert scored.logprob == pytest.approx(_manual_logprob(model, table, first), rel=1e-5)
    assert [s.logprob for s in qa.ContinuationScorer(model, tokenizer, batch_size=1).score(pairs)] == pytest.approx(
        [s.logprob for s in got], rel=1e-5
    )


def test_empty_context_gets_a_prefix_token(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    scorer = qa.ContinuationScorer(model, tokenizer)
    table, first = scorer.table("", "Once upon a time")
    assert first == 1 and table.token_id[0] in (tokenizer.bos_token_id, tokenizer.eos_token_id)
    (scored,) = scorer.score([("", "Once upon a time")])
    assert scored.n_tokens == len(table) - 1


def test_accuracy_uses_mean_log_probability(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = qa.load_items(SAMPLE)[:6]
    scorer = qa.ContinuationScorer(model, tokenizer)
    means = [
        [s.mean_logprob for s in scorer.score([(i.question, qa.join(i.question, c)) for c in i.choices])] for i in items
    ]
    best = [int(np.argmax(m)) for m in means]
    worst = [int(np.argmin(m)) for m in means]
    right = [qa.QAItem(i.question, i.choices, b) for i, b in zip(items, best)]
    wrong = [qa.QAItem(i.question, i.choices, w) for i, w in zip(items, worst)]
    assert qa.evaluate_items(model, tokenizer, right).accuracy == 1.0
    assert qa.evaluate_items(model, tokenizer, wrong).accuracy == 0.0
    assert qa.evaluate_items(model, tokenizer, right).predictions == tuple(best)


def test_compare_with_and_without_replacement(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    items = qa.load_items(SAMPLE)[:5]
    results = qa.compare(model, tokenizer, items, [(0, 0, PREV), (1, 1, PREV)], progress=False)
    assert [r.label for r in results] == ["unmodified", "programs", "uniform"]
    assert all(r.n_items == 5 for r in results)
    pair = [(items[0].question, qa.join(items[0].question, items[0].choices[0]))]
    plain = qa.ContinuationScorer(model, tokenizer).score(pair)[0]
    replaced = qa.ContinuationScorer(model, tokenizer, Assignment.from_items([(0, 0, PREV)])).score(pair)[0]
    assert plain.logprob != pytest.approx(replaced.logprob, rel=1e-6)
    assert model.config._attn_implementation == "eager"
    assert "accuracy" in qa.format_results(results, 2)


def test_adapter_core_loglikelihood_and_generation():
    from attndsl.surrogates.lm_eval_adapter import SurrogateLMCore

    model, tokenizer = tiny.tiny_gpt2(), tiny.bpe_tokenizer()
    core = SurrogateLMCore(model, tokenizer, Assignment.from_items([(0, 0, PREV)]), batch_size=2)
    pairs = [("Max saw a big red", " ball"), ("Once upon a", " time")]
    out = core.loglikelihood(pairs)
    scored = qa.ContinuationScorer(model, tokenizer, Assignment.from_items([(0, 0, PREV)])).score(pairs)
    assert [o[0] for o in out] == pytest.approx([s.logprob for s in scored])
    assert all(isinstance(o[1], bool) for o in out)
    rolling = core.loglikelihood_rolling(["Once upon a time"])
    assert rolling[0] == pytest.approx(core.loglikelihood([("", "Once upon a time")])[0][0])
    texts = core.generate_until([("Once upon a", {"until": ["\n"], "max_gen_toks": 4})])
    assert isinstance(texts[0], str) and "\n" not in texts[0]


def test_lm_eval_subclass_when_installed():
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from attndsl.surrogates.lm_eval_adapter import make_lm

    model, tokenizer = tiny.tiny_gpt2(), tiny.bpe_tokenizer()
    lm = make_lm(model, tokenizer, Assignment.from_items([(0, 0, PREV)]), batch_size=2)
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=("Max saw a big red", " ball"), idx=0),
        Instance(request_type="loglikelihood", doc={}, arguments=("Once upon a", " time"), idx=1),
    ]
    out = lm.loglikelihood(requests)
    want = lm.core.loglikelihood([r.args for r in requests])
    assert out == want


def test_qa_command(tmp_path, capsys):
    from attndsl.cli import main
    from attndsl.extraction.extract import extract

    model_dir = tiny.save_tiny("gpt2", tmp_path / "model")
    run = tmp_path / "run"
    extract(run, model=str(model_dir), corpus="builtin", max_sequences=4, max_tokens=16, progress=False)
    assert main(["qa", str(run), "--data", str(SAMPLE), "--no-progress"]) == 2
    assert "attndsl synthesize" in capsys.readouterr().err
    (run / "library").mkdir()
    (run / "library" / "library.attn").write_text("program sink { 1 * [k == 0] }\n")
    (run / "library" / "best.csv").write_text("layer,head,program_name,synthesis_iou,heldout_iou\n0,1,sink,0.9,0.9\n1,0,sink,0.8,0.7\n")
    assert main(["qa", str(run), "--data", str(SAMPLE), "--fraction", "0.25", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "unmodified" in out and "programs" in out and "uniform" in out and "(2 heads replaced)" in out
    assert main(["qa", str(run), "--data", str(tmp_path / "missing.jsonl")]) == 2
